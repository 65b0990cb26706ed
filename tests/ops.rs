//! Operations endpoints and cross-cutting layers: health, metrics, OpenAPI completeness, CORS.

mod common;

use common::Server;
use serde_json::{json, Value};

/// Every route of both seeds, DESIGN.md and the admin API, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/calls"),
    ("put", "/calls/{callId}/accept"),
    ("put", "/calls/{callId}/reject"),
    ("put", "/calls/{callId}/hangup"),
    ("put", "/calls/{callId}/mute-audio"),
    ("put", "/calls/{callId}/mute-video"),
    ("put", "/calls/{callId}/switch-camera"),
    ("get", "/calls/{callId}"),
    ("get", "/calls/history"),
    ("get", "/calls/{callId}/analytics"),
    ("post", "/calls/{callId}/stats"),
    ("post", "/rooms"),
    ("get", "/rooms/{roomId}"),
    ("post", "/rooms/{roomId}/join"),
    ("post", "/rooms/{roomId}/leave"),
    ("delete", "/rooms/{roomId}"),
    ("get", "/ice-config"),
    ("post", "/api/video/calls"),
    ("post", "/api/video/calls/{callId}/join"),
    ("post", "/api/video/calls/{callId}/end"),
    ("get", "/api/video/calls/{callId}"),
    ("post", "/api/auth/login"),
    ("get", "/api/me"),
    ("get", "/api/admin/webhooks/deliveries"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/rtc"),
    ("get", "/api/admin/live"),
    ("get", "/api/admin/users"),
    ("post", "/api/admin/users"),
    ("delete", "/api/admin/users/{userId}"),
    ("post", "/api/admin/users/{userId}/password"),
    ("get", "/api/admin/calls/{callId}/quality"),
];

#[tokio::test]
async fn openapi_describes_every_route_and_every_described_route_exists() {
    let s = Server::start();
    let doc = s.anonymous().get("/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "routes documented but not listed in this test"
    );

    // Every documented route is really served (not the 404 fallback).
    let admin = s.admin();
    let uuid = "00000000-0000-4000-8000-000000000000";
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{callId}", uuid)
            .replace("{roomId}", uuid)
            .replace("{userId}", "nobody");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let r = admin.send(m, &concrete, Some(json!({}))).await;
        assert_ne!(
            r.body["error"]["message"], "route not found",
            "{method} {path} is not routed"
        );
        assert_ne!(r.status.as_u16(), 405, "{method} {path} is not routed");
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let s = Server::start();
    assert_eq!(
        s.anonymous().get("/healthz").await.expect(200)["status"],
        "ok"
    );
    let alice = s.client("alice");
    let id = alice.call("bob").await;
    s.client("bob")
        .put_empty(&format!("/calls/{id}/reject"))
        .await
        .expect(200);
    alice.call("bob").await;

    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("signalbox_calls{status=\"ringing\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("signalbox_calls{status=\"rejected\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("signalbox_calls{status=\"active\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "signalbox_http_requests_total{method=\"POST\",route=\"/calls\",status=\"201\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("signalbox_db_operation_seconds_count"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let s = Server::start_with(
        &["--no-turn"],
        &[("SIGNALBOX_CORS_ORIGINS", "https://app.example.com")],
    );
    let preflight = |origin: &'static str| {
        let http = s.http.clone();
        let url = format!("{}/calls", s.base);
        async move {
            http.request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
                .await
                .expect("preflight")
        }
    };
    let ok = preflight("https://app.example.com").await;
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"https://app.example.com"[..])
    );
    let bad = preflight("https://evil.example").await;
    assert!(bad.headers().get("access-control-allow-origin").is_none());

    // By default no origin is allowed beyond same-origin.
    let plain = Server::start();
    let r = plain
        .http
        .get(format!("{}/healthz", plain.base))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("get");
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn ice_config_hands_out_working_rest_credentials() {
    let s = Server::start_with(
        &[
            "--public-host",
            "calls.example.com",
            "--turn-listen",
            "127.0.0.1:3479",
        ],
        &[],
    );
    // The relay may not be running yet in this test: /ice-config is computed from the secret.
    let v: Value = s.client("alice").get("/ice-config").await.expect(200);
    assert_eq!(
        v["iceServers"][0]["urls"],
        json!(["stun:calls.example.com:3479"])
    );
    let turn = &v["iceServers"][1];
    assert_eq!(turn["urls"][0], "turn:calls.example.com:3479?transport=udp");
    assert_eq!(turn["urls"][1], "turn:calls.example.com:3479?transport=tcp");
    let username = turn["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, "alice");
    let expiry: i64 = expiry.parse().expect("unix time");
    let now = signalbox::clock::now_ms() / 1000;
    assert!(
        (expiry - now - 6 * 3600).abs() < 60,
        "ttl is 6 h by default"
    );
    let secret = std::fs::read_to_string(s.data_dir.join("turn-secret")).expect("turn secret");
    assert_eq!(
        turn["credential"],
        signalbox_turn::credentials::password_for(secret.trim().as_bytes(), username)
    );
    assert_eq!(v["username"], username);
    assert_eq!(v["password"], turn["credential"]);
    assert_eq!(v["ttl"], 21600);
    assert_eq!(v["uris"], turn["urls"]);
    assert!(v["expiresAt"].is_string());
}
