//! Test harness: starts the real `signalbox` binary on 127.0.0.1 port 0 with a temporary data
//! directory, waits for its "listening on" line, mints tokens with the server's own secret, and
//! hands out a small JSON HTTP client. The process is killed and the directory removed on drop.
//!
//! Every wait here has a deadline fixed when the wait starts, which nothing (a skipped ping, an
//! unrelated frame) pushes back, and a wait that runs out panics naming what it waited for.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock
#![allow(dead_code)]

use std::fmt::Display;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub mod postgres;
pub mod redis;
pub mod turnutils;

pub const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub http: reqwest::Client,
}

fn spawn(
    data_dir: &Path,
    args: &[String],
    env: &[(String, String)],
) -> (Child, std::net::SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve");
    if !args.iter().any(|a| a == "--listen") {
        cmd.arg("--listen").arg("127.0.0.1:0");
    }
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Keep the developer's own SIGNALBOX_* settings out of tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("SIGNALBOX_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The SFU's default port is fixed: tests give it a free one on loopback.
    if !args.iter().any(|a| a == "--sfu-listen" || a == "--no-sfu") {
        cmd.arg("--sfu-listen").arg("127.0.0.1:0");
    }
    let mut child = cmd.spawn().expect("start signalbox");
    let Some(stdout) = child.stdout.take() else {
        kill_and_reap(&mut child);
        panic!("signalbox started without a stdout pipe");
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1))
            {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    // Absolute: lines that are not the "listening on" one do not extend it.
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => addr,
        Err(e) => {
            // Never leave a half-started server behind.
            let status = child.try_wait();
            kill_and_reap(&mut child);
            panic!(
                "signalbox did not report its listening address within 30 s ({e}; exit status: \
                 {status:?}); its stderr is above"
            );
        }
    };
    match addr.parse() {
        Ok(addr) => (child, addr),
        Err(e) => {
            kill_and_reap(&mut child);
            panic!("signalbox printed an unreadable listening address {addr:?}: {e}");
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Awaits `fut` for at most `limit` (measured from the call), then panics naming `what`.
#[track_caller]
pub fn within<F: Future>(
    what: impl Display,
    limit: Duration,
    fut: F,
) -> impl Future<Output = F::Output> {
    let caller = std::panic::Location::caller();
    async move {
        match tokio::time::timeout(limit, fut).await {
            Ok(v) => v,
            Err(_) => panic!("{caller}: timed out after {limit:?} waiting for {what}"),
        }
    }
}

/// Waits for a child process (its stdin already closed or fed) and collects its output, for at
/// most `limit`: past that the child is killed and the test fails naming `what`, with whatever the
/// child printed so far.
#[track_caller]
pub fn output_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_and_reap(&mut child);
                let out = stdout.join().unwrap_or_default();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "timed out after {limit:?} waiting for {what} (killed it); stdout: {}; stderr: {}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Err(e) => {
                kill_and_reap(&mut child);
                panic!("waiting for {what}: {e}");
            }
        }
    };
    // The pipes reach EOF once the child is gone (unless it left a grandchild holding them).
    let join = |h: std::thread::JoinHandle<Vec<u8>>, name: &str| {
        while !h.is_finished() {
            assert!(
                Instant::now() < deadline + Duration::from_secs(5),
                "{what} exited ({status}) but its {name} stayed open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        h.join().unwrap_or_default()
    };
    Output {
        status,
        stdout: join(stdout, "stdout"),
        stderr: join(stderr, "stderr"),
    }
}

impl Server {
    /// Starts a server with extra flags and environment (TURN off unless asked for).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut server = Server::start_in(&data_dir, args, env);
        server._tmp = Some(tmp);
        server
    }

    pub fn start() -> Server {
        Server::start_with(&["--no-turn"], &[])
    }

    /// Starts a server on an existing data directory (the caller keeps it alive).
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr) = spawn(data_dir, &args, &env);
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            env,
            args,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Sends `signal` (e.g. `HUP`) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr) = spawn(&self.data_dir, &self.args, &self.env);
        self.child = Some(child);
        self.addr = addr;
        self.base = format!("http://{addr}");
    }

    /// A token signed with the server's generated secret.
    pub fn token_with(&self, user: &str, admin: bool, ttl_secs: i64) -> String {
        let secret = std::fs::read_to_string(self.data_dir.join("jwt-secret")).expect("jwt-secret");
        let tokens = signalbox::auth::Tokens::new(secret.trim().as_bytes());
        let principal = signalbox::auth::Principal {
            id: user.into(),
            name: None,
            admin,
        };
        let now = signalbox::clock::now_ms() / 1000;
        tokens.mint(&principal, now, ttl_secs).expect("mint")
    }

    pub fn token(&self, user: &str) -> String {
        self.token_with(user, false, 3600)
    }

    pub fn admin_token(&self) -> String {
        self.token_with("admin", true, 3600)
    }

    pub fn client(&self, user: &str) -> Client {
        Client {
            base: self.base.clone(),
            token: Some(self.token(user)),
            http: self.http.clone(),
        }
    }

    pub fn admin(&self) -> Client {
        Client {
            base: self.base.clone(),
            token: Some(self.admin_token()),
            http: self.http.clone(),
        }
    }

    pub fn anonymous(&self) -> Client {
        Client {
            base: self.base.clone(),
            token: None,
            http: self.http.clone(),
        }
    }

    /// `POST /api/auth/login` as `username` with `password`, without a token.
    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.anonymous()
            .post(
                "/api/auth/login",
                serde_json::json!({ "username": username, "password": password }),
            )
            .await
    }

    /// The admin's webhook deliveries (newest first) once there are `n` and all are delivered;
    /// fails after `limit`.
    pub async fn delivered_webhooks(&self, n: usize, limit: Duration) -> Vec<Value> {
        let admin = self.admin();
        eventually(&format!("{n} webhook deliveries delivered"), limit, || {
            let admin = admin.clone();
            async move {
                let body = admin
                    .get("/api/admin/webhooks/deliveries")
                    .await
                    .expect(200);
                let d = body["deliveries"].as_array().cloned().unwrap_or_default();
                (d.len() == n && d.iter().all(|x| x["status"] == "delivered")).then_some(d)
            }
        })
        .await
    }

    /// Opens the SQLite file directly (read-only checks).
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data_dir.join("signalbox.db")).expect("open db")
    }

    pub fn count(&self, table: &str) -> i64 {
        self.db()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client acting as one user.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    /// Asserts an error status and code; returns the message.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        let err = if self.body.get("error").is_some() {
            &self.body["error"]
        } else {
            &Value::Null
        };
        assert_eq!(
            err["code"], code,
            "unexpected error code; body: {}",
            self.body
        );
        err["message"].as_str().expect("error message").to_string()
    }
}

