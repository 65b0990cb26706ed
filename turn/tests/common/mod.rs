//! Shared harness for the integration tests: starts the real server on 127.0.0.1 port 0 with a
//! small relay port range, mints REST credentials, and speaks raw STUN/TURN (built with the
//! webrtc-rs `stun` codec) over UDP or a stream.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signalbox_turn::config::{DefaultFamily, RelayIp};
use signalbox_turn::credentials::{mint, RestCredential};
use signalbox_turn::{TurnConfig, TurnServer, UsageEvent};
use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FingerprintAttr;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

pub const SECRET: &str = "north-secret";
pub const REALM: &str = "signalbox";

/// A running server plus the receiving end of its usage events.
pub struct TestServer {
    pub server: TurnServer,
    pub events: mpsc::Receiver<UsageEvent>,
}

/// What a test wants changed from the defaults.
#[derive(Default)]
pub struct Options {
    pub allow_loopback: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub user_quota: Option<u32>,
    /// `TurnConfig::allow_peer_addrs`.
    pub allow_peer_addrs: Vec<SocketAddr>,
    /// `TurnConfig::stream_idle_timeout`.
    pub stream_idle_timeout: Option<Duration>,
    /// Listen and relay on `::1` as well as on `127.0.0.1` (and with `allow_loopback`, allow
    /// `::1/128` peers too).
    pub dual_stack: bool,
    /// `TurnConfig::default_family`.
    pub default_family: DefaultFamily,
}

pub async fn start(opts: Options) -> TestServer {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let local6: SocketAddr = "[::1]:0".parse().unwrap();
    let mut listen = vec![local];
    let mut relays = vec![RelayIp::on(local.ip())];
    if opts.dual_stack {
        listen.push(local6);
        relays.push(RelayIp::on(local6.ip()));
    }
    let mut config = TurnConfig {
        udp_listen: listen.clone(),
        tcp_listen: listen.clone(),
        relays,
        default_family: opts.default_family,
        // Below the kernel's ephemeral ports (32768-60999): a port-0 bind anywhere on the
        // machine (a uclient, another test's socket) never lands in the relay range.
        relay_ports: 31000..=31999,
        secrets: vec![b"retired-secret".to_vec(), SECRET.as_bytes().to_vec()],
        ..TurnConfig::default()
    };
    if opts.allow_loopback {
        config.allow_peers = vec!["127.0.0.0/8".parse().unwrap()];
        if opts.dual_stack {
            config.allow_peers.push("::1/128".parse().unwrap());
        }
    }
    config.allow_peer_addrs = opts.allow_peer_addrs;
    if let Some((cert, key)) = opts.tls {
        config.tls_listen = listen;
        config.tls_cert_path = Some(cert);
        config.tls_key_path = Some(key);
    }
    if let Some(q) = opts.user_quota {
        config.user_quota = q;
    }
    if let Some(t) = opts.stream_idle_timeout {
        config.stream_idle_timeout = t;
    }
    let (tx, events) = mpsc::channel(1024);
    let server = TurnServer::start(config, tx).await.expect("server starts");
    TestServer { server, events }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn cred(user: &str) -> RestCredential {
    mint(SECRET.as_bytes(), user, unix_now(), 3600)
}

/// A request with a fresh transaction id.
pub fn request(method: Method, attrs: &[&dyn Setter]) -> Message {
    let mut m = Message::new();
    m.set_type(MessageType::new(method, CLASS_REQUEST));
    m.new_transaction_id().unwrap();
    m.write_header();
    for a in attrs {
        a.add_to(&mut m).unwrap();
    }
    m
}

/// Adds long-term credentials and seals.
pub fn sign(mut m: Message, c: &RestCredential, nonce: &str) -> Vec<u8> {
    TextAttribute::new(ATTR_USERNAME, c.username.clone())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_REALM, REALM.into())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_NONCE, nonce.into())
        .add_to(&mut m)
        .unwrap();
    MessageIntegrity::new_long_term_integrity(c.username.clone(), REALM.into(), c.password.clone())
        .add_to(&mut m)
        .unwrap();
    FingerprintAttr.add_to(&mut m).unwrap();
    m.raw
}

pub fn decode(b: &[u8]) -> Message {
    let mut m = Message::new();
    m.write(b).expect("valid STUN");
    m
}

pub fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|()| e.code.0)
}

pub fn nonce_of(m: &Message) -> String {
    TextAttribute::get_from_as(m, ATTR_NONCE)
        .expect("NONCE")
        .text
}

/// A raw STUN client over UDP.
pub struct UdpClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub async fn new(server: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    pub async fn roundtrip(&self, bytes: &[u8]) -> Message {
        self.socket.send_to(bytes, self.server).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.socket.recv_from(&mut buf))
            .await
            .expect("server answers within 5 s")
            .unwrap();
        decode(&buf[..n])
    }

    /// Gets a nonce (401 to an unauthenticated request), then sends `m` signed.
    pub async fn authed(&self, c: &RestCredential, m: Message) -> Message {
        let challenge = self.roundtrip(&request(METHOD_ALLOCATE, &[]).raw).await;
        assert_eq!(error_code(&challenge), Some(401));
        self.roundtrip(&sign(m, c, &nonce_of(&challenge))).await
    }
}

/// Reads one STUN message or ChannelData frame (with padding) from a stream.
pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("frame within 5 s")
        .unwrap();
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let rest = if head[0] >> 6 == 1 {
        len.div_ceil(4) * 4
    } else {
        16 + len
    };
    let mut body = vec![0u8; rest];
    s.read_exact(&mut body).await.unwrap();
    let mut frame = head.to_vec();
    frame.extend_from_slice(&body);
    if head[0] >> 6 == 1 {
        frame.truncate(4 + len);
    }
    frame
}

/// Sends a request over a stream and reads the answer.
pub async fn stream_roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
) -> Message {
    s.write_all(bytes).await.unwrap();
    decode(&read_frame(s).await)
}

/// Gets a nonce over a stream, then sends `m` signed.
pub async fn stream_authed<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    c: &RestCredential,
    m: Message,
) -> Message {
    let challenge = stream_roundtrip(s, &request(METHOD_ALLOCATE, &[]).raw).await;
    assert_eq!(error_code(&challenge), Some(401));
    stream_roundtrip(s, &sign(m, c, &nonce_of(&challenge))).await
}

/// ChannelData framing (padded, valid on every transport).
pub fn channel_data(n: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// Writes a self-signed certificate for `localhost`/127.0.0.1 and its key as PEM files.
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen generates a certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

/// A fresh scratch directory under the target dir's tmp (removed by the caller if it cares).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signalbox-turn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
