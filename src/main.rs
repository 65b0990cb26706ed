//! The `signalbox` binary: parses the command line and runs the chosen command. Exit codes:
//! 0 ok, 2 bad usage or configuration (the message names the key), 1 runtime failure.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use signalbox::cli::{Cli, Command, ConfigAction, ServeArgs, TokenArgs, UserAction};
use signalbox::config::{self, Config, ConfigError, Layers};
use signalbox::{auth, clock, error, secrets, server, store};

/// jemalloc rather than glibc's malloc: after a load, glibc keeps the freed memory of its per-thread
/// arenas (the soak's 5,000 connections left RSS at 85 MiB with 26 MiB in use), while jemalloc's
/// background thread gives it back to the OS within seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A failure and the exit code it maps to.
enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Token(args)) => token(&args),
        Some(Command::User { action, common }) => {
            let layers = common.layers();
            layers.map_err(Failure::from).and_then(|l| user(action, l))
        }
        Some(Command::Config {
            action: ConfigAction::Check { serve },
        }) => config_check(&serve),
        Some(Command::Config {
            action: ConfigAction::Template,
        }) => {
            print!("{}", config::template());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("signalbox: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("signalbox: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(layers: &Layers) -> Result<Config, Failure> {
    for w in &layers.warnings {
        eprintln!("signalbox: warning: {w}");
    }
    Ok(Config::from_layers(layers)?)
}

fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let config = load(&args.layers()?)?;
    signalbox::logging::init(&config);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // SIGHUP reads the same layers again: the config file, the environment, these flags.
    let args = args.clone();
    let reload = move || {
        let layers = args.layers().map_err(|e| e.to_string())?;
        for w in &layers.warnings {
            tracing::warn!("config reload: {w}");
        }
        Config::from_layers(&layers).map_err(|e| e.to_string())
    };
    runtime.block_on(server::run(config, Box::new(reload)))?;
    Ok(())
}

fn token(args: &TokenArgs) -> Result<(), Failure> {
    let config = load(&args.common.layers()?)?;
    auth::validate_user_id(&args.user).map_err(|m| Failure::Usage(format!("--user: {m}")))?;
    let ttl = match &args.ttl {
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            Failure::Usage(format!(
                "--ttl: `{t}` is not a duration like 30m or 24h ({e})"
            ))
        })?,
        None => config.token_ttl,
    };
    let secrets = secrets::resolve(
        &config.data_dir,
        config.jwt_secret.as_deref(),
        &config.turn.secrets,
    )
    .with_context(|| format!("reading secrets in {}", config.data_dir.display()))?;
    let principal = auth::Principal {
        id: args.user.clone(),
        name: args.name.clone(),
        admin: args.admin,
    };
    let now = clock::now_ms() / 1000;
    let token = auth::Tokens::new(&secrets.jwt)
        .mint(
            &principal,
            now,
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{token}");
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again =
            rpassword::prompt_password("Repeat password: ").context("reading the password")?;
        if first != again {
            return Err(Failure::Usage("the passwords do not match".into()));
        }
        first
    };
    if password.chars().count() < 8 {
        return Err(Failure::Usage(
            "the password must be at least 8 characters".into(),
        ));
    }
    Ok(password)
}

fn user(action: UserAction, layers: Layers) -> Result<(), Failure> {
    let config = load(&layers)?;
    secrets::ensure_data_dir(&config.data_dir).context("creating the data directory")?;
    // The store's methods are async; one command needs no more than a current-thread runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let store = runtime
        .block_on(store::Store::from_config(&config))
        .map_err(|e| anyhow::anyhow!("opening the database: {e:?}"))?;
    let db = |e: error::Error| match e {
        error::Error::Internal(m) | error::Error::Unavailable(m) => {
            Failure::Runtime(anyhow::anyhow!(m))
        }
        other => Failure::Usage(other.to_string()),
    };
    match action {
        UserAction::Add {
            username,
            name,
            admin,
            password_stdin,
        } => {
            auth::validate_user_id(&username)
                .map_err(|m| Failure::Usage(format!("username: {m}")))?;
            let hash = auth::hash_password(&read_password(password_stdin)?).map_err(db)?;
            let user = store::users::User {
                id: username.clone(),
                name,
                admin,
                created_at: clock::now_ms(),
            };
            runtime.block_on(store.add_user(user, hash)).map_err(db)?;
            println!(
                "added user {username}{}",
                if admin { " (admin)" } else { "" }
            );
        }
        UserAction::List => {
            let users = runtime.block_on(store.users()).map_err(db)?;
            for u in users {
                println!(
                    "{}\t{}\t{}\t{}",
                    u.id,
                    u.name.as_deref().unwrap_or("-"),
                    if u.admin { "admin" } else { "user" },
                    clock::rfc3339(u.created_at)
                );
            }
        }
        UserAction::Remove { username } => {
            runtime.block_on(store.remove_user(&username)).map_err(db)?;
            println!("removed user {username}");
        }
        UserAction::Passwd {
            username,
            password_stdin,
        } => {
            let hash = auth::hash_password(&read_password(password_stdin)?).map_err(db)?;
            runtime
                .block_on(store.set_password(&username, hash))
                .map_err(db)?;
            println!("changed the password of {username}");
        }
    }
    Ok(())
}

fn config_check(args: &ServeArgs) -> Result<(), Failure> {
    let layers = args.layers()?;
    let config = load(&layers)?;
    if let Some(tls) = &config.tls {
        for (key, path) in [("tls_cert", &tls.cert), ("tls_key", &tls.key)] {
            std::fs::metadata(path).map_err(|e| {
                Failure::Usage(format!("config key `{key}`: {}: {e}", path.display()))
            })?;
        }
    }
    if let Some(ca_file) = config.acme.as_ref().and_then(|a| a.ca_file.as_ref()) {
        std::fs::metadata(ca_file).map_err(|e| {
            Failure::Usage(format!(
                "config key `acme_ca_file`: {}: {e}",
                ca_file.display()
            ))
        })?;
    }
    for line in layers.describe() {
        println!("{line}");
    }
    println!("# configuration is valid");
    Ok(())
}
