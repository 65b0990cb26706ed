//! `--tls-cert`/`--tls-key`: the HTTP listener speaks HTTPS (REST and the `/rtc` WebSocket over
//! TLS), TURN also listens for TLS, and `/ice-config` lists the `turns:` URI.

mod common;

use std::sync::Arc;

use std::time::Duration;

use common::{within, Server};
use futures_util::StreamExt;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn connector(der: Vec<u8>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der)).expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One HTTPS request (all of it within 20 s); returns the status and the JSON body.
async fn https_get(s: &Server, tls: &TlsConnector, path: &str, token: &str) -> (u16, Value) {
    let buf = within(
        format!("GET {path} over TLS"),
        Duration::from_secs(20),
        async {
            let tcp = TcpStream::connect(s.addr).await.expect("connect");
            let mut stream = tls
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("TLS handshake");
            let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await.expect("write");
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf).await;
            buf
        },
    )
    .await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON object is between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

#[tokio::test]
async fn serves_https_wss_and_turns() {
    let dir = tempfile::tempdir().expect("tmp");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let der = certified.cert.der().to_vec();
    let s = Server::start_with(
        &[
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-tls-listen",
            "127.0.0.1:0",
            "--public-host",
            "localhost",
        ],
        &[],
    );
    let tls = connector(der);
    let token = s.token("alice");
    let (status, body) = https_get(&s, &tls, "/healthz", &token).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, ice) = https_get(&s, &tls, "/ice-config", &token).await;
    assert_eq!(status, 200);
    let uris: Vec<&str> = ice["uris"]
        .as_array()
        .expect("uris")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        uris.iter()
            .any(|u| u.starts_with("turns:localhost:") && !u.starts_with("turns:localhost:0")),
        "{uris:?}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = s
        .http
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));

    // The signaling WebSocket works over TLS (wss://).
    let welcome = within(
        "the welcome frame over wss://",
        Duration::from_secs(20),
        async {
            let tcp = TcpStream::connect(s.addr).await.expect("connect");
            let stream = tls
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("TLS");
            let url = format!("wss://localhost/rtc?token={token}");
            let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .expect("wss upgrade");
            ws.next().await.expect("frame").expect("ok")
        },
    )
    .await;
    assert!(welcome.to_text().expect("text").contains("\"welcome\""));
}

#[test]
fn unreadable_certificate_fails_with_a_clear_message() {
    let child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-turn",
            "--no-sfu",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .arg("--data-dir")
        .arg(tempfile::tempdir().expect("tmp").path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let out = common::output_within(
        child,
        Duration::from_secs(30),
        "`signalbox serve` with an unreadable certificate to exit",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}
