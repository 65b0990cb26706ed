//! Soak benchmark for `/rtc` (run on demand, not part of the tests; see `bench/soak/run.sh`,
//! which builds it, starts a release server and passes the arguments).
//!
//! N connections as N/2 pairs of distinct users. Each pair runs call cycles, paced so that all
//! pairs together make R cycles per second, for S seconds:
//!
//! 1. `call-initiate` (with an SDP offer) → ack with `callId`; the callee receives `call-initiate`;
//! 2. `call-accept` → ack; the caller receives `call-accept`;
//! 3. each side sends K `ice-candidate`s → acks; the other side receives each one;
//! 4. every M-th cycle, one side drops its connection mid-call (no close frame) and reconnects:
//!    its `welcome` must list the call; it sends `call-sdp-update` (ICE restart) → ack, the other
//!    side receives it, and the other side's next candidate must reach the new connection;
//! 5. `call-hangup` (caller or callee, alternating) → ack; the other side receives `call-hangup`,
//!    both receive `call-ended` (reason `hangup`);
//! 6. every E-th cycle both sides close and reconnect; their `welcome` must list no call.
//!
//! Roles alternate between cycles. Every request carries an `id` and must get its ack (or an
//! error); every event above is counted as expected when the request that causes it is sent and
//! as received when it arrives; frames nobody waits for are counted as unexpected. Each expected
//! message has one deadline, fixed when the request that causes it was sent (`STEP_TIMEOUT`
//! later); frames that arrive meanwhile for something else never push it back. A message that
//! has not come by its deadline is lost; the pair then reconnects both sides and goes on.
//! Latencies are measured from the send of the request to the arrival of the frame at the
//! client's reader task (one process, one clock).
//!
//! The server's VmRSS and open file descriptors (`/proc/<pid>/fd`) are read after one warm-up
//! call cycle on connections that are closed again, every second during the load (peak), and
//! after all clients disconnected and a settle period; `bench/soak/run.sh` compares its own
//! reading at startup with its reading after this client exits. At the end `/metrics` must
//! report no ringing or active call. Exit status 1 when anything was lost, an error or
//! unexpected frame came, a connection was refused or closed by the server, or a call was left
//! ringing or active.
//!
//! Tokens are minted from `<data-dir>/jwt-secret`. Every wait has a deadline and the run is
//! bounded in connections and time; only the given address (loopback in run.sh) is contacted.
//!
//! ```text
//! soak --addr 127.0.0.1:PORT --data-dir DIR [--server-pid PID] [--conns 5000] [--secs 600]
//!      [--rate 50] [--candidates 4] [--resume-every 7] [--reconnect-every 5] [--settle 45]
//!      [--parallel 200] [--report-every 30] [--threads 0]
//! ```
//! Each flag can also be given as an environment variable: `SOAK_CONNS`, `SOAK_SECS`,
//! `SOAK_RATE`, … (the flag name upper-cased, `-` as `_`); a flag wins over the variable.
#![allow(clippy::disallowed_methods)] // load tools are an edge: they read the clock

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{connect, machine_ticks, percentile, proc_cpu_ticks, proc_kib, Minter, Res, Ws};

type Sink = SplitSink<Ws, Message>;

/// How long one step may wait for an answer or an event before it counts as lost.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Closing a connection (close frame and the server's reply).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

const OFFER_SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:soak\r\na=ice-pwd:soakpasswordsoakpassword\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

struct Opts {
    addr: String,
    data_dir: PathBuf,
    server_pid: Option<u32>,
    conns: usize,
    secs: u64,
    rate: f64,
    candidates: u64,
    resume_every: u64,
    reconnect_every: u64,
    settle: u64,
    parallel: usize,
    report_every: u64,
    threads: usize,
}

fn usage() -> String {
    "usage: soak --addr HOST:PORT --data-dir DIR [--server-pid PID] [--conns N (even)] \
     [--secs S] [--rate CALL_CYCLES_PER_S] [--candidates K (per side per call)] \
     [--resume-every M (0 = never)] [--reconnect-every E (0 = never)] [--settle S] \
     [--parallel K] [--report-every S] [--threads T]\n\
     (each also as SOAK_<FLAG> in the environment, e.g. SOAK_CONNS=200)"
        .to_string()
}

const FLAGS: &[&str] = &[
    "addr",
    "data-dir",
    "server-pid",
    "conns",
    "secs",
    "rate",
    "candidates",
    "resume-every",
    "reconnect-every",
    "settle",
    "parallel",
    "report-every",
    "threads",
];

fn parse_opts() -> Res<Opts> {
    let mut raw: BTreeMap<String, String> = BTreeMap::new();
    for flag in FLAGS {
        let var = format!("SOAK_{}", flag.to_ascii_uppercase().replace('-', "_"));
        if let Ok(v) = std::env::var(&var) {
            raw.insert(flag.to_string(), v);
        }
    }
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let name = flag
            .strip_prefix("--")
            .filter(|n| FLAGS.contains(n))
            .ok_or_else(|| format!("unknown flag {flag}\n{}", usage()))?;
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value\n{}", usage()))?;
        raw.insert(name.to_string(), value);
    }
    fn get<T: std::str::FromStr>(raw: &BTreeMap<String, String>, k: &str, d: T) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        match raw.get(k) {
            Some(v) => v.parse().map_err(|e| format!("--{k} {v}: {e}")),
            None => Ok(d),
        }
    }
    let o = Opts {
        addr: get(&raw, "addr", String::new())?,
        data_dir: PathBuf::from(get(&raw, "data-dir", String::new())?),
        server_pid: raw
            .get("server-pid")
            .map(|v| v.parse().map_err(|e| format!("--server-pid {v}: {e}")))
            .transpose()?,
        conns: get(&raw, "conns", 5000)?,
        secs: get(&raw, "secs", 600)?,
        rate: get(&raw, "rate", 50.0)?,
        candidates: get(&raw, "candidates", 4)?,
        resume_every: get(&raw, "resume-every", 7)?,
        reconnect_every: get(&raw, "reconnect-every", 5)?,
        settle: get(&raw, "settle", 45)?,
        parallel: get::<usize>(&raw, "parallel", 200)?.max(1),
        report_every: get::<u64>(&raw, "report-every", 30)?.max(1),
        threads: get(&raw, "threads", 0)?,
    };
    if o.addr.is_empty() || o.data_dir.as_os_str().is_empty() {
        return Err(usage());
    }
    if o.conns < 2 || o.conns % 2 != 0 || o.conns > 20_000 {
        return Err("--conns must be even, 2..=20000".into());
    }
    if o.secs == 0 || o.secs > 3600 || o.settle > 600 {
        return Err("--secs must be 1..=3600 and --settle at most 600".into());
    }
    if !(o.rate > 0.0 && o.rate <= 1000.0) {
        return Err("--rate must be in (0, 1000] call cycles per second".into());
    }
    if o.candidates > 50 {
        return Err("--candidates: at most 50 per side (the server rate-limits at 100/s)".into());
    }
    Ok(o)
}

