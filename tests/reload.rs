//! SIGHUP reloads the configuration file while connections stay open: CORS origins, signaling
//! limits and the TURN secret (rotation) change live; a file that does not parse changes
//! nothing.

mod common;

use std::time::Duration;

use common::{eventually, Rtc, Server};
use serde_json::json;

const FIRST_SECRET: &str = "the-first-turn-secret";
const SECOND_SECRET: &str = "the-second-turn-secret";
/// A receiver nobody listens on: deliveries to it stay pending, which is enough to see them.
const HOOK: &str = "http://127.0.0.1:9/hooks";

fn write_config(path: &std::path::Path, body: &str) {
    std::fs::write(path, body).expect("write the config file");
}

async fn allows_origin(s: &Server, origin: &str) -> bool {
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/calls", s.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    r.headers()
        .get("access-control-allow-origin")
        .is_some_and(|v| v.as_bytes() == origin.as_bytes())
}

/// The TURN secret `/ice-config`'s password is signed with, of those given.
async fn signing_secret(s: &Server, candidates: &[&'static str]) -> Option<&'static str> {
    let ice = s.client("alice").get("/ice-config").await.expect(200);
    let username = ice["username"].as_str().expect("username");
    let password = ice["password"].as_str().expect("password");
    candidates.iter().copied().find(|secret| {
        signalbox_turn::credentials::password_for(secret.as_bytes(), username) == password
    })
}

#[tokio::test]
async fn sighup_applies_the_edited_file_and_open_connections_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("signalbox.toml");
    let base = "turn_listen = \"127.0.0.1:0\"\nrelay_ports = \"51500-51600\"\nsfu_listen = \"127.0.0.1:0\"\n";
    write_config(
        &file,
        &format!("{base}max_connections_per_user = 5\nturn_secret = [\"{FIRST_SECRET}\"]\n"),
    );
    let s = Server::start_with(&["--config", file.to_str().expect("path")], &[]);
    assert!(!allows_origin(&s, "https://app.example").await);
    assert_eq!(
        signing_secret(&s, &[FIRST_SECRET, SECOND_SECRET]).await,
        Some(FIRST_SECRET)
    );
    let mut open = Rtc::connect(&s, "alice").await;
    let _second = Rtc::connect(&s, "alice").await;

    write_config(
        &file,
        &format!(
            "{base}max_connections_per_user = 2\ncors_origins = [\"https://app.example\"]\n\
             turn_secret = [\"{SECOND_SECRET}\", \"{FIRST_SECRET}\"]\nring_timeout = \"10s\"\n\
             webhook_urls = [\"{HOOK}\"]\nwebhook_secret = \"a-webhook-secret-0123\"\n"
        ),
    );
    s.signal("HUP");
    eventually(
        "the reloaded CORS origin",
        Duration::from_secs(10),
        || async { allows_origin(&s, "https://app.example").await.then_some(()) },
    )
    .await;
    assert_eq!(
        signing_secret(&s, &[FIRST_SECRET, SECOND_SECRET]).await,
        Some(SECOND_SECRET),
        "the first of the rotated secrets signs"
    );
    // Two connections open, the new cap is two: a third is refused.
    let third = Rtc::connect_token(&s, &s.token("alice")).await;
    assert!(
        third.is_err(),
        "a third connection over the reloaded cap of 2"
    );
    // The connection opened before the reload still works.
    let pong = open.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");

    // Webhooks, off at the start, are on: an accepted call queues call.started for the URL.
    let id = s.client("alice").call("bob").await;
    s.client("bob")
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    let deliveries = s
        .admin()
        .get("/api/admin/webhooks/deliveries")
        .await
        .expect(200);
    let queued = deliveries["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .any(|d| d["url"] == HOOK && d["event"] == "call.started");
    assert!(
        queued,
        "call.started queued for the reloaded URL: {deliveries}"
    );

    // A file with a bad value: refused as a whole, the settings in force stay (its valid new
    // origin included). Nothing observable changes, so this waits a fixed half second for the
    // signal to be handled.
    write_config(
        &file,
        "max_connections_per_user = \"many\"\ncors_origins = [\"https://other.example\"]\n",
    );
    s.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !allows_origin(&s, "https://other.example").await,
        "nothing of the refused file"
    );
    assert!(
        allows_origin(&s, "https://app.example").await,
        "still the reloaded origins"
    );
    let pong = open.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    s.client("alice").get("/healthz").await.expect(200);
}
