//! The embedded relay inside `signalbox serve`: credentials from `/ice-config` work with an
//! independent TURN client (coturn's `turnutils_uclient`), relayed traffic shows up in the
//! call's analytics and in `/metrics`, and loopback peers are refused unless allowed.

mod common;

use std::time::Duration;

use common::turnutils::{uclient, uclient_at, Peer};
use common::{eventually, metric, Server};
use serde_json::Value;

fn turn_port(ice: &Value) -> u16 {
    let uri = ice["uris"][0].as_str().expect("a turn uri");
    assert!(
        uri.starts_with("turn:127.0.0.1:") && uri.ends_with("?transport=udp"),
        "{uri}"
    );
    uri.trim_start_matches("turn:127.0.0.1:")
        .trim_end_matches("?transport=udp")
        .parse()
        .expect("port")
}

fn relay_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--turn-listen",
        "127.0.0.1:0",
        "--relay-ports",
        "51000-51200",
        "--public-host",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    Server::start_with(&args, &[])
}

#[tokio::test]
async fn ice_config_credentials_relay_and_usage_reaches_analytics_and_metrics() {
    let s = relay_server(&["--turn-allow-peer", "127.0.0.0/8"]);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);

    let ice = alice.get("/ice-config").await.expect(200);
    let port = turn_port(&ice);
    assert_eq!(
        ice["iceServers"][0]["urls"][0],
        format!("stun:127.0.0.1:{port}")
    );
    let (username, password) = (
        ice["username"].as_str().expect("u"),
        ice["password"].as_str().expect("p"),
    );
    let peer = Peer::start();
    let (sent, received, text) = uclient(port, peer.port, username, password, 50).await;
    assert!(
        sent >= 50 && received == sent,
        "relay lost packets: sent {sent}, received {received}\n{text}"
    );

    // The allocation's usage lands in the call's analytics (alice is a participant).
    let relay = eventually("relay usage in analytics", Duration::from_secs(20), || {
        let alice = alice.clone();
        let id = id.clone();
        async move {
            let a = alice
                .get(&format!("/calls/{id}/analytics"))
                .await
                .expect(200);
            let r = a["analytics"]["relay"].clone();
            (r["allocations"].as_u64() >= Some(1) && r["bytesToPeer"].as_u64() > Some(0))
                .then_some(r)
        }
    })
    .await;
    assert!(relay["bytesFromPeer"].as_u64() > Some(0), "{relay}");
    assert_eq!(relay["sessions"][0]["userId"], "alice");
    assert_eq!(relay["sessions"][0]["transport"], "udp");

    let metrics = s.metrics().await;
    let created = metric(&metrics, "signalbox_turn_allocations_created_total");
    assert!(created >= Some(1), "{metrics}");
    assert!(metrics.contains("signalbox_turn_bytes_to_peer_total"));

    // A wrong password relays nothing and counts as an auth failure.
    let (_, received, _) = uclient(port, peer.port, username, "wrong-password", 5).await;
    assert_eq!(received, 0);
    let metrics = s.metrics().await;
    let failures = metric(&metrics, "signalbox_turn_auth_failures_total");
    assert!(failures >= Some(1), "{metrics}");
}

#[tokio::test]
async fn loopback_peers_are_refused_by_default() {
    let s = relay_server(&[]);
    let ice = s.client("alice").get("/ice-config").await.expect(200);
    let port = turn_port(&ice);
    let peer = Peer::start();
    let (_, received, _) = uclient(
        port,
        peer.port,
        ice["username"].as_str().expect("u"),
        ice["password"].as_str().expect("p"),
        10,
    )
    .await;
    assert_eq!(
        received, 0,
        "a loopback peer was reachable without --turn-allow-peer"
    );
    let metrics = s.metrics().await;
    let denied = metric(&metrics, "signalbox_turn_denied_peers_total");
    assert!(denied >= Some(1), "{metrics}");
}

/// The port of the first `turn:HOST:PORT?transport=udp` URI, checking the host.
fn turn_port_on(ice: &Value, host: &str) -> u16 {
    let uri = ice["uris"][0].as_str().expect("a TURN URI");
    let prefix = format!("turn:{host}:");
    assert!(
        uri.starts_with(&prefix) && uri.ends_with("?transport=udp"),
        "{uri} names {host}"
    );
    uri[prefix.len()..]
        .trim_end_matches("?transport=udp")
        .parse()
        .expect("port")
}

#[tokio::test]
async fn over_ipv6_rest_rtc_and_ice_config_answer_and_the_relay_reaches_an_ipv6_peer() {
    let s = Server::start_with(
        &[
            "--listen",
            "[::1]:0",
            "--turn-listen",
            "127.0.0.1:0,[::1]:0",
            "--relay-ports",
            "51300-51400",
            "--turn-allow-peer",
            "::1/128",
        ],
        &[],
    );
    assert!(s.addr.is_ipv6(), "HTTP on [::1]: {}", s.addr);
    // REST and /rtc over IPv6.
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.get(&format!("/calls/{id}")).await.expect(200);
    let rtc = common::Rtc::connect(&s, "bob").await;
    assert!(!rtc.welcome.is_null(), "a welcome over IPv6");
    drop(rtc);

    // /ice-config names the host the client used, with the IPv6 listener's port.
    let ice = alice.get("/ice-config").await.expect(200);
    let port = turn_port_on(&ice, "[::1]");
    assert_eq!(
        ice["iceServers"][0]["urls"][0],
        format!("stun:[::1]:{port}")
    );
    let (username, password) = (
        ice["username"].as_str().expect("u"),
        ice["password"].as_str().expect("p"),
    );
    let peer = Peer::start_on("::1");
    let (sent, received, text) = uclient_at(
        "::1",
        port,
        "::1",
        peer.port,
        &["-x"],
        username,
        password,
        50,
    )
    .await;
    assert!(
        sent >= 50 && received == sent,
        "relay over IPv6 lost packets: sent {sent}, received {received}\n{text}"
    );
}