/// What the pairs counted. Merged into one shared copy after every cycle.
#[derive(Default)]
struct Tally {
    /// Request kind → (sent, acked, answered with an error).
    requests: BTreeMap<&'static str, [u64; 3]>,
    /// Event kind → (expected, received).
    events: BTreeMap<&'static str, [u64; 2]>,
    /// "request kind: error code" → count.
    errors: BTreeMap<String, u64>,
    /// Frames that arrived while nobody expected them, by type.
    unexpected: BTreeMap<String, u64>,
    /// Connections that ended without us closing them, by reason.
    closed_by_server: BTreeMap<String, u64>,
    connects: u64,
    connect_failures: BTreeMap<String, u64>,
    cycles: u64,
    failed_cycles: u64,
    resumes: u64,
    /// Calls a failed cycle left behind that the resync hung up, and frames it discarded.
    resync_hangups: u64,
    resync_frames: u64,
    reconnects: u64,
    /// Client → server frames and server → client JSON frames.
    frames_sent: u64,
    frames_received: u64,
    /// call-initiate sent → call-accept received by the caller, µs.
    setup_us: Vec<u64>,
    /// Request sent → its ack received, µs.
    ack_us: Vec<u32>,
    /// Request sent → the event it causes received on the other connection, µs.
    event_us: Vec<u32>,
    /// The first few problems, described.
    problems: Vec<String>,
}

const MAX_PROBLEMS: usize = 30;

impl Tally {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    fn merge(&mut self, o: &mut Tally) {
        for (k, v) in &o.requests {
            let e = self.requests.entry(k).or_default();
            for i in 0..3 {
                e[i] += v[i];
            }
        }
        for (k, v) in &o.events {
            let e = self.events.entry(k).or_default();
            e[0] += v[0];
            e[1] += v[1];
        }
        for (map, other) in [
            (&mut self.errors, &o.errors),
            (&mut self.unexpected, &o.unexpected),
            (&mut self.closed_by_server, &o.closed_by_server),
            (&mut self.connect_failures, &o.connect_failures),
        ] {
            for (k, v) in other {
                *map.entry(k.clone()).or_default() += v;
            }
        }
        self.connects += o.connects;
        self.cycles += o.cycles;
        self.failed_cycles += o.failed_cycles;
        self.resumes += o.resumes;
        self.resync_hangups += o.resync_hangups;
        self.resync_frames += o.resync_frames;
        self.reconnects += o.reconnects;
        self.frames_sent += o.frames_sent;
        self.frames_received += o.frames_received;
        self.setup_us.append(&mut o.setup_us);
        self.ack_us.append(&mut o.ack_us);
        self.event_us.append(&mut o.event_us);
        for p in o.problems.drain(..) {
            self.problem(p);
        }
        *o = Tally::default();
    }

    fn lost_requests(&self) -> u64 {
        self.requests
            .values()
            .map(|[s, a, e]| s.saturating_sub(a + e))
            .sum()
    }

    fn lost_events(&self) -> u64 {
        self.events
            .values()
            .map(|[x, r]| x.saturating_sub(*r))
            .sum()
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn unexpected_count(&self) -> u64 {
        self.unexpected.values().sum()
    }

    fn requests_sent(&self) -> u64 {
        self.requests.values().map(|v| v[0]).sum()
    }

    /// Answers (acks and errors) plus events that arrived.
    fn received(&self) -> u64 {
        self.requests.values().map(|v| v[1] + v[2]).sum::<u64>()
            + self.events.values().map(|v| v[1]).sum::<u64>()
    }

    /// Answers owed for the requests sent plus events expected.
    fn expected(&self) -> u64 {
        self.requests_sent() + self.events.values().map(|v| v[0]).sum::<u64>()
    }
}

fn us_since(at: Instant, arrived: Instant) -> u32 {
    arrived
        .saturating_duration_since(at)
        .as_micros()
        .min(u32::MAX as u128) as u32
}

enum Inbound {
    /// A JSON text frame and when the reader got it.
    Frame(Value, Instant),
    Closed(String),
}

/// A request on its way: its id and when it was sent (which fixes the deadline of every
/// message it causes).
#[derive(Clone, Copy)]
struct Sent {
    id: u64,
    at: Instant,
}

impl Sent {
    fn deadline(&self) -> Instant {
        self.at + STEP_TIMEOUT
    }
}

/// One `/rtc` connection: a reader task forwards its frames (and answers pings meanwhile), the
/// pair's task writes and waits for what it expects.
struct Conn {
    user: String,
    sink: Sink,
    rx: mpsc::UnboundedReceiver<Inbound>,
    reader: JoinHandle<()>,
    /// Frames read while waiting for something else.
    stash: VecDeque<(Value, Instant)>,
    closed: Option<String>,
    next_id: u64,
    /// We closed (or dropped) it: an end of stream is not the server's doing.
    closing: bool,
}

enum Fail {
    /// Nothing matching within the deadline.
    Timeout,
    /// The connection ended.
    Closed(String),
    /// The server answered with an error (already counted).
    Error(Value),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Timeout => write!(f, "nothing within {} s", STEP_TIMEOUT.as_secs()),
            Fail::Closed(why) => write!(f, "connection ended: {why}"),
            Fail::Error(v) => write!(f, "error {v}"),
        }
    }
}

