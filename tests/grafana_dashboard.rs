//! `packaging/grafana/signalbox-dashboard.json` is valid JSON, every panel has a title and at
//! least one query, panel ids are unique, and every metric its queries (and its `instance`
//! variable) name is one a running server really exports at `/metrics`: a server with the relay
//! and the SFU on, a signaling connection open, one refused and one rate-limited, so every
//! family has a sample.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Rtc, Server};
use serde_json::{json, Value};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/grafana/signalbox-dashboard.json"
);

/// Every `signalbox_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("signalbox_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The panels, with those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn the_dashboard_is_well_formed() {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["title"], "signalbox");
    assert!(dashboard["uid"].is_string());
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&dashboard) {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                !metric_names(expr).is_empty(),
                "{}: `{expr}` names no signalbox metric",
                p["title"]
            );
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

#[tokio::test]
async fn every_metric_the_dashboard_names_is_exported() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("read")).expect("JSON");
    let mut wanted = BTreeSet::new();
    for p in panels(&dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            wanted.extend(metric_names(t["expr"].as_str().unwrap_or("")));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        wanted.extend(metric_names(v["definition"].as_str().unwrap_or("")));
    }

    let s = Server::start_with(
        &[
            "--turn-listen",
            "127.0.0.1:0",
            "--relay-ports",
            "52700-52720",
            "--public-host",
            "127.0.0.1",
        ],
        &[
            ("SIGNALBOX_MAX_CONNECTIONS_PER_USER", "1"),
            ("SIGNALBOX_SOCKET_RATE_PER_SECOND", "1"),
            ("SIGNALBOX_SOCKET_RATE_BURST", "1"),
        ],
    );
    s.client("alice").call("bob").await;
    let mut alice = Rtc::connect(&s, "alice").await;
    // A second connection of alice is over the per-user cap.
    assert!(
        Rtc::connect_token(&s, &s.token("alice")).await.is_err(),
        "the second connection is refused"
    );
    // A burst over the rate: some pings are answered rate_limited.
    let mut limited = false;
    for _ in 0..5 {
        let answer = alice.request(json!({"type": "ping"})).await;
        limited |= answer["code"] == "rate_limited";
    }
    assert!(
        limited,
        "a burst of pings over a burst of 1 is rate-limited"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = s.metrics().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard names metrics the server does not export: {missing:?}\n/metrics:\n{text}"
    );
    assert!(wanted.len() >= 20, "{wanted:?}");
}
