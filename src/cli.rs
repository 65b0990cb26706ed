//! The command line: clap definitions and how each flag feeds the configuration layers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Layers};

/// Self-hosted video calls in one binary: signaling, REST API, STUN/TURN relay and web client.
#[derive(Debug, Parser)]
#[command(name = "signalbox", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Flags of `serve`, also accepted with no subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Print a signed bearer token (JWT) for a user.
    Token(TokenArgs),
    /// Manage built-in accounts (for POST /api/auth/login).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        common: UserCommonArgs,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// Flags every subcommand that reads the configuration shares.
#[derive(Debug, Args, Default, Clone)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "SIGNALBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the database and generated secrets [default: ./signalbox-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

/// `--config`/`--data-dir` for `signalbox user …`, accepted before or after the action.
#[derive(Debug, Args, Default, Clone)]
pub struct UserCommonArgs {
    /// TOML configuration file.
    #[arg(long, global = true, env = "SIGNALBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the database and generated secrets [default: ./signalbox-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,
}

impl UserCommonArgs {
    pub fn layers(&self) -> Result<Layers, ConfigError> {
        CommonArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
        }
        .layers()
    }
}

#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// HTTP, WebSocket and Socket.IO listen address [default: [::]:8080, dual-stack].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Host name or IP put in STUN/TURN URIs and links.
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,
    /// PostgreSQL for lasting state (postgres://user:password@host/db) instead of SQLite.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis for cluster mode (redis://host:6379): several nodes share calls.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// This node's name in a cluster [default: random].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// STUN/TURN listen addresses for UDP and TCP, one per family [default: [::]:3478, both].
    #[arg(long, value_name = "ADDR")]
    pub turn_listen: Option<String>,
    /// TURN over TLS listen addresses, one per family [default: [::]:5349, both].
    #[arg(long, value_name = "ADDR")]
    pub turn_tls_listen: Option<String>,
    /// PEM certificate: serve HTTPS and TURN over TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Obtain a certificate for this domain by ACME (repeatable; not with --tls-cert).
    #[arg(long, value_name = "DOMAIN")]
    pub acme_domain: Vec<String>,
    /// Contact e-mail of the ACME account.
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL [default: Let's Encrypt production].
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// PEM CAs to trust for the ACME server's HTTPS (a private ACME server).
    #[arg(long, value_name = "FILE")]
    pub acme_ca_file: Option<String>,
    /// Plain HTTP address answering HTTP-01 challenges, e.g. [::]:80 (else TLS-ALPN-01).
    #[arg(long, value_name = "ADDR")]
    pub acme_http_listen: Option<String>,
    /// UDP port range for relay sockets [default: 49152-65535].
    #[arg(long, value_name = "MIN-MAX")]
    pub relay_ports: Option<String>,
    /// Let the relay reach this private or loopback CIDR (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub turn_allow_peer: Vec<String>,
    /// Do not run the embedded STUN/TURN relay.
    #[arg(long)]
    pub no_turn: bool,
    /// SFU media listen address (UDP, and TCP for ICE-TCP) [default: [::]:3479, dual-stack].
    #[arg(long, value_name = "ADDR")]
    pub sfu_listen: Option<String>,
    /// Public IP the SFU advertises when the server is behind NAT.
    #[arg(long, value_name = "IP")]
    pub sfu_external_ip: Option<String>,
    /// Do not run the embedded SFU: rooms stay peer-to-peer.
    #[arg(long)]
    pub no_sfu: bool,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// POST every call and room event to this URL (repeatable; needs webhook_secret, which has
    /// no flag so that it stays out of the process list).
    #[arg(long, value_name = "URL")]
    pub webhook_url: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The user id the token speaks for (JWT `sub`).
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// Display name (JWT `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. 30m, 24h, 7d [default: token_ttl].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Grant admin rights: see and act on every call and room.
    #[arg(long)]
    pub admin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add an account; the password is read from the terminal or, with --password-stdin, stdin.
    Add {
        username: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Remove an account.
    Remove { username: String },
    /// Change an account's password.
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration and print the effective values (secrets masked).
    Check {
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
    /// Print a commented configuration file with every key and its default.
    Template,
}

impl CommonArgs {
    /// Builds the layers up to and including the environment, plus the shared flags.
    pub fn layers(&self) -> Result<Layers, ConfigError> {
        let mut layers = Layers::default();
        if let Some(path) = &self.config {
            layers.apply_file(path)?;
        }
        layers.apply_env(std::env::vars());
        if let Some(dir) = &self.data_dir {
            layers.apply_flag("data_dir", "data-dir", dir.clone());
        }
        Ok(layers)
    }
}

impl ServeArgs {
    /// All layers: defaults, file, environment, then these flags.
    pub fn layers(&self) -> Result<Layers, ConfigError> {
        let mut layers = self.common.layers()?;
        let scalars = [
            ("listen", "listen", &self.listen),
            ("public_host", "public-host", &self.public_host),
            ("database_url", "database-url", &self.database_url),
            ("redis_url", "redis-url", &self.redis_url),
            ("node_name", "node-name", &self.node_name),
            ("turn_listen", "turn-listen", &self.turn_listen),
            ("turn_tls_listen", "turn-tls-listen", &self.turn_tls_listen),
            ("tls_cert", "tls-cert", &self.tls_cert),
            ("tls_key", "tls-key", &self.tls_key),
            ("acme_email", "acme-email", &self.acme_email),
            ("acme_directory", "acme-directory", &self.acme_directory),
            ("acme_ca_file", "acme-ca-file", &self.acme_ca_file),
            (
                "acme_http_listen",
                "acme-http-listen",
                &self.acme_http_listen,
            ),
            ("relay_ports", "relay-ports", &self.relay_ports),
            ("log_format", "log-format", &self.log_format),
            ("sfu_listen", "sfu-listen", &self.sfu_listen),
            ("sfu_external_ip", "sfu-external-ip", &self.sfu_external_ip),
        ];
        for (key, flag, value) in scalars {
            if let Some(v) = value {
                layers.apply_flag(key, flag, v.clone());
            }
        }
        if !self.turn_allow_peer.is_empty() {
            layers.apply_flag_list(
                "turn_allow_peer",
                "turn-allow-peer",
                self.turn_allow_peer.clone(),
            );
        }
        if !self.acme_domain.is_empty() {
            layers.apply_flag_list("acme_domains", "acme-domain", self.acme_domain.clone());
        }
        if !self.webhook_url.is_empty() {
            layers.apply_flag_list("webhook_urls", "webhook-url", self.webhook_url.clone());
        }
        if self.no_turn {
            layers.apply_flag("no_turn", "no-turn", "true".into());
        }
        if self.no_sfu {
            layers.apply_flag("no_sfu", "no-sfu", "true".into());
        }
        Ok(layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_and_flags_parse() {
        let cli = Cli::try_parse_from([
            "signalbox",
            "--listen",
            "127.0.0.1:0",
            "--turn-allow-peer",
            "127.0.0.0/8",
            "--turn-allow-peer",
            "10.0.0.0/8",
            "--no-turn",
        ])
        .expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(cli.serve.turn_allow_peer.len(), 2);
        assert!(cli.serve.no_turn);
    }

    #[test]
    fn token_requires_a_user() {
        assert!(Cli::try_parse_from(["signalbox", "token"]).is_err());
        let cli = Cli::try_parse_from([
            "signalbox",
            "token",
            "--user",
            "alice",
            "--ttl",
            "1h",
            "--admin",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Token(TokenArgs { admin: true, .. }))
        ));
    }
}