impl Conn {
    fn new(user: &str, ws: Ws, hard_end: Instant) -> Conn {
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let inbound = match timeout_at(hard_end, stream.next()).await {
                    Err(_) => Inbound::Closed("client hard deadline".into()),
                    Ok(None) => Inbound::Closed("end of stream".into()),
                    Ok(Some(Err(e))) => Inbound::Closed(format!("read error: {e}")),
                    Ok(Some(Ok(Message::Close(c)))) => Inbound::Closed(format!(
                        "close frame {}",
                        c.map_or("without code".into(), |c| format!(
                            "{} {}",
                            c.code, c.reason
                        ))
                    )),
                    Ok(Some(Ok(Message::Text(t)))) => Inbound::Frame(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|_| json!({"type": "<not JSON>"})),
                        Instant::now(),
                    ),
                    Ok(Some(Ok(_))) => continue,
                };
                let last = matches!(inbound, Inbound::Closed(_));
                if tx.send(inbound).is_err() || last {
                    return;
                }
            }
        });
        Conn {
            user: user.to_string(),
            sink,
            rx,
            reader,
            stash: VecDeque::new(),
            closed: None,
            next_id: 1,
            closing: false,
        }
    }

    /// The first frame (stashed or new) that `pred` accepts, and when it arrived; waits until
    /// `deadline` at most (frames for something else are stashed and do not move it).
    async fn take(
        &mut self,
        t: &mut Tally,
        deadline: Instant,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Instant), Fail> {
        if let Some(i) = self.stash.iter().position(|(v, _)| pred(v)) {
            if let Some(found) = self.stash.remove(i) {
                return Ok(found);
            }
        }
        if let Some(why) = &self.closed {
            return Err(Fail::Closed(why.clone()));
        }
        loop {
            match timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Err(Fail::Timeout),
                Ok(Some(Inbound::Frame(v, at))) => {
                    t.frames_received += 1;
                    if pred(&v) {
                        return Ok((v, at));
                    }
                    self.stash.push_back((v, at));
                }
                Ok(Some(Inbound::Closed(why))) => {
                    if !self.closing {
                        *t.closed_by_server.entry(why.clone()).or_default() += 1;
                        t.problem(format!("{}: connection ended: {why}", self.user));
                    }
                    self.closed = Some(why.clone());
                    return Err(Fail::Closed(why));
                }
                Ok(None) => {
                    self.closed = Some("reader gone".into());
                    return Err(Fail::Closed("reader gone".into()));
                }
            }
        }
    }

    /// Sends a request with a fresh `id`; returns the id and the send time.
    async fn send(&mut self, t: &mut Tally, kind: &'static str, mut body: Value) -> Sent {
        let id = self.next_id;
        self.next_id += 1;
        body["type"] = json!(kind);
        body["id"] = json!(id);
        t.requests.entry(kind).or_default()[0] += 1;
        let sent = Sent {
            id,
            at: Instant::now(),
        };
        match timeout_at(
            sent.deadline(),
            self.sink.send(Message::text(body.to_string())),
        )
        .await
        {
            Ok(Ok(())) => t.frames_sent += 1,
            Ok(Err(e)) => t.problem(format!("{}: sending {kind}: {e}", self.user)),
            Err(_) => t.problem(format!("{}: sending {kind} timed out", self.user)),
        }
        sent
    }

    /// Waits for the answer to `sent`, until its deadline.
    async fn answer(
        &mut self,
        t: &mut Tally,
        kind: &'static str,
        sent: Sent,
    ) -> Result<Value, Fail> {
        let id = sent.id;
        let v = self
            .take(t, sent.deadline(), |v| {
                v["id"] == id && (v["type"] == "ack" || v["type"] == "error")
            })
            .await;
        match v {
            Ok((v, at)) if v["type"] == "ack" => {
                t.requests.entry(kind).or_default()[1] += 1;
                t.ack_us.push(us_since(sent.at, at));
                Ok(v)
            }
            Ok((v, _)) => {
                t.requests.entry(kind).or_default()[2] += 1;
                let code = v["code"].as_str().unwrap_or("?");
                *t.errors.entry(format!("{kind}: {code}")).or_default() += 1;
                t.problem(format!("{}: {kind} answered with {v}", self.user));
                Err(Fail::Error(v))
            }
            Err(e) => {
                t.problem(format!("{}: no answer to {kind} (id {id}): {e}", self.user));
                Err(e)
            }
        }
    }

    /// Sends a request and waits for its answer; returns the answer and the send.
    async fn request(
        &mut self,
        t: &mut Tally,
        kind: &'static str,
        body: Value,
    ) -> Result<(Value, Sent), Fail> {
        let sent = self.send(t, kind, body).await;
        self.answer(t, kind, sent).await.map(|v| (v, sent))
    }

    /// Counts an event of `kind` on call `call_id` as expected (caused by `cause`) and waits for
    /// one that `pred` accepts, until the cause's deadline.
    async fn event(
        &mut self,
        t: &mut Tally,
        kind: &'static str,
        call_id: &str,
        cause: Sent,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, Fail> {
        t.events.entry(kind).or_default()[0] += 1;
        let got = self
            .take(t, cause.deadline(), |v| {
                v["type"] == kind && v["callId"] == call_id && pred(v)
            })
            .await;
        match got {
            Ok((v, at)) => {
                t.events.entry(kind).or_default()[1] += 1;
                t.event_us.push(us_since(cause.at, at));
                Ok(v)
            }
            Err(e) => {
                t.problem(format!(
                    "{}: {kind} for call {call_id} missing: {e}",
                    self.user
                ));
                Err(e)
            }
        }
    }

    /// Moves what was read but never expected into the tally.
    fn flush_unexpected(&mut self, t: &mut Tally) {
        // Frames already in the channel count too.
        while let Ok(inbound) = self.rx.try_recv() {
            match inbound {
                Inbound::Frame(v, at) => {
                    t.frames_received += 1;
                    self.stash.push_back((v, at));
                }
                Inbound::Closed(why) => {
                    if !self.closing && self.closed.is_none() {
                        *t.closed_by_server.entry(why.clone()).or_default() += 1;
                        t.problem(format!("{}: connection ended: {why}", self.user));
                    }
                    self.closed = Some(why);
                }
            }
        }
        for (v, _) in self.stash.drain(..) {
            let kind = v["type"].as_str().unwrap_or("?").to_string();
            *t.unexpected.entry(kind).or_default() += 1;
            t.problem(format!("{}: unexpected frame {v}", self.user));
        }
    }

    /// Closes with a close frame and waits (bounded) for the server's side to end.
    async fn close(mut self, t: &mut Tally) {
        self.flush_unexpected(t);
        self.closing = true;
        // One deadline for the whole close.
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let _ = timeout_at(deadline, self.sink.send(Message::Close(None))).await;
        let _ = timeout_at(deadline, self.sink.close()).await;
        // The reader ends when the server's close frame or end of stream arrives; frames that
        // come before that are the server's, so they are still counted.
        while let Ok(Some(inbound)) = timeout_at(deadline, self.rx.recv()).await {
            match inbound {
                Inbound::Frame(v, _) => {
                    t.frames_received += 1;
                    let kind = v["type"].as_str().unwrap_or("?").to_string();
                    *t.unexpected.entry(kind).or_default() += 1;
                    t.problem(format!("{}: unexpected frame while closing {v}", self.user));
                }
                Inbound::Closed(_) => break,
            }
        }
        self.reader.abort();
    }

    /// Drops what was read (after a resync; counted as `resync_frames`, not as unexpected).
    fn discard(&mut self, t: &mut Tally) {
        while let Ok(inbound) = self.rx.try_recv() {
            match inbound {
                Inbound::Frame(..) => {
                    t.frames_received += 1;
                    t.resync_frames += 1;
                }
                Inbound::Closed(why) => {
                    if !self.closing && self.closed.is_none() {
                        *t.closed_by_server.entry(why.clone()).or_default() += 1;
                        t.problem(format!("{}: connection ended: {why}", self.user));
                    }
                    self.closed = Some(why);
                }
            }
        }
        t.resync_frames += self.stash.len() as u64;
        self.stash.clear();
    }

    /// Drops the connection without a close frame (as a lost network would).
    fn drop_abruptly(mut self, t: &mut Tally) {
        self.flush_unexpected(t);
        self.reader.abort();
    }
}

