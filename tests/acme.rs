//! Certificates by ACME against Pebble, the ACME test server, with real challenge validation
//! on loopback: pebble-challtestsrv answers Pebble's DNS queries for every name with 127.0.0.1,
//! so Pebble validates TLS-ALPN-01 on signalbox's HTTPS port and HTTP-01 on its
//! `acme_http_listen` port. Pebble issues short-lived certificates, so the renewal at two thirds
//! of the lifetime happens within the test, while a WebSocket opened before it stays open.
//!
//! Every process is started here in a temporary directory and killed by its PID when the test
//! ends (a drop guard); every wait has a deadline fixed when it starts.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{output_within, within, BIN};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// A child process killed (by its PID) and reaped when dropped; its output goes to `log`.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name, child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.output());
        }
    }
}

/// A port nothing listens on right now (bound on 127.0.0.1 and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A port free for both TCP and UDP (the DNS server takes both).
fn free_port_tcp_udp() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Pebble and its DNS server, on free loopback ports.
struct Pebble {
    pebble: Proc,
    _dns: Proc,
    /// The ACME directory URL.
    directory: String,
    management: u16,
    /// The CA of Pebble's own HTTPS certificate (generated here), for `acme_ca_file`.
    ca_file: PathBuf,
    ca_pem: String,
}

impl Pebble {
    /// Starts Pebble issuing certificates valid `validity` seconds, validating HTTP-01 on
    /// `http_port` and TLS-ALPN-01 on `tls_port`.
    async fn start(dir: &Path, validity: u64, http_port: u16, tls_port: u16) -> Pebble {
        let https =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("Pebble's certificate");
        let (cert, key) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
        std::fs::write(&cert, https.cert.pem()).expect("write");
        std::fs::write(&key, https.signing_key.serialize_pem()).expect("write");
        let (acme, management, dns_port) = (free_port(), free_port(), free_port_tcp_udp());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        let config_file = dir.join("pebble-config.json");
        std::fs::write(&config_file, config.to_string()).expect("write");
        let dns = Proc::spawn(
            "pebble-challtestsrv",
            Command::new(CHALLTESTSRV).args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
            ]),
            dir.join("challtestsrv.log"),
        );
        let pebble = Proc::spawn(
            "pebble",
            Command::new(PEBBLE)
                .arg("-config")
                .arg(&config_file)
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
            dir.join("pebble.log"),
        );
        let pebble = Pebble {
            pebble,
            _dns: dns,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management,
            ca_file: cert,
            ca_pem: https.cert.pem(),
        };
        let client = pebble.client();
        let url = pebble.directory.clone();
        within(
            "Pebble to answer on its directory URL",
            Duration::from_secs(20),
            async {
                loop {
                    if let Ok(r) = client.get(&url).send().await {
                        if r.status().is_success() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .await;
        pebble
    }

    /// An HTTP client trusting Pebble's own HTTPS certificate.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("Pebble's CA"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// The root Pebble issues under (it makes a new one at every start).
    async fn root(&self) -> CertificateDer<'static> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let pem = within("Pebble's issuing root", Duration::from_secs(10), async {
            self.client()
                .get(url)
                .send()
                .await
                .expect("GET /roots/0")
                .text()
                .await
                .expect("root PEM")
        })
        .await;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
    }
}

/// A running signalbox; its stderr (the log) goes to a file.
struct Signalbox {
    proc: Proc,
    addr: SocketAddr,
    data_dir: PathBuf,
}

