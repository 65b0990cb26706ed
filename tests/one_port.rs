//! One TLS port for everything: with `tls_cert`/`tls_key`, the HTTPS listener also serves TURN.
//! `curl` gets `/healthz` verifying the chain; a `wss://` `/rtc` client gets its welcome with
//! and without ALPN; coturn's `turnutils_uclient` relays with zero loss over TLS (`-S`) and
//! over plain TCP (`-t`) on that same port; a client offering only ALPN `stun.turn` reaches
//! the relay; plain HTTP gets a JSON error. Certificate files replaced on disk, or named anew
//! in the config file and SIGHUP, are served to new connections while an open WebSocket stays.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::turnutils::{uclient_at, Peer};
use common::{within, Server};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A certificate and key for `localhost`, written to `dir` under `name`.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

fn write_cert(dir: &Path, name: &str) -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
    Cert {
        cert,
        key,
        der: c.cert.der().to_vec(),
    }
}

/// A TLS client trusting `roots`, offering `alpn`.
fn connector(roots: &[&[u8]], alpn: &[&[u8]]) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for der in roots {
        store.add(CertificateDer::from(der.to_vec())).expect("root");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(s: &Server, tls: &TlsConnector) -> TlsStream<TcpStream> {
    within("a TLS handshake", Duration::from_secs(20), async {
        let tcp = TcpStream::connect(s.addr).await.expect("connect");
        tls.connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake")
    })
    .await
}

/// The certificate a new handshake is answered with.
async fn served_cert(s: &Server, roots: &[&[u8]]) -> Vec<u8> {
    let stream = tls_connect(s, &connector(roots, &[b"http/1.1"])).await;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a peer certificate")
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A `/rtc` WebSocket over TLS; returns it and its welcome frame.
async fn wss(s: &Server, tls: &TlsConnector, token: &str) -> (Wss, Value) {
    let stream = tls_connect(s, tls).await;
    within(
        "the welcome frame over wss://",
        Duration::from_secs(20),
        async {
            let url = format!("wss://localhost/rtc?token={token}");
            let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .expect("wss upgrade");
            let welcome = next_json(&mut ws).await;
            (ws, welcome)
        },
    )
    .await
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        match ws.next().await.expect("a frame").expect("not an error") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
            Message::Close(c) => panic!("the WebSocket closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Sends a ping on an open `/rtc` WebSocket and waits for its pong.
async fn ping(ws: &mut Wss) {
    within(
        "a pong on the WebSocket opened before",
        Duration::from_secs(10),
        async {
            ws.send(Message::text(r#"{"type":"ping"}"#))
                .await
                .expect("send ping");
            loop {
                if next_json(ws).await["type"] == "pong" {
                    return;
                }
            }
        },
    )
    .await
}

fn one_port_server(cert: &Cert, config: Option<&Path>) -> Server {
    let mut args = vec![
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-tls-listen",
        "127.0.0.1:0",
        "--relay-ports",
        "51700-51800",
        "--public-host",
        "localhost",
        "--turn-allow-peer",
        "127.0.0.0/8",
    ];
    match config {
        Some(file) => args.extend(["--config", file.to_str().expect("path")]),
        None => args.extend([
            "--tls-cert",
            cert.cert.to_str().expect("path"),
            "--tls-key",
            cert.key.to_str().expect("path"),
        ]),
    }
    Server::start_with(&args, &[])
}

/// One HTTPS GET with a bearer token; returns the JSON body.
async fn get_json(s: &Server, tls: &TlsConnector, path: &str, token: &str) -> Value {
    let text = get_text(s, tls, path, token).await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).expect("JSON body"),
        _ => panic!("no JSON in the answer to {path}: {text}"),
    }
}

/// One HTTPS GET with a bearer token; returns the whole answer, head and body.
async fn get_text(s: &Server, tls: &TlsConnector, path: &str, token: &str) -> String {
    let mut stream = tls_connect(s, tls).await;
    let text = within(format!("GET {path}"), Duration::from_secs(20), async {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).to_string()
    })
    .await;
    text
}

/// A STUN Binding request, sent over a TLS connection that offered only ALPN `stun.turn`.
async fn stun_binding_over_tls(s: &Server, root: &[u8]) -> (Option<Vec<u8>>, [u8; 20]) {
    let mut stream = tls_connect(s, &connector(&[root], &[b"stun.turn"])).await;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut request = [0u8; 20];
    request[1] = 0x01; // Binding request, no attributes
    request[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    request[8..20].copy_from_slice(b"one-port-txn");
    let header = within(
        "a STUN Binding answer over TLS",
        Duration::from_secs(10),
        async {
            stream.write_all(&request).await.expect("write");
            let mut header = [0u8; 20];
            stream.read_exact(&mut header).await.expect("read");
            header
        },
    )
    .await;
    (alpn, header)
}

/// Runs uclient against the HTTPS port with `flags`, expecting every message back.
async fn relays_without_loss(port: u16, ice: &Value, flags: &[&str], what: &str) {
    let peer = Peer::start();
    let (sent, received, text) = uclient_at(
        "127.0.0.1",
        port,
        "127.0.0.1",
        peer.port,
        flags,
        ice["username"].as_str().expect("username"),
        ice["password"].as_str().expect("password"),
        40,
    )
    .await;
    assert!(
        sent >= 40 && received == sent,
        "{what}: sent {sent}, received {received}\n{text}"
    );
}

#[tokio::test]
async fn https_wss_and_turn_share_the_tls_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = write_cert(dir.path(), "first");
    let s = one_port_server(&cert, None);
    let port = s.addr.port();
    let token = s.token("alice");

    // curl verifies the chain (the certificate is its own root here) and speaks HTTP/1.1.
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&cert.cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_version}"])
        .arg(format!("https://localhost:{port}/healthz"))
        .output()
        .expect("curl runs (scripts/install-test-deps installs it)");
    let out = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success() && out.contains("\"ok\"") && out.ends_with("\n1.1"),
        "curl: {out} {}",
        String::from_utf8_lossy(&curl.stderr)
    );

    // /ice-config names the HTTPS port as a turns: URI, next to the relay's own TLS port.
    let no_alpn = connector(&[&cert.der], &[]);
    let ice = get_json(&s, &no_alpn, "/ice-config", &token).await;
    let front = format!("turns:localhost:{port}?transport=tcp");
    assert!(
        ice["uris"]
            .as_array()
            .expect("uris")
            .iter()
            .any(|u| u == front.as_str()),
        "{front} in {ice}"
    );

    // wss:// with ALPN http/1.1 (as browsers) and without ALPN (as many WebSocket libraries).
    let (_ws, welcome) = wss(&s, &connector(&[&cert.der], &[b"h2", b"http/1.1"]), &token).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (mut ws, welcome) = wss(&s, &no_alpn, &token).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ping(&mut ws).await;

    // TURN over TLS and over plain TCP on the HTTPS port: coturn's client, zero loss.
    relays_without_loss(
        port,
        &ice,
        &["-t", "-S"],
        "uclient over TLS on the HTTPS port",
    )
    .await;
    relays_without_loss(port, &ice, &["-t"], "uclient over TCP on the HTTPS port").await;

    // A client that offers only stun.turn gets it, and a STUN answer from the relay.
    let (alpn, header) = stun_binding_over_tls(&s, &cert.der).await;
    assert_eq!(alpn.as_deref(), Some(&b"stun.turn"[..]));
    assert_eq!(&header[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(&header[8..20], b"one-port-txn", "the same transaction");

    // Plain HTTP on the TLS port: a JSON error, then the connection closes.
    let plain = s
        .http
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await
        .expect("an answer to plain HTTP");
    assert_eq!(plain.status().as_u16(), 400);
    let body: Value = plain.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "tls_required", "{body}");

    // The WebSocket opened first is still up after all this.
    ping(&mut ws).await;

    // /metrics counts what each connection on the port spoke.
    let metrics = get_text(&s, &no_alpn, "/metrics", &token).await;
    for protocol in ["https", "turn_tls", "turn_tcp", "refused"] {
        let line = format!("signalbox_tls_port_connections_total{{protocol=\"{protocol}\"}}");
        let count = common::metric(&metrics, &line);
        assert!(count >= Some(1), "{line} counted: {metrics}");
    }
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_cert(dir.path(), "live");
    let config = dir.path().join("signalbox.toml");
    let settings = |cert: &Cert| {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\nsfu_listen = \"127.0.0.1:0\"\n",
            cert.cert, cert.key
        )
    };
    std::fs::write(&config, settings(&first)).expect("config");
    let s = one_port_server(&first, Some(&config));
    let token = s.token("alice");
    assert_eq!(served_cert(&s, &[&first.der]).await, first.der);
    let (mut ws, _) = wss(&s, &connector(&[&first.der], &[]), &token).await;

    // The same paths, new contents (a renewal): picked up without a signal.
    let second = write_cert(dir.path(), "live");
    assert_ne!(second.der, first.der);
    let roots: [&[u8]; 2] = [&first.der, &second.der];
    common::eventually(
        "the rewritten certificate files served",
        Duration::from_secs(15),
        || async { (served_cert(&s, &roots).await == second.der).then_some(()) },
    )
    .await;
    ping(&mut ws).await;

    // Other paths in the config file, then SIGHUP (the old files stay as they are).
    let third = write_cert(dir.path(), "next");
    std::fs::write(&config, settings(&third)).expect("config");
    s.signal("HUP");
    let roots: [&[u8]; 3] = [&first.der, &second.der, &third.der];
    common::eventually(
        "the certificate named in the reloaded config served",
        Duration::from_secs(15),
        || async { (served_cert(&s, &roots).await == third.der).then_some(()) },
    )
    .await;

    // A broken pair on disk: the running certificate keeps serving.
    std::fs::write(&third.key, "not a key").expect("break the key");
    tokio::time::sleep(Duration::from_secs(3)).await; // more than one poll of the files
    assert_eq!(served_cert(&s, &roots).await, third.der);
    ping(&mut ws).await;
}