/// Connects `user` and returns the connection and its `welcome`.
async fn open(
    addr: &str,
    user: &str,
    token: &str,
    hard_end: Instant,
    t: &mut Tally,
) -> Res<(Conn, Value)> {
    match connect(addr, token).await {
        Ok((ws, welcome)) => {
            t.connects += 1;
            t.frames_received += 1;
            Ok((Conn::new(user, ws, hard_end), welcome))
        }
        Err(e) => {
            // Grouped by the kind of failure (ids and bodies cut off).
            let kind: String = e
                .split('{')
                .next()
                .unwrap_or("")
                .chars()
                .take(100)
                .collect();
            *t.connect_failures.entry(kind).or_default() += 1;
            t.problem(format!("{user}: connect failed: {e}"));
            Err(e)
        }
    }
}

/// Connects with a few retries (a failed connect is counted each time).
async fn open_retry(
    addr: &str,
    user: &str,
    token: &str,
    hard_end: Instant,
    t: &mut Tally,
) -> Res<(Conn, Value)> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            sleep(Duration::from_millis(500)).await;
        }
        match open(addr, user, token, hard_end, t).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn welcome_calls(welcome: &Value) -> Vec<String> {
    welcome["activeCalls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

struct Side {
    user: String,
    token: String,
    conn: Option<Conn>,
}

struct PairCtx {
    addr: String,
    hard_end: Instant,
    candidates: u64,
    resume_every: u64,
    reconnect_every: u64,
}

fn candidate(call_no: u64, side: u64, k: u64) -> String {
    format!(
        "candidate:{call_no}{side}{k} 1 udp 2122260223 192.0.2.{} {} typ host",
        1 + side,
        40000 + k
    )
}

/// One call cycle between `a` (calling) and `b`. `Err` after the first missing message.
async fn cycle(
    ctx: &PairCtx,
    no: u64,
    a: &mut Side,
    b: &mut Side,
    t: &mut Tally,
) -> Result<(), Fail> {
    let (Some(ca), Some(cb)) = (a.conn.as_mut(), b.conn.as_mut()) else {
        return Err(Fail::Closed("not connected".into()));
    };
    let (ack, invite) = ca
        .request(
            t,
            "call-initiate",
            json!({"to": b.user, "callType": "audio", "sdp": {"type": "offer", "sdp": OFFER_SDP}}),
        )
        .await?;
    let Some(call_id) = ack["callId"].as_str().map(str::to_string) else {
        t.problem(format!(
            "{}: call-initiate ack without callId: {ack}",
            a.user
        ));
        return Err(Fail::Error(ack));
    };
    let caller = a.user.clone();
    cb.event(t, "call-initiate", &call_id, invite, |v| {
        v["from"] == caller.as_str() && v["sdp"]["type"] == "offer"
    })
    .await?;
    let (_, accept) = cb
        .request(t, "call-accept", json!({ "callId": call_id }))
        .await?;
    let callee = b.user.clone();
    ca.event(t, "call-accept", &call_id, accept, |v| {
        v["from"] == callee.as_str()
    })
    .await?;
    t.setup_us
        .push(invite.at.elapsed().as_micros().min(u64::MAX as u128) as u64);

    // Candidates both ways, pipelined: send all, then collect acks and forwards.
    let k = ctx.candidates;
    trickle(t, ca, cb, &call_id, no, 0, k).await?;

    let (mut a_conn, mut b_conn) = (a.conn.take(), b.conn.take());
    if ctx.resume_every > 0 && no % ctx.resume_every == ctx.resume_every - 1 {
        // One side loses its connection mid-call and comes back within the grace period.
        let a_drops = (no / ctx.resume_every) % 2 == 0;
        let (dropper, d_conn, other_conn) = if a_drops {
            (&*a, &mut a_conn, &mut b_conn)
        } else {
            (&*b, &mut b_conn, &mut a_conn)
        };
        if let Some(c) = d_conn.take() {
            c.drop_abruptly(t);
        }
        let resumed = resume(ctx, dropper, &call_id, no, other_conn, t).await;
        t.resumes += 1;
        match resumed {
            Ok(c) => *d_conn = Some(c),
            Err(e) => {
                a.conn = a_conn;
                b.conn = b_conn;
                return Err(e);
            }
        }
    }
    a.conn = a_conn;
    b.conn = b_conn;
    let (Some(ca), Some(cb)) = (a.conn.as_mut(), b.conn.as_mut()) else {
        return Err(Fail::Closed("not connected".into()));
    };

    // Caller and callee take turns hanging up.
    let (hanger, other) = if no % 4 < 2 { (ca, cb) } else { (cb, ca) };
    let hanger_user = hanger.user.clone();
    let (_, hangup) = hanger
        .request(t, "call-hangup", json!({ "callId": call_id }))
        .await?;
    other
        .event(t, "call-hangup", &call_id, hangup, |v| {
            v["from"] == hanger_user.as_str()
        })
        .await?;
    for c in [hanger, other] {
        c.event(t, "call-ended", &call_id, hangup, |v| {
            v["reason"] == "hangup"
        })
        .await?;
    }
    ca_cb_flush(a, b, t);

    if ctx.reconnect_every > 0 && no % ctx.reconnect_every == ctx.reconnect_every - 1 {
        for side in [a, b] {
            if let Some(c) = side.conn.take() {
                c.close(t).await;
            }
            t.reconnects += 1;
            let (c, welcome) = open_retry(&ctx.addr, &side.user, &side.token, ctx.hard_end, t)
                .await
                .map_err(Fail::Closed)?;
            let calls = welcome_calls(&welcome);
            if !calls.is_empty() {
                *t.unexpected
                    .entry("welcome listing an ended call".into())
                    .or_default() += 1;
                t.problem(format!(
                    "{}: welcome after hang-up lists {calls:?}",
                    side.user
                ));
            }
            side.conn = Some(c);
        }
    }
    Ok(())
}

fn ca_cb_flush(a: &mut Side, b: &mut Side, t: &mut Tally) {
    for c in [a.conn.as_mut(), b.conn.as_mut()].into_iter().flatten() {
        c.flush_unexpected(t);
    }
}

/// `ca` and `cb` each send `k` candidates; each must be acked and reach the other side.
async fn trickle(
    t: &mut Tally,
    ca: &mut Conn,
    cb: &mut Conn,
    call_id: &str,
    no: u64,
    round: u64,
    k: u64,
) -> Result<(), Fail> {
    let mut sends = [Vec::new(), Vec::new()];
    for (side, c) in [&mut *ca, &mut *cb].into_iter().enumerate() {
        for i in 0..k {
            let cand = candidate(no, side as u64 + 2 * round, i);
            let sent = c
                .send(
                    t,
                    "ice-candidate",
                    json!({"callId": call_id, "candidate": {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}}),
                )
                .await;
            sends[side].push(sent);
        }
    }
    for (side, sent_by_side) in sends.iter().enumerate() {
        let (from, to) = if side == 0 {
            (&mut *ca, &mut *cb)
        } else {
            (&mut *cb, &mut *ca)
        };
        for &sent in sent_by_side {
            from.answer(t, "ice-candidate", sent).await?;
        }
        let sender = from.user.clone();
        for (i, &sent) in (0..k).zip(sent_by_side) {
            let cand = candidate(no, side as u64 + 2 * round, i);
            to.event(t, "ice-candidate", call_id, sent, |v| {
                v["from"] == sender.as_str() && v["candidate"]["candidate"] == cand.as_str()
            })
            .await?;
        }
    }
    Ok(())
}

/// The dropped side reconnects: `welcome` lists the call, an ICE-restart `call-sdp-update`
/// reaches the other side, and the other side's next candidate reaches the new connection.
async fn resume(
    ctx: &PairCtx,
    side: &Side,
    call_id: &str,
    no: u64,
    other: &mut Option<Conn>,
    t: &mut Tally,
) -> Result<Conn, Fail> {
    let (mut c, welcome) = open_retry(&ctx.addr, &side.user, &side.token, ctx.hard_end, t)
        .await
        .map_err(Fail::Closed)?;
    t.events.entry("welcome (call listed)").or_default()[0] += 1;
    if welcome_calls(&welcome).iter().any(|id| id == call_id) {
        t.events.entry("welcome (call listed)").or_default()[1] += 1;
    } else {
        t.problem(format!(
            "{}: welcome after a drop does not list call {call_id}: {welcome}",
            side.user
        ));
        return Err(Fail::Error(welcome));
    }
    let Some(o) = other.as_mut() else {
        return Err(Fail::Closed("not connected".into()));
    };
    let (_, update) = c
        .request(
            t,
            "call-sdp-update",
            json!({"callId": call_id, "sdp": {"type": "offer", "sdp": OFFER_SDP.replace("ice-ufrag:soak", "ice-ufrag:rest")}}),
        )
        .await?;
    let me = side.user.clone();
    o.event(t, "call-sdp-update", call_id, update, |v| {
        v["from"] == me.as_str() && v["sdp"]["type"] == "offer"
    })
    .await?;
    // One candidate each way on the new connection (round 1 keeps them distinct).
    trickle(t, &mut c, o, call_id, no, 1, 1).await?;
    Ok(c)
}

/// How long a resync lets the answers to its hang-ups arrive before it discards what came.
const RESYNC_WAIT: Duration = Duration::from_secs(3);

/// After a failed cycle (already counted: lost, error or unexpected frames): both sides close
/// and reconnect, and every call either `welcome` still lists is hung up, so the pair's next
/// cycle starts clean. Without this a call left ringing makes the next invite in the other
/// direction a `call_glare` error, and one stall of the server cascades through every later
/// cycle of the pair. What arrives until `RESYNC_WAIT` has passed is discarded and counted as
/// `resync_frames`; the hang-ups are not counted as expected messages.
async fn resync(ctx: &PairCtx, x: &mut Side, y: &mut Side, t: &mut Tally) {
    let mut live = std::collections::BTreeSet::new();
    for side in [&mut *x, &mut *y] {
        if let Some(c) = side.conn.take() {
            c.close(t).await;
        }
        side.conn = match open_retry(&ctx.addr, &side.user, &side.token, ctx.hard_end, t).await {
            Ok((c, welcome)) => {
                live.extend(welcome_calls(&welcome));
                Some(c)
            }
            Err(_) => None,
        };
    }
    if !live.is_empty() {
        let deadline = Instant::now() + RESYNC_WAIT;
        if let Some(c) = x.conn.as_mut().or(y.conn.as_mut()) {
            for call_id in &live {
                let hangup = json!({"type": "call-hangup", "callId": call_id}).to_string();
                if let Ok(Ok(())) = timeout_at(deadline, c.sink.send(Message::text(hangup))).await {
                    t.frames_sent += 1;
                    t.resync_hangups += 1;
                }
            }
        }
        sleep_until(deadline).await;
    }
    for side in [x, y] {
        if let Some(c) = side.conn.as_mut() {
            c.discard(t);
        }
    }
}

/// Runs cycles for one pair until `end`, paced at one per `period` from `first`.
async fn pair_task(
    ctx: Arc<PairCtx>,
    mut x: Side,
    mut y: Side,
    first: Instant,
    period: Duration,
    end: Instant,
    shared: Arc<Mutex<Tally>>,
) -> (Side, Side) {
    let mut t = Tally::default();
    let mut tick = tokio::time::interval_at(first, period);
    // A cycle that overran is not made up for: the next starts one period later.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut no = 0u64;
    loop {
        // No new cycle starts at or after `end`.
        if timeout_at(end, tick.tick()).await.is_err() || Instant::now() >= end {
            break;
        }
        let (a, b) = if no % 2 == 0 {
            (&mut x, &mut y)
        } else {
            (&mut y, &mut x)
        };
        match cycle(&ctx, no, a, b, &mut t).await {
            Ok(()) => t.cycles += 1,
            Err(_) => {
                t.failed_cycles += 1;
                resync(&ctx, &mut x, &mut y, &mut t).await;
            }
        }
        no += 1;
        if let Ok(mut s) = shared.lock() {
            s.merge(&mut t);
        }
    }
    if let Ok(mut s) = shared.lock() {
        s.merge(&mut t);
    }
    (x, y)
}

#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    /// The anonymous part of VmRSS (heap, stacks); the rest is mostly the binary's code pages
    /// and libraries, which grow as code paths run for the first time.
    anon_kib: u64,
    fds: u64,
}

fn sample(pid: &str) -> Option<Sample> {
    let rss_kib = proc_kib(pid, "VmRSS:")?;
    let anon_kib = proc_kib(pid, "RssAnon:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        rss_kib,
        anon_kib,
        fds,
    })
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {:.1} MB (anon {:.1} MB), {} fds",
            self.rss_kib as f64 / 1024.0,
            self.anon_kib as f64 / 1024.0,
            self.fds
        )
    }
}