impl Client {
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        Self::reply(resp).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::reply(req.send().await.expect("request")).await
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body)).await
    }
    pub async fn put_empty(&self, path: &str) -> Reply {
        self.send(Method::PUT, path, None).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    /// Creates a ringing video call to `callee` and returns its id.
    pub async fn call(&self, callee: &str) -> String {
        let body = self
            .post(
                "/calls",
                serde_json::json!({ "calleeId": callee, "callType": "video" }),
            )
            .await
            .expect(201);
        body["callSession"]["id"]
            .as_str()
            .expect("call id")
            .to_string()
    }
}

/// Polls `f` until it returns Some or the deadline passes (a poll that hangs counts too).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(_) => panic!("timed out after {timeout:?} waiting for {what} (a poll hung)"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long one `recv`, `expect` or `request` waits for its frame, in all.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A `/rtc` WebSocket client speaking JSON frames.
pub struct Rtc {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub welcome: Value,
    next_id: u64,
}

/// What `Rtc::next_frame` got before its deadline.
enum Frame {
    Json(Value),
    /// The deadline passed; the control frames (pings, pongs) skipped meanwhile.
    Deadline {
        skipped: usize,
    },
}

impl Rtc {
    /// Connects as `user` and reads the `welcome`.
    pub async fn connect(server: &Server, user: &str) -> Rtc {
        Rtc::connect_token(server, &server.token(user))
            .await
            .unwrap_or_else(|e| panic!("connect /rtc as {user}: {e}"))
    }

