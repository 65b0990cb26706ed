//! The command line: version, config check (exit 2 naming the key), tokens, built-in accounts
//! and login with its per-client rate limit.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{output_within, Server, BIN};
use serde_json::json;

/// Runs the CLI to completion (killed, and the test failed, after 60 s).
fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("SIGNALBOX_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    // A few bytes: they fit the pipe buffer, so this write cannot block on the child.
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    output_within(
        child,
        Duration::from_secs(60),
        &format!("`signalbox {}`", args.join(" ")),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], &[], None);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("signalbox {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["--help"], &[], None);
    for word in ["serve", "token", "user", "config"] {
        assert!(text(&out.stdout).contains(word), "help lacks {word}");
    }
    let out = run(&["frobnicate"], &[], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_prints_effective_values_and_names_bad_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("signalbox.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nring_timeout = \"30s\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\nlisen = 1\n").expect("write");
    let f = file.to_str().expect("path");
    let out = run(
        &[
            "config",
            "check",
            "--config",
            f,
            "--relay-ports",
            "50000-50100",
        ],
        &[("SIGNALBOX_TOKEN_TTL", "1h"), ("SIGNALBOX_BOGUS", "1")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("listen = \"127.0.0.1:9999\"  # file"),
        "{stdout}"
    );
    assert!(
        stdout.contains("relay_ports = \"50000-50100\"  # flag --relay-ports"),
        "{stdout}"
    );
    assert!(
        stdout.contains("token_ttl = \"1h\"  # environment SIGNALBOX_TOKEN_TTL"),
        "{stdout}"
    );
    assert!(stdout.contains("jwt_secret = \"********\""), "{stdout}");
    assert!(!stdout.contains("0123456789abcdef"), "secret leaked");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("lisen") && stderr.contains("SIGNALBOX_BOGUS"),
        "{stderr}"
    );

    for (args, env, key) in [
        (
            vec!["config", "check", "--listen", "nowhere"],
            vec![],
            "listen",
        ),
        (
            vec!["config", "check"],
            vec![("SIGNALBOX_RING_TIMEOUT", "forever")],
            "ring_timeout",
        ),
        (
            vec!["config", "check", "--turn-allow-peer", "10.0.0.0/99"],
            vec![],
            "turn_allow_peer",
        ),
        (
            vec!["config", "check", "--log-format", "xml"],
            vec![],
            "log_format",
        ),
        (
            vec![
                "config",
                "check",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            vec![],
            "tls_cert",
        ),
        (
            vec!["serve", "--relay-ports", "70000-80000"],
            vec![],
            "relay_ports",
        ),
    ] {
        let out = run(&args, &env, None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(key),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(
        &["config", "check", "--config", "/nonexistent.toml"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_template_lists_every_key() {
    let out = run(&["config", "template"], &[], None);
    assert!(out.status.success());
    let t = text(&out.stdout);
    for key in signalbox::config::KEYS {
        assert!(t.contains(&format!("#{} = ", key.name)), "{}", key.name);
    }
}

#[tokio::test]
async fn token_command_mints_tokens_the_server_accepts() {
    let s = Server::start();
    let dir = s.data_dir.to_str().expect("path");
    let out = run(
        &[
            "token",
            "--data-dir",
            dir,
            "--user",
            "alice",
            "--name",
            "Alice",
            "--ttl",
            "10m",
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let me = s
        .anonymous()
        .with_token(&token)
        .get("/api/me")
        .await
        .expect(200);
    assert_eq!(
        me["user"],
        json!({"id": "alice", "name": "Alice", "admin": false})
    );

    let out = run(
        &["token", "--data-dir", dir, "--user", "root", "--admin"],
        &[],
        None,
    );
    let admin = text(&out.stdout).trim().to_string();
    assert_eq!(
        s.anonymous()
            .with_token(&admin)
            .get("/api/me")
            .await
            .expect(200)["user"]["admin"],
        true
    );

    assert_eq!(
        run(&["token", "--data-dir", dir, "--user", "bad id"], &[], None)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(
            &["token", "--data-dir", dir, "--user", "a", "--ttl", "soon"],
            &[],
            None
        )
        .status
        .code(),
        Some(2)
    );
}

#[tokio::test]
async fn accounts_log_in_and_logins_are_rate_limited() {
    let s = Server::start_with(&["--no-turn"], &[("SIGNALBOX_LOGIN_RATE_PER_MINUTE", "4")]);
    let dir = s.data_dir.to_str().expect("path");
    let out = run(
        &[
            "user",
            "add",
            "carol",
            "--name",
            "Carol",
            "--password-stdin",
            "--data-dir",
            dir,
        ],
        &[],
        Some("correct horse\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &[
            "user",
            "--data-dir",
            dir,
            "add",
            "carol",
            "--password-stdin",
        ],
        &[],
        Some("another pw\n"),
    );
    assert_eq!(out.status.code(), Some(2), "duplicate user");
    let out = run(
        &["user", "--data-dir", dir, "add", "dave", "--password-stdin"],
        &[],
        Some("short\n"),
    );
    assert_eq!(out.status.code(), Some(2), "short password");
    let out = run(&["user", "--data-dir", dir, "list"], &[], None);
    assert!(
        text(&out.stdout).starts_with("carol\tCarol\tuser\t"),
        "{}",
        text(&out.stdout)
    );

    let anon = s.anonymous();
    let ok = anon
        .post(
            "/api/auth/login",
            json!({"username": "carol", "password": "correct horse"}),
        )
        .await
        .expect(200);
    assert_eq!(ok["user"]["id"], "carol");
    let token = ok["token"].as_str().expect("token");
    assert_eq!(
        anon.with_token(token).get("/api/me").await.expect(200)["user"]["name"],
        "Carol"
    );
    anon.post(
        "/api/auth/login",
        json!({"username": "carol", "password": "wrong horse"}),
    )
    .await
    .expect_error(401, "invalid_credentials");
    anon.post(
        "/api/auth/login",
        json!({"username": "nobody", "password": "whatever1"}),
    )
    .await
    .expect_error(401, "invalid_credentials");
    anon.post("/api/auth/login", json!({"username": "carol"}))
        .await
        .expect_error(400, "invalid_field");
    // Four attempts per minute were allowed (the 400 above never reached the limiter): now 429.
    let r = anon
        .post(
            "/api/auth/login",
            json!({"username": "carol", "password": "correct horse"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let r = anon
        .post(
            "/api/auth/login",
            json!({"username": "carol", "password": "correct horse"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 429, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "rate_limited");
    assert!(r.headers.get("retry-after").is_some());
    // Behind a trusted reverse proxy (loopback by default) each forwarded client has its own
    // budget: another client is not locked out by this one.
    let other = s
        .http
        .post(format!("{}/api/auth/login", s.base))
        .header("x-forwarded-for", "198.51.100.9")
        .json(&json!({"username": "carol", "password": "correct horse"}))
        .send()
        .await
        .expect("login");
    assert_eq!(other.status().as_u16(), 200);

    let out = run(
        &[
            "user",
            "--data-dir",
            dir,
            "passwd",
            "carol",
            "--password-stdin",
        ],
        &[],
        Some("new password\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["user", "remove", "carol", "--data-dir", dir], &[], None);
    assert!(out.status.success());
    let out = run(&["user", "remove", "carol", "--data-dir", dir], &[], None);
    assert_eq!(out.status.code(), Some(2));
}
