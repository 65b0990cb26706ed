//! Code shared by the load tools in `examples/` (`rtc_bench`, `soak`, `sfu_bench`): token minting from the
//! server's generated secret, `/rtc` connection setup up to the `welcome` frame, and readings of
//! a process's memory and CPU time from /proc. Not an example itself (a directory without
//! `main.rs`); each tool includes it with `mod common;`.
//!
//! Every wait here has a deadline fixed when the wait starts; frames skipped meanwhile (pings,
//! pongs) do not push it back.
#![allow(clippy::disallowed_methods)] // load tools are an edge: they read the clock

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use signalbox::auth::{Principal, Tokens};
use signalbox::clock::now_ms;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Res<T> = Result<T, String>;

/// TCP connect, WebSocket handshake and the `welcome` frame together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A multi-threaded tokio runtime with `threads` workers (0: one per core); a tool that cannot
/// build one says so as `tool` and exits 1.
pub fn runtime(tool: &str, threads: usize) -> tokio::runtime::Runtime {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        rt.worker_threads(threads);
    }
    rt.enable_all().build().unwrap_or_else(|e| {
        eprintln!("{tool}: runtime: {e}");
        std::process::exit(1);
    })
}

/// A /proc/<pid>/status field in KiB (VmRSS, VmHWM).
pub fn proc_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process in clock ticks (USER_HZ, 100 on Linux).
pub fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Busy and total jiffies of the whole machine (all cores), from /proc/stat.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4)?;
    Some((total - idle, total))
}

/// Mints bearer tokens with the secret the server generated into its data directory, so no
/// process is spawned per token.
pub struct Minter {
    tokens: Tokens,
    now: i64,
}

impl Minter {
    pub fn from_data_dir(dir: &Path) -> Res<Minter> {
        let path = dir.join("jwt-secret");
        let secret =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Minter {
            tokens: Tokens::new(secret.trim().as_bytes()),
            now: now_ms() / 1000,
        })
    }

    /// A token for `user`, valid for 6 hours.
    pub fn token(&self, user: &str) -> Res<String> {
        let p = Principal {
            id: user.to_string(),
            name: None,
            admin: false,
        };
        self.tokens
            .mint(&p, self.now, 6 * 3600)
            .map_err(|e| format!("minting a token: {e}"))
    }
}

/// Connects, authenticates with `?token=` and waits for the `welcome` frame, which it returns;
/// all of it within [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str, token: &str) -> Res<(Ws, Value)> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let url = format!("ws://{addr}/rtc?token={token}");
    // `true`: TCP_NODELAY on the client side, so Nagle does not add latency here.
    let (mut ws, _) = timeout_at(deadline, connect_async_with_config(url, None, true))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let first = next_json(&mut ws, deadline, "welcome").await?;
    if first["type"] == "error" {
        return Err(format!(
            "error instead of welcome: {} ({})",
            first["code"].as_str().unwrap_or("?"),
            first["message"].as_str().unwrap_or("")
        ));
    }
    if first["type"] != "welcome" {
        return Err(format!("expected welcome, got {first}"));
    }
    Ok((ws, first))
}

/// The next JSON text frame before `deadline` (pings are answered by tungstenite as we read and
/// skipped without moving the deadline); the error names `what` was awaited.
pub async fn next_json<S>(ws: &mut S, deadline: Instant, what: &str) -> Res<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no frame before the deadline (waiting for {what})"))?
            .ok_or_else(|| format!("connection closed (waiting for {what})"))?
            .map_err(|e| format!("read (waiting for {what}): {e}"))?;
        match msg {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).map_err(|e| format!("bad JSON: {e}"))
            }
            Message::Close(c) => {
                return Err(format!("closed by server: {c:?} (waiting for {what})"))
            }
            _ => continue,
        }
    }
}

/// The value at quantile `q` (0..=1) of a sorted slice; 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