    pub async fn connect_token(
        server: &Server,
        token: &str,
    ) -> Result<Rtc, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}/rtc?token={token}", server.addr);
        let (ws, _) = within(
            "the /rtc WebSocket handshake",
            FRAME_WAIT,
            tokio_tungstenite::connect_async(url),
        )
        .await?;
        let mut rtc = Rtc {
            ws,
            welcome: Value::Null,
            next_id: 0,
        };
        rtc.welcome = rtc.expect("welcome").await;
        Ok(rtc)
    }

    pub async fn send_raw(&mut self, text: String) {
        use futures_util::SinkExt;
        let frame = tokio_tungstenite::tungstenite::Message::Text(text.into());
        within(
            "the server to take a frame",
            FRAME_WAIT,
            self.ws.send(frame),
        )
        .await
        .expect("send");
    }

    /// Sends a message with a fresh id and returns the id.
    pub async fn send(&mut self, mut msg: Value) -> Value {
        self.next_id += 1;
        let id = Value::from(self.next_id);
        msg["id"] = id.clone();
        self.send_raw(msg.to_string()).await;
        id
    }

    /// The next JSON frame (a close frame as `{"type": "closed"}`) or the deadline; pings and
    /// pongs are skipped without moving the deadline.
    async fn next_frame(&mut self, deadline: tokio::time::Instant, what: &str) -> Frame {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let mut skipped = 0;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return Frame::Deadline { skipped };
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => panic!("WebSocket error while waiting for {what}: {e}"),
                None => panic!("the connection closed while waiting for {what}"),
            };
            match msg {
                Message::Text(t) => {
                    return Frame::Json(serde_json::from_str(t.as_str()).unwrap_or_else(|e| {
                        panic!("a non-JSON frame while waiting for {what}: {e}: {t}")
                    }))
                }
                Message::Close(c) => {
                    return Frame::Json(
                        serde_json::json!({"type": "closed", "frame": format!("{c:?}")}),
                    )
                }
                _ => skipped += 1,
            }
        }
    }

    /// The next JSON frame before `deadline`; panics naming `what` when none comes.
    pub async fn recv_until(&mut self, deadline: tokio::time::Instant, what: &str) -> Value {
        let started = tokio::time::Instant::now();
        match self.next_frame(deadline, what).await {
            Frame::Json(v) => v,
            Frame::Deadline { skipped } => panic!(
                "timed out after {:?} waiting for {what} ({skipped} ping/pong frames skipped)",
                started.elapsed()
            ),
        }
    }

    /// The next JSON frame within `limit` from now, whatever pings come meanwhile.
    pub async fn recv_within(&mut self, limit: Duration, what: &str) -> Value {
        self.recv_until(tokio::time::Instant::now() + limit, what)
            .await
    }

    /// The next JSON frame within `FRAME_WAIT`.
    pub async fn recv(&mut self, what: &str) -> Value {
        self.recv_within(FRAME_WAIT, what).await
    }

    /// The next frame, which must be of `kind`.
    #[track_caller]
    pub fn expect_kind(v: Value, kind: &str) -> Value {
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// The next frame, within `FRAME_WAIT`, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_within(kind, FRAME_WAIT).await
    }

    /// The next frame, within `limit`, which must be of `kind`.
    pub async fn expect_within(&mut self, kind: &str, limit: Duration) -> Value {
        let v = self.recv_within(limit, &format!("a `{kind}` frame")).await;
        Rtc::expect_kind(v, kind)
    }

    /// Sends and returns the ack (or error) answering it, skipping unrelated events; all of it
    /// within `FRAME_WAIT`.
    pub async fn request(&mut self, msg: Value) -> Value {
        let kind = msg["type"].as_str().unwrap_or("?").to_string();
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        let id = self.send(msg).await;
        let what = format!("the ack, error or pong answering request {id} (`{kind}`)");
        let mut unrelated = Vec::new();
        loop {
            match self.next_frame(deadline, &what).await {
                Frame::Json(v) => {
                    if v["id"] == id
                        && (v["type"] == "ack" || v["type"] == "error" || v["type"] == "pong")
                    {
                        return v;
                    }
                    unrelated.push(v["type"].as_str().unwrap_or("?").to_string());
                }
                Frame::Deadline { skipped } => panic!(
                    "timed out after {FRAME_WAIT:?} waiting for {what}; meanwhile {} unrelated \
                     frames {unrelated:?} and {skipped} ping/pong frames",
                    unrelated.len()
                ),
            }
        }
    }

    /// Asserts that no JSON frame arrives within `wait` (pings and pongs do not count).
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        if let Frame::Json(v) = self.next_frame(deadline, "silence").await {
            panic!("expected silence for {wait:?}, got {v}");
        }
    }
}

/// Bounded reads and writes on a blocking TCP stream, by an absolute deadline (the socket
/// timeouts are set to what is left before each call, so a trickle of bytes cannot extend it).
pub fn read_to_end_by(stream: &mut std::net::TcpStream, deadline: Instant, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out reading {what}: got {} bytes",
            out.len()
        );
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("timed out reading {what}: got {} bytes", out.len())
            }
            // A reset after the answer (the server closed before reading the whole body).
            Err(_) => return out,
        }
    }
}

impl Server {
    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// `tests/interop`: the third-party clients' scripts, `node_modules` and `.venv`.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The command that runs the Node script `name` of `tests/interop` with socket.io-client,
/// which must be installed.
pub fn node_script(name: &str) -> Vec<String> {
    let dir = interop_dir();
    assert!(
        dir.join("node_modules/socket.io-client").is_dir(),
        "socket.io-client is not installed: run scripts/install-test-deps"
    );
    vec!["node".into(), dir.join(name).display().to_string()]
}

/// The value of the sample `name` in Prometheus text: a bare name, or one with its labels as
/// the server prints them (`name{transport="rtc"}`).
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}