fn show(s: Option<Sample>) -> String {
    s.map_or("VmRSS ?, ? fds".into(), |s| s.to_string())
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = common::runtime("soak", opts.threads);
    match rt.block_on(run(opts)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    }
}

/// The 1-, 5- and 15-minute load averages (other processes on the machine skew the figures).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn kib(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| format!("{:.1} MB", v as f64 / 1024.0))
}

/// The `signalbox_calls{status=…}` gauges from `/metrics`.
async fn live_calls(addr: &str) -> Res<BTreeMap<String, i64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET /metrics body: {e}"))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("signalbox_calls{status=\"") else {
            continue;
        };
        let Some((status, value)) = rest.split_once("\"} ") else {
            continue;
        };
        if let Ok(n) = value.trim().parse() {
            out.insert(status.to_string(), n);
        }
    }
    Ok(out)
}

/// Runs the soak; `Ok(false)` when a check failed.
async fn run(o: Opts) -> Res<bool> {
    let minter = Minter::from_data_dir(&o.data_dir)?;
    let pid = o.server_pid.map(|p| p.to_string());
    let read = || pid.as_deref().and_then(sample);
    let me = std::process::id().to_string();
    let pairs = o.conns / 2;
    let period = Duration::from_secs_f64(pairs as f64 / o.rate);
    let setup_budget = Duration::from_secs(120 + o.conns as u64 / 50);
    let hard_end = Instant::now()
        + setup_budget
        + Duration::from_secs(o.secs + o.settle + 120)
        + STEP_TIMEOUT * 20;
    let ctx = Arc::new(PairCtx {
        addr: o.addr.clone(),
        hard_end,
        candidates: o.candidates,
        resume_every: o.resume_every,
        reconnect_every: o.reconnect_every,
    });
    let shared = Arc::new(Mutex::new(Tally::default()));
    println!(
        "soak: {} connections ({pairs} pairs of distinct users), {:.0} call cycles/s in total \
         (one per pair every {:.1} s), {} candidates per side per call, a mid-call drop and \
         resume every {} cycles of a pair, both sides reconnecting every {} cycles; {} s of \
         churn, then {} s to settle",
        o.conns,
        o.rate,
        period.as_secs_f64(),
        o.candidates,
        o.resume_every,
        o.reconnect_every,
        o.secs,
        o.settle
    );

    // ---- Warm-up and baseline ------------------------------------------------------------
    // One call cycle on two connections that are closed again, so one-time allocations
    // (runtime, SQLite pages, prepared statements) are in the baseline.
    {
        let mut t = Tally::default();
        let mut sides = Vec::new();
        for user in ["soak-warmup-a", "soak-warmup-b"] {
            let token = minter.token(user)?;
            let (c, _) = open(&o.addr, user, &token, hard_end, &mut t).await?;
            sides.push(Side {
                user: user.into(),
                token,
                conn: Some(c),
            });
        }
        let (mut a, mut b) = match (sides.pop(), sides.pop()) {
            (Some(b), Some(a)) => (a, b),
            _ => return Err("warm-up connections missing".into()),
        };
        let warm_ctx = PairCtx {
            addr: o.addr.clone(),
            hard_end,
            candidates: o.candidates,
            resume_every: 1,
            reconnect_every: 1,
        };
        // Four cycles: both roles, both sides hanging up, dropping and reconnecting.
        for no in 0..4 {
            let (x, y) = if no % 2 == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            cycle(&warm_ctx, no, x, y, &mut t)
                .await
                .map_err(|e| format!("warm-up call cycle failed: {e}; {:?}", t.problems))?;
        }
        for side in [a, b] {
            if let Some(c) = side.conn {
                c.close(&mut t).await;
            }
        }
    }
    sleep(Duration::from_secs(2)).await;
    let baseline = read();
    println!(
        "baseline (after the warm-up calls, no client connected): server {}",
        show(baseline)
    );

    // ---- Connect everyone ------------------------------------------------------------------
    let mut users = Vec::with_capacity(o.conns);
    for i in 0..pairs {
        for s in ["a", "b"] {
            let user = format!("soak-{i}-{s}");
            let token = minter.token(&user)?;
            users.push((user, token));
        }
    }
    let t0 = Instant::now();
    let addr = o.addr.clone();
    let opened: Vec<(Side, Tally)> = futures_util::stream::iter(users)
        .map(|(user, token)| {
            let addr = addr.clone();
            async move {
                let mut t = Tally::default();
                let conn = open_retry(&addr, &user, &token, hard_end, &mut t)
                    .await
                    .ok()
                    .map(|(c, _)| c);
                (Side { user, token, conn }, t)
            }
        })
        .buffered(o.parallel)
        .collect()
        .await;
    let mut sides = Vec::with_capacity(o.conns);
    for (side, mut t) in opened {
        if let Ok(mut s) = shared.lock() {
            s.merge(&mut t);
        }
        sides.push(side);
    }
    let connected = sides.iter().filter(|s| s.conn.is_some()).count();
    println!(
        "connected {connected}/{} in {:.1} s",
        o.conns,
        t0.elapsed().as_secs_f64()
    );
    if connected < o.conns {
        println!(
            "  connect failures: {:?}",
            shared.lock().map(|s| s.connect_failures.clone())
        );
    }
    let after_connect = read();
    println!("  server {}", show(after_connect));

    // ---- Churn -------------------------------------------------------------------------------
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(o.secs);
    let mut tasks = Vec::with_capacity(pairs);
    let mut it = sides.into_iter();
    let mut i = 0u32;
    while let (Some(x), Some(y)) = (it.next(), it.next()) {
        // Stagger the pairs evenly over one period.
        let first = start + period * i / pairs as u32;
        tasks.push(tokio::spawn(pair_task(
            ctx.clone(),
            x,
            y,
            first,
            period,
            end,
            shared.clone(),
        )));
        i += 1;
    }
    let cpu0 = (
        pid.as_deref().and_then(proc_cpu_ticks),
        proc_cpu_ticks(&me),
        machine_ticks(),
        Instant::now(),
    );
    let mut peak = Sample::default();
    let mut last_report = (Instant::now(), 0u64, 0u64, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut secs_done = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        if let Some(s) = read() {
            peak.rss_kib = peak.rss_kib.max(s.rss_kib);
            peak.anon_kib = peak.anon_kib.max(s.anon_kib);
            peak.fds = peak.fds.max(s.fds);
        }
        secs_done += 1;
        if secs_done % o.report_every == 0 {
            let (cycles, failed, sent, recv, lost, errs, unexp) = match shared.lock() {
                Ok(s) => (
                    s.cycles,
                    s.failed_cycles,
                    s.frames_sent,
                    s.frames_received,
                    s.lost_requests() + s.lost_events(),
                    s.error_count(),
                    s.unexpected_count(),
                ),
                Err(_) => (0, 0, 0, 0, 0, 0, 0),
            };
            let dt = last_report.0.elapsed().as_secs_f64();
            let now = read();
            println!(
                "  t={:>4} s: {cycles} cycles ({:.0}/s), {failed} failed, sent {sent} ({:.0}/s), \
                 received {recv} ({:.0}/s), lost {lost}, errors {errs}, unexpected {unexp}; server \
                 {}; load average {}",
                start.elapsed().as_secs(),
                (cycles - last_report.1) as f64 / dt,
                (sent - last_report.2) as f64 / dt,
                (recv - last_report.3) as f64 / dt,
                show(now),
                loadavg()
            );
            last_report = (Instant::now(), cycles, sent, recv);
        }
    }
    // Pairs finish the cycle they are in (bounded by the step deadlines).
    let mut sides = Vec::with_capacity(o.conns);
    for task in tasks {
        match timeout_at(hard_end, task).await {
            Ok(Ok((x, y))) => {
                sides.push(x);
                sides.push(y);
            }
            Ok(Err(e)) => return Err(format!("pair task: {e}")),
            Err(_) => return Err("pair tasks did not finish before the hard deadline".into()),
        }
    }
    let churn_secs = cpu0.3.elapsed().as_secs_f64();
    let cpu1 = (
        pid.as_deref().and_then(proc_cpu_ticks),
        proc_cpu_ticks(&me),
        machine_ticks(),
    );
    if let Some(s) = read() {
        peak.rss_kib = peak.rss_kib.max(s.rss_kib);
        peak.anon_kib = peak.anon_kib.max(s.anon_kib);
        peak.fds = peak.fds.max(s.fds);
    }
    let hwm = pid.as_deref().and_then(|p| proc_kib(p, "VmHWM:"));

    // ---- Disconnect and settle ---------------------------------------------------------------
    let mut t = Tally::default();
    let t1 = Instant::now();
    let closing: Vec<Tally> = futures_util::stream::iter(sides)
        .map(|side| async move {
            let mut t = Tally::default();
            if let Some(c) = side.conn {
                c.close(&mut t).await;
            }
            t
        })
        .buffer_unordered(o.parallel)
        .collect()
        .await;
    for mut c in closing {
        t.merge(&mut c);
    }
    if let Ok(mut s) = shared.lock() {
        s.merge(&mut t);
    }
    println!(
        "all clients disconnected in {:.1} s; settling {} s",
        t1.elapsed().as_secs_f64(),
        o.settle
    );
    let mut series = Vec::new();
    for s in 0..=o.settle {
        if s > 0 {
            sleep(Duration::from_secs(1)).await;
        }
        if s % 5 == 0 || s == o.settle {
            if let Some(x) = read() {
                series.push(format!(
                    "{s}s {:.1}/{:.1}MB/{}fd",
                    x.rss_kib as f64 / 1024.0,
                    x.anon_kib as f64 / 1024.0,
                    x.fds
                ));
            }
        }
    }
    let after = read();
    println!("  settle (VmRSS/anon/fds): [{}]", series.join(", "));
    let calls = live_calls(&o.addr).await;

    // ---- Report ------------------------------------------------------------------------------
    let tally = match shared.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => return Err("tally lock poisoned".into()),
    };
    let lost_req = tally.lost_requests();
    let lost_ev = tally.lost_events();
    let errors = tally.error_count();
    let unexpected = tally.unexpected_count();
    let closed: u64 = tally.closed_by_server.values().sum();
    let connect_failures: u64 = tally.connect_failures.values().sum();
    println!("\n== results ==");
    println!(
        "call cycles: {} completed, {} failed in {churn_secs:.1} s = {:.1} cycles/s (target {:.1}); \
         {} mid-call drops resumed, {} reconnects, {} connections opened in all",
        tally.cycles,
        tally.failed_cycles,
        tally.cycles as f64 / churn_secs,
        o.rate,
        tally.resumes,
        tally.reconnects,
        tally.connects
    );
    println!(
        "frames: client sent {} ({:.0}/s), received {} ({:.0}/s, acks + events + welcomes)",
        tally.frames_sent,
        tally.frames_sent as f64 / churn_secs,
        tally.frames_received,
        tally.frames_received as f64 / churn_secs
    );
    println!("requests (sent / acked / error / lost):");
    for (k, [s, a, e]) in &tally.requests {
        println!(
            "  {k:<18} {s:>9} {a:>9} {e:>6} {:>6}",
            s.saturating_sub(a + e)
        );
    }
    println!("events (expected / received / lost):");
    for (k, [x, r]) in &tally.events {
        println!("  {k:<22} {x:>9} {r:>9} {:>6}", x.saturating_sub(*r));
    }
    println!(
        "LOST: {} ({lost_req} requests without an answer, {lost_ev} events missing); errors {errors} \
         {:?}; unexpected frames {unexpected} {:?}; connections ended by the server {closed} {:?}; \
         connect failures {connect_failures}",
        lost_req + lost_ev,
        tally.errors,
        tally.unexpected,
        tally.closed_by_server
    );
    if !tally.connect_failures.is_empty() {
        let mut reasons: Vec<_> = tally.connect_failures.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        println!("connect failures by reason (most frequent first):");
        for (why, n) in reasons.into_iter().take(8) {
            println!("  {n:>7} {why}");
        }
    }
    if tally.resync_hangups + tally.resync_frames > 0 {
        println!(
            "resyncs after failed cycles: {} leftover calls hung up, {} frames discarded",
            tally.resync_hangups, tally.resync_frames
        );
    }
    let mut setup = tally.setup_us.clone();
    setup.sort_unstable();
    println!(
        "call setup (call-initiate sent → call-accept at the caller): p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms over {} calls",
        percentile(&setup, 0.5) as f64 / 1e3,
        percentile(&setup, 0.99) as f64 / 1e3,
        setup.last().copied().unwrap_or(0) as f64 / 1e3,
        setup.len()
    );
    let sorted = |v: &[u32]| {
        let mut v: Vec<u64> = v.iter().map(|&x| u64::from(x)).collect();
        v.sort_unstable();
        v
    };
    let (acks, events) = (sorted(&tally.ack_us), sorted(&tally.event_us));
    let quantiles = |v: &[u64]| {
        json!({
            "p50": percentile(v, 0.5) as f64 / 1e3,
            "p99": percentile(v, 0.99) as f64 / 1e3,
            "p999": percentile(v, 0.999) as f64 / 1e3,
            "max": v.last().copied().unwrap_or(0) as f64 / 1e3,
            "n": v.len(),
        })
    };
    let (ack_q, event_q) = (quantiles(&acks), quantiles(&events));
    for (what, q) in [
        ("request → ack (round trip)", &ack_q),
        ("request → event at the other side", &event_q),
    ] {
        println!(
            "latency {what}: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms over {}",
            q["p50"], q["p99"], q["p999"], q["max"], q["n"]
        );
    }
    let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.0}%", (b - a) as f64 / churn_secs),
        _ => "?".into(),
    };
    let machine = match (cpu0.2, cpu1.2) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            format!(
                "{:.0}%",
                (b1 - b0) as f64 / (t1 - t0) as f64 * cores * 100.0
            )
        }
        _ => "?".into(),
    };
    println!(
        "CPU during the churn (100% = one core): server {}, soak client {}, whole machine {machine}",
        pct(cpu0.0, cpu1.0),
        pct(cpu0.1, cpu1.1)
    );
    let mut ok = lost_req + lost_ev == 0
        && errors == 0
        && unexpected == 0
        && closed == 0
        && connect_failures == 0
        && tally.failed_cycles == 0
        && connected == o.conns;
    println!(
        "server (this client's readings): after the warm-up {}; peak {} (VmHWM {}); after {} s \
         settle {}",
        show(baseline),
        peak,
        kib(hwm),
        o.settle,
        show(after)
    );
    if let (Some(b), Some(a)) = (baseline, after) {
        let change = |b: u64, a: u64| (a as f64 / b.max(1) as f64 - 1.0) * 100.0;
        println!(
            "  after vs after the warm-up: VmRSS {:+.1}% (anon {:+.1}%), fds {:+.1}% \
             (run.sh judges against its own reading at startup)",
            change(b.rss_kib, a.rss_kib),
            change(b.anon_kib, a.anon_kib),
            change(b.fds, a.fds)
        );
    }
    match &calls {
        Ok(c) => {
            let live =
                c.get("ringing").copied().unwrap_or(0) + c.get("active").copied().unwrap_or(0);
            println!("calls in the database by status after the run: {c:?}");
            if live != 0 {
                println!("  {live} calls still ringing or active");
                ok = false;
            }
        }
        Err(e) => {
            println!("/metrics: {e}");
            ok = false;
        }
    }
    if !tally.problems.is_empty() {
        println!("first problems:");
        for p in &tally.problems {
            println!("  {p}");
        }
    }
    let mut result = json!({
        "conns": o.conns, "secs": o.secs, "rate_target": o.rate, "candidates": o.candidates,
        "churn_secs": churn_secs,
        "cycles": tally.cycles, "failed_cycles": tally.failed_cycles,
        "cycles_per_s": tally.cycles as f64 / churn_secs,
        "expected": tally.expected(), "received": tally.received(),
        "lost": lost_req + lost_ev, "lost_requests": lost_req, "lost_events": lost_ev,
        "errors": errors, "unexpected": unexpected, "closed_by_server": closed,
        "connect_failures": connect_failures,
        "frames_sent": tally.frames_sent, "frames_received": tally.frames_received,
        "msgs_per_s": (tally.frames_sent + tally.frames_received) as f64 / churn_secs,
        "requests_sent": tally.requests_sent(),
        "resumes": tally.resumes, "reconnects": tally.reconnects, "connects": tally.connects,
        "setup_p50_ms": percentile(&setup, 0.5) as f64 / 1e3,
        "setup_p99_ms": percentile(&setup, 0.99) as f64 / 1e3,
        "ack_ms": ack_q, "event_ms": event_q,
        "server_cpu_pct_churn": match (cpu0.0, cpu1.0) {
            (Some(a), Some(b)) => json!((b - a) as f64 / churn_secs),
            _ => Value::Null,
        },
        "rss_warm_kib": baseline.map(|s| s.rss_kib), "fds_warm": baseline.map(|s| s.fds),
        "anon_warm_kib": baseline.map(|s| s.anon_kib),
        "rss_peak_kib": peak.rss_kib, "anon_peak_kib": peak.anon_kib, "fds_peak": peak.fds,
        "vmhwm_kib": hwm,
        "rss_after_kib": after.map(|s| s.rss_kib), "fds_after": after.map(|s| s.fds),
        "anon_after_kib": after.map(|s| s.anon_kib),
        "calls_by_status": calls.as_ref().ok(),
        "ok": ok,
    });
    // (More keys than one json! invocation expands.)
    result["resync_hangups"] = json!(tally.resync_hangups);
    result["resync_frames"] = json!(tally.resync_frames);
    println!("RESULT {result}");
    println!("{}", if ok { "SOAK PASSED" } else { "SOAK FAILED" });
    Ok(ok)
}