impl Signalbox {
    fn start(data_dir: &Path, port: u16, args: &[&str]) -> Signalbox {
        // One log per start, next to the data directory (a restart keeps the earlier one).
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = data_dir.with_file_name(format!("signalbox-{n}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-turn",
            "--no-sfu",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn,signalbox::tls=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(out);
        for (k, _) in std::env::vars() {
            if k.starts_with("SIGNALBOX_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("start signalbox");
        let stdout = child.stdout.take().expect("stdout pipe");
        let proc = Proc {
            name: "signalbox",
            child,
            log,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on https://").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!("signalbox did not print its https address within 30 s: {e}")
            });
        Signalbox {
            proc,
            addr: addr.parse().expect("an address"),
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn token(&self) -> String {
        let secret = std::fs::read_to_string(self.data_dir.join("jwt-secret")).expect("jwt-secret");
        let principal = signalbox::auth::Principal {
            id: "alice".into(),
            name: None,
            admin: false,
        };
        let now = signalbox::clock::now_ms() / 1000;
        signalbox::auth::Tokens::new(secret.trim().as_bytes())
            .mint(&principal, now, 3600)
            .expect("mint")
    }

    /// Waits (at most `limit`) until the log contains `text`.
    async fn log_shows(&self, text: &str, limit: Duration) -> String {
        let what = format!("the signalbox log to show {text:?}");
        within(what, limit, async {
            loop {
                let log = self.proc.output();
                if log.contains(text) {
                    return log;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }
}

/// Pebble's root as the only trust anchor, certificates checked at `at` (`None`: now).
#[derive(Debug)]
struct PebbleVerifier {
    inner: Arc<WebPkiServerVerifier>,
    at: Option<UnixTime>,
}

impl ServerCertVerifier for PebbleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        let at = self.at.unwrap_or(now);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS client for HTTP/1.1 trusting only `root`, checking validity at `at` (`None`: now).
fn connector(root: &CertificateDer<'static>, at: Option<UnixTime>) -> TlsConnector {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).expect("Pebble's root");
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PebbleVerifier { inner, at }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A verified TLS connection to `addr` for `domain`.
async fn connect(
    tls: &TlsConnector,
    addr: SocketAddr,
    domain: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(domain.to_string()).map_err(|e| e.to_string())?;
    tls.connect(name, tcp).await.map_err(|e| e.to_string())
}

/// The leaf certificate of a connection.
fn leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a peer certificate")
}

/// Polls until a handshake for `domain` verifies against Pebble's root and presents a leaf
/// for which `wanted` holds; returns that leaf. All of it within `limit`.
async fn served_leaf(
    tls: &TlsConnector,
    addr: SocketAddr,
    domain: &str,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    within(what, limit, async {
        loop {
            if let Ok(stream) = connect(tls, addr, domain).await {
                let der = leaf(&stream);
                if wanted(&der) {
                    return der;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// GET `path` over a fresh verified connection; returns the status.
async fn https_status(tls: &TlsConnector, addr: SocketAddr, domain: &str, path: &str) -> u16 {
    let text = within(
        format!("GET {path} over TLS"),
        Duration::from_secs(10),
        async {
            let mut stream = connect(tls, addr, domain).await.expect("TLS handshake");
            let req = format!("GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await.expect("write");
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).to_string()
        },
    )
    .await;
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// The files in `data_dir/acme/`, each checked to have mode 0600 (the directory 0700).
fn cache_files(data_dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("acme");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the ACME cache directory") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    names
}

type Ws = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// Opens `/rtc` over TLS and reads the welcome.
async fn open_rtc(tls: &TlsConnector, s: &Signalbox, domain: &str) -> Ws {
    within("the wss:// /rtc welcome", Duration::from_secs(15), async {
        let stream = connect(tls, s.addr, domain).await.expect("TLS");
        let url = format!("wss://{domain}/rtc?token={}", s.token());
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("wss upgrade");
        let welcome = next_json(&mut ws).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws
    })
    .await
}

/// The next text frame as JSON (pings are answered by the library while reading).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Some(Ok(Message::Close(c))) => panic!("the server closed the WebSocket: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("WebSocket error: {e}"),
            None => panic!("the WebSocket ended"),
        }
    }
}

/// Sends a `ping` with `id` and waits for its `pong`.
async fn ping(ws: &mut Ws, id: u64) {
    within(
        format!("the pong to ping {id}"),
        Duration::from_secs(10),
        async {
            let msg = json!({"type": "ping", "id": id}).to_string();
            ws.send(Message::Text(msg.into())).await.expect("send ping");
            loop {
                let v = next_json(ws).await;
                if v["type"] == "pong" && v["id"] == id {
                    return;
                }
            }
        },
    )
    .await
}

/// The validity (Unix seconds) of the first certificate in a PEM or DER.
fn validity(der: &[u8]) -> (i64, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("X.509");
    let v = cert.validity();
    (v.not_before.timestamp(), v.not_after.timestamp())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn tls_alpn_01_issues_serves_and_renews_while_a_websocket_stays_open() {
    let tmp = tempfile::tempdir().expect("tmp");
    let https_port = free_port();
    // 24 s certificates: renewed at two thirds, 16 s after issuance.
    let pebble = Pebble::start(tmp.path(), 24, free_port(), https_port).await;
    let root = pebble.root().await;
    let domain = "call.acme-alpn.test";
    let data_dir = tmp.path().join("data");
    let s = Signalbox::start(
        &data_dir,
        https_port,
        &[
            "--acme-domain",
            domain,
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-file",
            pebble.ca_file.to_str().expect("path"),
            "--acme-email",
            "admin@acme-alpn.test",
        ],
    );
    let tls = connector(&root, None);
    let first = served_leaf(
        &tls,
        s.addr,
        domain,
        Duration::from_secs(40),
        "a certificate for the domain issued by Pebble",
        |_| true,
    )
    .await;
    assert_eq!(https_status(&tls, s.addr, domain, "/healthz").await, 200);
    let files = cache_files(&data_dir);
    assert!(
        files.iter().any(|f| f.starts_with("cert-"))
            && files.iter().any(|f| f.starts_with("account-")),
        "{files:?}"
    );
    s.log_shows("ACME: new certificate obtained", Duration::from_secs(10))
        .await;

    let mut ws = open_rtc(&tls, &s, domain).await;
    ping(&mut ws, 1).await;
    let (issued, expires) = validity(&first);
    let renewed = served_leaf(
        &tls,
        s.addr,
        domain,
        // Renewal is due at two thirds of the lifetime; this allows for the issuance itself.
        Duration::from_secs((expires - issued).max(0) as u64 + 20),
        "a renewed certificate (another DER) on the HTTPS port",
        |der| der != first,
    )
    .await;
    assert!(
        validity(&renewed).0 >= issued,
        "the renewed certificate is newer"
    );
    // The connection opened before the renewal was not dropped.
    ping(&mut ws, 2).await;
    assert_eq!(https_status(&tls, s.addr, domain, "/healthz").await, 200);
    drop(pebble);
}

#[tokio::test]
async fn http_01_issues_redirects_and_a_restart_serves_the_cached_certificate_while_the_ca_is_down()
{
    let tmp = tempfile::tempdir().expect("tmp");
    let (https_port, http_port) = (free_port(), free_port());
    // 15 s certificates: past two thirds (10 s) a restart orders at once, and fails.
    let mut pebble = Pebble::start(tmp.path(), 15, http_port, free_port()).await;
    let root = pebble.root().await;
    let domain = "call.acme-http.test";
    let data_dir = tmp.path().join("data");
    let http_listen = format!("127.0.0.1:{http_port}");
    let args = [
        "--acme-domain",
        domain,
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-file",
        pebble.ca_file.to_str().expect("path"),
        "--acme-http-listen",
        &http_listen,
    ];
    let mut s = Signalbox::start(&data_dir, https_port, &args);
    let tls = connector(&root, None);
    served_leaf(
        &tls,
        s.addr,
        domain,
        Duration::from_secs(40),
        "a certificate issued by HTTP-01",
        |_| true,
    )
    .await;
    assert_eq!(https_status(&tls, s.addr, domain, "/healthz").await, 200);

    // Anything but a challenge on the HTTP port is sent to https.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = plain
        .get(format!("http://{http_listen}/call/x?y=1"))
        .header("Host", format!("{domain}:{http_port}"))
        .send()
        .await
        .expect("GET on the HTTP-01 port");
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://{domain}:{https_port}/call/x?y=1").as_str())
    );
    let r = plain
        .get(format!(
            "http://{http_listen}/.well-known/acme-challenge/unknown"
        ))
        .send()
        .await
        .expect("GET an unknown challenge");
    assert_eq!(r.status().as_u16(), 404);

    // Stop both, then start signalbox alone once its cached certificate is due for renewal.
    s.proc.kill();
    pebble.pebble.kill();
    let files = cache_files(&data_dir);
    let cert_file = files
        .iter()
        .find(|f| f.starts_with("cert-"))
        .expect("a cached certificate");
    let pem = std::fs::read(data_dir.join("acme").join(cert_file)).expect("read the cache");
    let cached = CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate in the cache")
        .expect("PEM")
        .to_vec();
    let (issued, expires) = validity(&cached);
    let due = issued + (expires - issued) * 2 / 3 + 1;
    let wait = Duration::from_secs((due - unix_now()).clamp(0, 20) as u64);
    tokio::time::sleep(wait).await;
    let started = Instant::now();
    let s = Signalbox::start(&data_dir, https_port, &args);
    // It may be expired by now on a slow machine: check the chain as of its issuance.
    let at = UnixTime::since_unix_epoch(Duration::from_secs(issued as u64 + 1));
    let then = connector(&root, Some(at));
    let served = served_leaf(
        &then,
        s.addr,
        domain,
        Duration::from_secs(20),
        "the cached certificate after the restart",
        |_| true,
    )
    .await;
    assert_eq!(served, cached, "the cached certificate is served");
    assert_eq!(https_status(&then, s.addr, domain, "/healthz").await, 200);
    let log = s.log_shows("ACME: order", Duration::from_secs(20)).await;
    assert!(log.contains("cached certificate deployed"), "{log}");
    eprintln!(
        "restart to served cached certificate and logged error: {:?}",
        started.elapsed()
    );
}

#[test]
fn acme_config_errors_name_the_keys() {
    let run = |args: &[&str]| {
        let child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run signalbox");
        output_within(
            child,
            Duration::from_secs(30),
            &format!("signalbox {args:?}"),
        )
    };
    let out = run(&[
        "config",
        "check",
        "--acme-domain",
        "call.example.com",
        "--tls-cert",
        "/x.pem",
        "--tls-key",
        "/x.key",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("acme_domains") && err.contains("tls_cert"),
        "{err}"
    );

    let out = run(&["config", "check", "--acme-domain", "*.example.com"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("acme_domains") && err.contains("wildcard"),
        "{err}"
    );

    let out = run(&[
        "config",
        "check",
        "--acme-domain",
        "call.example.com",
        "--acme-ca-file",
        "/nonexistent/ca.pem",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("acme_ca_file"), "{err}");

    let out = run(&["config", "check", "--acme-domain", "call.example.com"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(r#"acme_domains = ["call.example.com"]"#),
        "{text}"
    );
    assert!(
        text.contains(r#"acme_directory = "https://acme-v02.api.letsencrypt.org/directory""#),
        "{text}"
    );
}
