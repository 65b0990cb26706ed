//! Signaling load benchmark for `/rtc` and for Socket.IO servers doing seed 000 signaling
//! (signalbox's `/socket.io/`, the Node anchor in `bench/signaling/node/`); run on demand, not
//! part of the tests. `bench/signaling/run.sh` builds it, starts the servers one after another
//! and passes the arguments; the same client drives all of them.
//!
//! Phase 1 (`idle`): N authenticated idle connections (each waits for its `welcome`, or for the
//! Socket.IO CONNECT answer); the server's VmRSS is read from /proc before and after, giving
//! memory per idle connection.
//! Phase 2 (`load`): P 1:1 calls are set up the way a client does (`/rtc`: `call-initiate` with
//! an offer → ack, `call-answer`; Socket.IO: `webrtc:call` → ack with the callId,
//! `webrtc:incoming-call` at the callee, the callee's `webrtc:offer`, the caller's
//! `webrtc:answer`), then for each rate R in `--rates`, in turn, the callers send ICE candidates
//! (`ice-candidate` / `webrtc:ice-candidate`, about 350 bytes a frame) at a total of R msg/s for
//! S seconds, each carrying its send time (ns since one `Instant` shared by both sides, same
//! process); the callees record receive time minus send time. Reports p50/p99/p99.9/max, the
//! achieved rate, losses, and the CPU time the server and this client used, also as server CPU
//! seconds per 1000 messages. Each phase and each rate ends with a `RESULT {json}` line.
//!
//! `--report FILE` prints the side-by-side table (markdown, with ratios to the Node anchor) from
//! a file of `LABEL {json}` lines (LABEL: node, socketio or rtc; the json from RESULT lines).
//! `--report-runs FILE` prints one row per load round instead, from `LABEL {json}` lines whose
//! LABEL is free text (the setup, e.g. in `bench/cluster/run.sh`).
//!
//! Several servers (`bench/cluster/run.sh`): `--callee-addr` connects the callees to another
//! server than the callers (default: `--addr`, all on one), so every forwarded message crosses
//! from one node to the other; `--server-pid` takes a comma-separated list whose CPU time is
//! summed (memory is read from the first); `--aux-pid` names further processes (e.g. Redis)
//! whose CPU time is reported apart, also per 1000 messages.
//!
//! Tokens are minted here from `<data-dir>/jwt-secret` (the secret the server generated, or the
//! one run.sh gave the Node anchor), so no process is spawned per token. Every loop is bounded in
//! count and time; only the given address (loopback in run.sh) is contacted.
//!
//! ```text
//! rtc_bench --addr 127.0.0.1:PORT --data-dir DIR [--server-pid PID[,PID]] [--transport rtc|socketio]
//!           [--phases idle,load] [--conns 10000] [--pairs 200] [--rates 10000[,20000]]
//!           [--secs 10] [--warmup 1] [--parallel 200] [--threads T]
//!           [--callee-addr 127.0.0.1:PORT] [--aux-pid PID[,PID]]
//! rtc_bench --report RESULTS_FILE
//! rtc_bench --report-runs RESULTS_FILE
//! ```
#![allow(clippy::disallowed_methods)] // benchmarks are an edge: they read the clock

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};
use tokio::time::{timeout_at, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

mod common;
#[path = "common/sio.rs"]
mod sio;
use common::{
    connect, machine_ticks, next_json, percentile, proc_cpu_ticks, proc_kib, Minter, Res, Ws,
};

type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;
type Stream = SplitStream<Ws>;
/// Above this per-connection rate the server's limiter (100/s sustained, burst 300) interferes.
const MAX_PER_SENDER: f64 = 90.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Rtc,
    SocketIo,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Rtc => "rtc",
            Transport::SocketIo => "socketio",
        }
    }
}

struct Opts {
    addr: String,
    data_dir: PathBuf,
    /// The servers whose CPU time is summed (memory: the first's).
    server_pids: Vec<u32>,
    /// Where the callees connect (empty: `addr`).
    callee_addr: String,
    /// Further processes whose CPU time is reported apart (e.g. Redis).
    aux_pids: Vec<u32>,
    transport: Transport,
    idle: bool,
    load: bool,
    conns: usize,
    pairs: usize,
    rates: Vec<u64>,
    secs: u64,
    warmup: u64,
    parallel: usize,
    threads: usize,
    report: Option<PathBuf>,
    report_runs: Option<PathBuf>,
}

fn usage() -> String {
    "usage: rtc_bench --addr HOST:PORT --data-dir DIR [--server-pid PID[,PID...]] \
     [--transport rtc|socketio] [--phases idle,load] [--conns N] [--pairs P] \
     [--rates MSG_PER_S[,MSG_PER_S...]] (or --rate R) [--secs S] [--warmup S] [--parallel K] \
     [--threads T (client runtime workers; 0 = one per core)] \
     [--callee-addr HOST:PORT (default: --addr)] [--aux-pid PID[,PID...]]\n\
     \x20      rtc_bench --report RESULTS_FILE\n\
     \x20      rtc_bench --report-runs RESULTS_FILE"
        .to_string()
}

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        addr: String::new(),
        data_dir: PathBuf::new(),
        server_pids: Vec::new(),
        callee_addr: String::new(),
        aux_pids: Vec::new(),
        transport: Transport::Rtc,
        idle: true,
        load: true,
        conns: 10_000,
        pairs: 0,
        rates: vec![10_000],
        secs: 10,
        warmup: 1,
        parallel: 200,
        threads: 0,
        report: None,
        report_runs: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value\n{}", usage()))?;
        let num = |v: &str| -> Res<u64> { v.parse().map_err(|e| format!("{flag} {v}: {e}")) };
        match flag.as_str() {
            "--addr" => o.addr = value,
            "--data-dir" => o.data_dir = PathBuf::from(value),
            "--server-pid" | "--aux-pid" => {
                let pids = value
                    .split(',')
                    .map(|p| num(p.trim()).map(|p| p as u32))
                    .collect::<Res<Vec<_>>>()?;
                if flag == "--server-pid" {
                    o.server_pids = pids;
                } else {
                    o.aux_pids = pids;
                }
            }
            "--callee-addr" => o.callee_addr = value,
            "--transport" => {
                o.transport = match value.as_str() {
                    "rtc" => Transport::Rtc,
                    "socketio" => Transport::SocketIo,
                    _ => return Err(format!("--transport {value}: rtc or socketio")),
                }
            }
            "--phases" => {
                o.idle = false;
                o.load = false;
                for p in value.split(',') {
                    match p {
                        "idle" => o.idle = true,
                        "load" => o.load = true,
                        _ => return Err(format!("--phases {value}: idle, load or idle,load")),
                    }
                }
            }
            "--conns" => o.conns = num(&value)? as usize,
            "--pairs" => o.pairs = num(&value)? as usize,
            "--rate" | "--rates" => {
                o.rates = value
                    .split(',')
                    .map(|r| num(r.trim()))
                    .collect::<Res<Vec<_>>>()?
            }
            "--secs" => o.secs = num(&value)?,
            "--warmup" => o.warmup = num(&value)?,
            "--parallel" => o.parallel = num(&value)?.max(1) as usize,
            "--threads" => o.threads = num(&value)? as usize,
            "--report" => o.report = Some(PathBuf::from(value)),
            "--report-runs" => o.report_runs = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    if o.report.is_some() || o.report_runs.is_some() {
        return Ok(o);
    }
    if o.addr.is_empty() || o.data_dir.as_os_str().is_empty() {
        return Err(usage());
    }
    if o.callee_addr.is_empty() {
        o.callee_addr = o.addr.clone();
    }
    if o.rates.is_empty() || o.rates.contains(&0) {
        return Err("--rates: one or more rates above 0".into());
    }
    let max_rate = o.rates.iter().copied().max().unwrap_or(1);
    if o.pairs == 0 {
        // Keep each sender at or below 50 msg/s, and at least 200 pairs.
        o.pairs = (max_rate.div_ceil(50) as usize).max(200);
    }
    if o.secs == 0 || o.secs > 600 || o.warmup >= o.secs {
        return Err("--secs must be 1..=600 and greater than --warmup".into());
    }
    if max_rate as f64 / o.pairs as f64 > MAX_PER_SENDER {
        return Err(format!(
            "{max_rate} msg/s over {} pairs is over {MAX_PER_SENDER} msg/s per connection: the \
             server rate-limits at 100/s; use more --pairs",
            o.pairs
        ));
    }
    Ok(o)
}

/// How long a call-setup step may take (one deadline per wait; skipped frames do not extend it).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits for a frame of `kind` (and `id`, when given), skipping others, until one deadline.
async fn wait_for(ws: &mut Ws, kind: &str, id: Option<u64>) -> Res<Value> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    for _ in 0..100 {
        let v = next_json(ws, deadline, kind).await?;
        if v["type"] == "error" {
            return Err(format!("server error while waiting for {kind}: {v}"));
        }
        if v["type"] == kind && id.is_none_or(|id| v["id"] == id) {
            return Ok(v);
        }
    }
    Err(format!("no {kind} within 100 frames"))
}

/// Waits for the Socket.IO ack `id`, skipping other packets (pings are answered), until one
/// deadline; an ack with `ok: false` or a `webrtc:error` event is an error.
async fn sio_ack(ws: &mut Ws, id: u64, what: &str) -> Res<Value> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    for _ in 0..100 {
        match sio::next_packet(ws, deadline, what).await? {
            sio::Packet::Ack { id: got, payload } if got == id => {
                if payload["ok"] == false {
                    return Err(format!("{what} refused: {payload}"));
                }
                return Ok(payload);
            }
            sio::Packet::Event { name, payload } if name == "webrtc:error" => {
                return Err(format!("webrtc:error while waiting for {what}: {payload}"))
            }
            sio::Packet::ConnectError(e) => return Err(format!("disconnected: {e}")),
            _ => continue,
        }
    }
    Err(format!("no ack for {what} within 100 packets"))
}

/// Waits for the Socket.IO event `name`, skipping other packets, until one deadline.
async fn sio_wait(ws: &mut Ws, name: &str) -> Res<Value> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    for _ in 0..100 {
        match sio::next_packet(ws, deadline, name).await? {
            sio::Packet::Event { name: got, payload } if got == name => return Ok(payload),
            sio::Packet::Event { name: got, payload } if got == "webrtc:error" => {
                return Err(format!("webrtc:error while waiting for {name}: {payload}"))
            }
            sio::Packet::ConnectError(e) => return Err(format!("disconnected: {e}")),
            _ => continue,
        }
    }
    Err(format!("no {name} within 100 packets"))
}

async fn send_json(ws: &mut Ws, v: Value) -> Res<()> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// One connection, authenticated and ready (`welcome` received, or Socket.IO connected).
async fn open(t: Transport, addr: &str, token: &str) -> Res<Ws> {
    match t {
        Transport::Rtc => connect(addr, token).await.map(|(ws, _)| ws),
        Transport::SocketIo => sio::connect(addr, token).await.map(|(ws, _)| ws),
    }
}

/// Opens `tokens.len()` connections, at most `parallel` handshakes at a time.
async fn connect_many(
    t: Transport,
    addr: &str,
    tokens: Vec<String>,
    parallel: usize,
) -> Vec<Res<Ws>> {
    let targets = tokens.into_iter().map(|tok| (addr.to_string(), tok));
    connect_each(t, targets.collect(), parallel).await
}

/// Opens one connection per (address, token), in order, at most `parallel` handshakes at a time.
async fn connect_each(
    t: Transport,
    targets: Vec<(String, String)>,
    parallel: usize,
) -> Vec<Res<Ws>> {
    futures_util::stream::iter(targets)
        .map(|(addr, tok)| async move { open(t, &addr, &tok).await })
        .buffered(parallel)
        .collect()
        .await
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// A Chrome-like audio+video offer (the frame carrying it is about 2.4 KB).
fn sdp(kind: &str) -> String {
    let setup = if kind == "offer" { "actpass" } else { "active" };
    let ice = "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:\
        24:AE:ED:AD:30:BC:BD:F1:9C:02\r\n";
    let msid = "a=msid:5b0f4c2e-6a3d-4d1e-9f57-2c8e1a7b3d90 9d7c2e61-0b8f-4a3c-b5d2-7e1f4a6c8b20";
    let audio = format!(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0 8 110\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n{ice}a=setup:{setup}\r\na=mid:0\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n{msid}\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:110 telephone-event/48000\r\na=ssrc:3570614608 cname:4TOk42mSjXCkVIa6\r\n"
    );
    let video = format!(
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n{ice}a=setup:{setup}\r\na=mid:1\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n{msid}\r\n\
         a=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\n\
         a=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 nack\r\n\
         a=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
         a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=ssrc-group:FID 2231627014 632943048\r\n\
         a=ssrc:2231627014 cname:4TOk42mSjXCkVIa6\r\na=ssrc:632943048 cname:4TOk42mSjXCkVIa6\r\n"
    );
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\n\
         a=msid-semantic: WMS 5b0f4c2e-6a3d-4d1e-9f57-2c8e1a7b3d90\r\n{audio}{video}"
    )
}

/// Sets up one `/rtc` call: the caller invites with an offer, the callee answers (which accepts
/// the ringing call). Returns the call id.
async fn setup_call_rtc(caller: &mut Ws, callee: &mut Ws, callee_id: &str) -> Res<String> {
    send_json(
        caller,
        json!({"type":"call-initiate","id":1,"to":callee_id,"callType":"video",
               "sdp":{"type":"offer","sdp":sdp("offer")}}),
    )
    .await?;
    let ack = wait_for(caller, "ack", Some(1)).await?;
    let call_id = ack["callId"]
        .as_str()
        .ok_or_else(|| format!("ack without callId: {ack}"))?
        .to_string();
    let ring = wait_for(callee, "call-initiate", None).await?;
    if ring["callId"] != call_id.as_str() {
        return Err(format!("callee got another call: {ring}"));
    }
    send_json(
        callee,
        json!({"type":"call-answer","id":2,"callId":call_id,
               "sdp":{"type":"answer","sdp":sdp("answer")}}),
    )
    .await?;
    wait_for(callee, "ack", Some(2)).await?;
    wait_for(caller, "call-answer", None).await?;
    Ok(call_id)
}

/// Sets up one call over Socket.IO as seed 000 describes: `webrtc:call` (acked with the
/// callId), `webrtc:incoming-call` at the callee, whose `webrtc:offer` accepts, and the
/// caller's `webrtc:answer`. Returns the call id.
async fn setup_call_sio(
    caller: &mut Ws,
    callee: &mut Ws,
    caller_id: &str,
    callee_id: &str,
) -> Res<String> {
    let call = json!({"to": callee_id, "callType": "video"});
    sio::send(caller, sio::event("webrtc:call", &call, Some(1))).await?;
    let ack = sio_ack(caller, 1, "webrtc:call").await?;
    let call_id = ack["callId"]
        .as_str()
        .ok_or_else(|| format!("webrtc:call ack without callId: {ack}"))?
        .to_string();
    let ring = sio_wait(callee, "webrtc:incoming-call").await?;
    if ring["callId"] != call_id.as_str() {
        return Err(format!("callee got another call: {ring}"));
    }
    let offer = json!({"to": caller_id, "callId": call_id,
                       "sdp": {"type": "offer", "sdp": sdp("offer")}});
    sio::send(callee, sio::event("webrtc:offer", &offer, Some(2))).await?;
    sio_ack(callee, 2, "webrtc:offer").await?;
    sio_wait(caller, "webrtc:offer").await?;
    let answer = json!({"to": callee_id, "callId": call_id,
                        "sdp": {"type": "answer", "sdp": sdp("answer")}});
    sio::send(caller, sio::event("webrtc:answer", &answer, Some(3))).await?;
    sio_ack(caller, 3, "webrtc:answer").await?;
    sio_wait(callee, "webrtc:answer").await?;
    Ok(call_id)
}

/// The ICE username fragment in the candidates (Firefox-style, 8 hex digits).
const UFRAG: &str = "3e1f4a6c";

/// One ice-candidate frame: a server-reflexive candidate as Chrome writes it, whose foundation
/// is the sequence number and whose `network-id` carries the send time (ns); ~350 bytes.
fn candidate_frame(t: Transport, call_id: &str, to: &str, seq: u64, sent_ns: u64) -> String {
    let port = 40000 + seq % 20000;
    let cand = format!(
        "candidate:{seq} 1 udp 1686052607 198.51.100.{} {port} typ srflx raddr 10.0.{}.{} \
         rport {port} generation 0 ufrag {UFRAG} network-id {sent_ns} network-cost 10",
        seq % 250 + 1,
        seq / 250 % 250,
        seq % 250 + 2
    );
    let init = format!(
        r#"{{"candidate":"{cand}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"{UFRAG}"}}"#
    );
    match t {
        Transport::Rtc => format!(
            r#"{{"type":"ice-candidate","callId":"{call_id}","to":"{to}","candidate":{init}}}"#
        ),
        Transport::SocketIo => format!(
            r#"42["webrtc:ice-candidate",{{"to":"{to}","callId":"{call_id}","candidate":{init}}}]"#
        ),
    }
}

/// The sequence number and send time in a forwarded candidate, if `text` is one.
fn stamp(t: Transport, text: &str) -> Option<(u64, u64)> {
    let is_candidate = match t {
        Transport::Rtc => text.contains(r#""type":"ice-candidate""#),
        Transport::SocketIo => text.starts_with(r#"42["webrtc:ice-candidate""#),
    };
    if !is_candidate {
        return None;
    }
    let digits = |s: &str| -> Option<u64> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let rest = &text[text.find("\"candidate:")? + "\"candidate:".len()..];
    let seq = digits(rest)?;
    let sent = digits(&rest[rest.find(" network-id ")? + " network-id ".len()..])?;
    Some((seq, sent))
}

/// Answers an Engine.IO ping on a Socket.IO connection; false if the socket is gone.
async fn pong(sink: &Sink) -> bool {
    sink.lock()
        .await
        .send(Message::text(sio::PONG))
        .await
        .is_ok()
}

#[derive(Default)]
struct SenderStats {
    sent: u64,
    late_ns: u64,
}

/// What one sender sends: its call, its peer and the round's timing.
struct Plan {
    transport: Transport,
    call_id: String,
    to: String,
    base: Instant,
    start: tokio::time::Instant,
    period: Duration,
    count: u64,
    hard_stop: tokio::time::Instant,
}

/// Sends `count` ice-candidates at `period` intervals from `start`, stamping send times.
async fn sender(sink: Sink, p: Plan) -> SenderStats {
    let mut stats = SenderStats::default();
    let mut tick = tokio::time::interval_at(p.start, p.period);
    // Burst: a sender that fell behind catches up, so the offered rate stays the target.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for seq in 0..p.count {
        let due = tick.tick().await;
        if tokio::time::Instant::now() >= p.hard_stop {
            break;
        }
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        stats.late_ns = stats.late_ns.max(late.as_nanos() as u64);
        let sent_ns = p.base.elapsed().as_nanos() as u64;
        let frame = candidate_frame(p.transport, &p.call_id, &p.to, seq, sent_ns);
        if sink.lock().await.send(Message::text(frame)).await.is_err() {
            break;
        }
        stats.sent += 1;
    }
    stats
}

#[derive(Default)]
struct AckStats {
    acks: u64,
    errors: BTreeMap<String, u64>,
}

/// Reads and discards what comes back on a sender socket (so buffers never fill) until told to
/// stop, counting acks and errors and answering Socket.IO pings.
async fn ack_reader(
    t: Transport,
    mut stream: Stream,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
    until: tokio::time::Instant,
) -> (Stream, AckStats) {
    let mut stats = AckStats::default();
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            m = timeout_at(until, stream.next()) => match m {
                Ok(Some(Ok(m))) => m,
                _ => break,
            },
        };
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        match t {
            Transport::Rtc => {
                if text.contains(r#""type":"ack""#) {
                    stats.acks += 1;
                } else if let Ok(v) = serde_json::from_str::<Value>(text) {
                    if v["type"] == "error" {
                        let code = v["code"].as_str().unwrap_or("?").to_string();
                        *stats.errors.entry(code).or_default() += 1;
                    }
                }
            }
            Transport::SocketIo => match sio::parse(text) {
                sio::Packet::Ping if !pong(&sink).await => break,
                sio::Packet::Ack { .. } => stats.acks += 1,
                sio::Packet::Event { name, payload } if name == "webrtc:error" => {
                    let code = payload["error"]["code"].as_str().unwrap_or("?").to_string();
                    *stats.errors.entry(code).or_default() += 1;
                }
                _ => {}
            },
        }
    }
    (stream, stats)
}

struct Received {
    /// (send time, latency), ns.
    latencies_ns: Vec<(u64, u64)>,
    received: u64,
    max_seq_gap: u64,
}

/// Records receive time minus send time for each forwarded ice-candidate, until `expected`
/// have come or `until`; answers Socket.IO pings.
async fn latency_reader(
    t: Transport,
    mut stream: Stream,
    sink: Sink,
    base: Instant,
    measure_from_ns: u64,
    expected: u64,
    until: tokio::time::Instant,
) -> (Stream, Received) {
    let mut r = Received {
        latencies_ns: Vec::with_capacity(1024),
        received: 0,
        max_seq_gap: 0,
    };
    let mut next_seq = 0u64;
    while r.received < expected {
        let Ok(Some(Ok(msg))) = timeout_at(until, stream.next()).await else {
            break;
        };
        let now_ns = base.elapsed().as_nanos() as u64;
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if t == Transport::SocketIo && text == "2" {
            if !pong(&sink).await {
                break;
            }
            continue;
        }
        let Some((seq, sent)) = stamp(t, text) else {
            continue;
        };
        r.received += 1;
        r.max_seq_gap = r.max_seq_gap.max(seq.saturating_sub(next_seq));
        next_seq = seq + 1;
        if sent >= measure_from_ns {
            r.latencies_ns.push((sent, now_ns.saturating_sub(sent)));
        }
    }
    (stream, r)
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some((path, f)) = opts
        .report
        .as_ref()
        .map(|p| (p, report as fn(&std::path::Path) -> Res<String>))
        .or_else(|| opts.report_runs.as_ref().map(|p| (p, report_runs as _)))
    {
        match f(path) {
            Ok(table) => print!("{table}"),
            Err(e) => {
                eprintln!("rtc_bench: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let rt = common::runtime("rtc_bench", opts.threads);
    if let Err(e) = rt.block_on(run(opts)) {
        eprintln!("rtc_bench: {e}");
        std::process::exit(1);
    }
}

/// Server, client and machine CPU readings (clock ticks) at one moment.
struct CpuMark {
    server: Option<u64>,
    /// The `--aux-pid` processes together.
    aux: Option<u64>,
    client: Option<u64>,
    machine: Option<MachineTicks>,
    at: Instant,
}

/// The whole machine's CPU time in clock ticks, from /proc/stat's first line: busy (user,
/// nice, system, irq, softirq and steal), of which steal (time the hypervisor gave to other
/// guests), and the total with idle.
#[derive(Clone, Copy)]
struct MachineTicks {
    busy: u64,
    steal: u64,
    total: u64,
}

fn machine_split() -> Option<MachineTicks> {
    let (busy, total) = machine_ticks()?;
    // The eighth number of the first line: user nice system idle iowait irq softirq steal.
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let steal = stat
        .lines()
        .next()?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    Some(MachineTicks { busy, steal, total })
}

/// CPU use between two marks, in % of one core.
struct CpuUse {
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<f64>,
    /// The machine's busy time less the server's, the client's and steal.
    others: Option<f64>,
    steal: Option<f64>,
}

impl CpuMark {
    fn now(server_pids: &[String], aux_pids: &[String], me: &str) -> CpuMark {
        CpuMark {
            server: ticks_of(server_pids),
            aux: ticks_of(aux_pids),
            client: proc_cpu_ticks(me),
            machine: machine_split(),
            at: Instant::now(),
        }
    }
}

/// The CPU time of all of `pids` together, in clock ticks; `None` if there are none or one is
/// gone.
fn ticks_of(pids: &[String]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| proc_cpu_ticks(p)).sum()
}

/// The machine's cores as /proc/stat counts them (its `cpuN` lines), which its first line sums.
/// Not `available_parallelism`: that is this process's affinity, one core when pinned.
fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.strip_prefix("cpu")
                        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// CPU use between two marks. Tasks are charged the softirq work done in their context (tick
/// accounting), so loopback TCP is mostly in the server's and the client's figures.
fn cpu_between(a: &CpuMark, b: &CpuMark) -> CpuUse {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let pct = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / 100.0 / secs * 100.0),
        _ => None,
    };
    let server = pct(a.server, b.server);
    let client = pct(a.client, b.client);
    let (machine, steal) = match (a.machine, b.machine) {
        (Some(m0), Some(m1)) if m1.total > m0.total => {
            let scale = machine_cores() as f64 * 100.0 / (m1.total - m0.total) as f64;
            (
                Some(m1.busy.saturating_sub(m0.busy) as f64 * scale),
                Some(m1.steal.saturating_sub(m0.steal) as f64 * scale),
            )
        }
        _ => (None, None),
    };
    let others = match (machine, steal, server, client) {
        (Some(m), Some(st), Some(s), Some(c)) => Some((m - st - s - c).max(0.0)),
        _ => None,
    };
    CpuUse {
        server,
        client,
        machine,
        others,
        steal,
    }
}

async fn run(o: Opts) -> Res<()> {
    let minter = Minter::from_data_dir(&o.data_dir)?;
    let pids: Vec<String> = o.server_pids.iter().map(u32::to_string).collect();
    let aux_pids: Vec<String> = o.aux_pids.iter().map(u32::to_string).collect();
    let rss = |field: &str| pids.first().and_then(|p| proc_kib(p, field));
    let me = std::process::id().to_string();
    let t = o.transport;
    println!(
        "transport {}; frames: candidate {} bytes, offer {} bytes",
        t.name(),
        candidate_frame(
            t,
            "5f0c8a52-3b1e-4c8e-9a57-0d2b8f6c1e11",
            "callee-100",
            1234,
            1 << 40
        )
        .len(),
        match t {
            Transport::Rtc => json!({"type":"call-initiate","id":1,"to":"callee-100",
                "callType":"video","sdp":{"type":"offer","sdp":sdp("offer")}})
            .to_string(),
            Transport::SocketIo => sio::event(
                "webrtc:offer",
                &json!({"to":"caller-100","callId":"5f0c8a52-3b1e-4c8e-9a57-0d2b8f6c1e11",
                        "sdp":{"type":"offer","sdp":sdp("offer")}}),
                Some(2)
            ),
        }
        .len()
    );

    // One warm-up connection first, so one-time allocations (runtime, SQLite pages, TLS-free
    // HTTP stack) are in the "before" figure rather than charged to the idle connections.
    let warm = open(t, &o.addr, &minter.token("warmup")?).await?;
    let (warm_sink, warm_stream) = warm.split();
    let warm_sink: Sink = Arc::new(Mutex::new(warm_sink));
    let (_stop_warm, stop_rx) = watch::channel(false);
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let warm_task = tokio::spawn(ack_reader(t, warm_stream, warm_sink, stop_rx, far));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let phase1_start = Instant::now();
    let idle_closed = Arc::new(AtomicU64::new(0));

    // ---- Phase 1: idle connections -------------------------------------------------------
    if o.idle && o.conns > 0 {
        let rss_before = rss("VmRSS:");
        println!(
            "phase 1: {} idle connections ({} handshakes in flight); server VmRSS before: {} KiB",
            o.conns,
            o.parallel,
            rss_before.map_or("?".into(), |v| v.to_string())
        );
        let idle_tokens = (0..o.conns)
            .map(|i| minter.token(&format!("idle-{i}")))
            .collect::<Res<Vec<_>>>()?;
        let started = Instant::now();
        let conns = connect_many(t, &o.addr, idle_tokens, o.parallel).await;
        let connect_secs = started.elapsed().as_secs_f64();
        let mut idle = Vec::with_capacity(conns.len());
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        for c in conns {
            match c {
                Ok(ws) => idle.push(ws),
                Err(e) => *failures.entry(e).or_default() += 1,
            }
        }
        let opened = idle.len();
        // Idle connections keep being read, so the server's pings are answered (silence =
        // close): tungstenite answers WebSocket pings, Engine.IO pings are answered here.
        for mut ws in idle {
            let closed = idle_closed.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if t == Transport::SocketIo
                        && matches!(&msg, Message::Text(x) if x.as_str() == "2")
                        && ws.send(Message::text(sio::PONG)).await.is_err()
                    {
                        break;
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = rss("VmRSS:");
        println!(
            "  opened {opened}/{} in {connect_secs:.1} s ({:.0}/s); failures: {failures:?}",
            o.conns,
            opened as f64 / connect_secs
        );
        let per_conn = match (rss_before, rss_after) {
            (Some(b), Some(a)) if opened > 0 => Some(a.saturating_sub(b) as f64 / opened as f64),
            _ => None,
        };
        println!(
            "  server VmRSS after: {} KiB → {} KiB per idle connection; bench client VmRSS {} KiB",
            rss_after.map_or("?".into(), |v| v.to_string()),
            per_conn.map_or("?".into(), |v| format!("{v:.1}")),
            proc_kib(&me, "VmRSS:").unwrap_or(0)
        );
        let result = json!({
            "phase": "idle",
            "transport": t.name(),
            "conns_target": o.conns,
            "conns_opened": opened,
            "connect_secs": connect_secs,
            "failures": failures.values().sum::<usize>(),
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "kib_per_idle_conn": per_conn,
        });
        println!("RESULT {result}");
    }

    // ---- Phase 2: forward latency -----------------------------------------------------------
    if !o.load {
        println!(
            "  idle connections closed by the server: {}",
            idle_closed.load(Ordering::Relaxed)
        );
        warm_task.abort();
        return Ok(());
    }
    println!(
        "phase 2: {} calls ({} connections), rates {:?} msg/s in turn, {} s each (first {} s \
         not measured){}",
        o.pairs,
        o.pairs * 2,
        o.rates,
        o.secs,
        o.warmup,
        if o.idle && o.conns > 0 {
            ", with the idle connections still open"
        } else {
            ""
        }
    );
    if o.callee_addr != o.addr {
        println!("  callers on {}, callees on {}", o.addr, o.callee_addr);
    }
    let mut targets = Vec::with_capacity(o.pairs * 2);
    for i in 0..o.pairs {
        targets.push((o.addr.clone(), minter.token(&format!("caller-{i}"))?));
        targets.push((o.callee_addr.clone(), minter.token(&format!("callee-{i}"))?));
    }
    let mut socks = connect_each(t, targets, o.parallel)
        .await
        .into_iter()
        .collect::<Res<Vec<_>>>()?
        .into_iter();
    let mut pairs = Vec::with_capacity(o.pairs);
    for i in 0..o.pairs {
        let (Some(caller), Some(callee)) = (socks.next(), socks.next()) else {
            return Err("missing connections".into());
        };
        pairs.push((i, caller, callee));
    }
    let started = Instant::now();
    let calls: Vec<Res<_>> = futures_util::stream::iter(pairs)
        .map(|(i, mut caller, mut callee)| async move {
            let (caller_id, callee_id) = (format!("caller-{i}"), format!("callee-{i}"));
            let id = match t {
                Transport::Rtc => setup_call_rtc(&mut caller, &mut callee, &callee_id).await?,
                Transport::SocketIo => {
                    setup_call_sio(&mut caller, &mut callee, &caller_id, &callee_id).await?
                }
            };
            Ok((id, callee_id, caller, callee))
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let calls = calls.into_iter().collect::<Res<Vec<_>>>()?;
    println!(
        "  {} calls set up in {:.2} s",
        calls.len(),
        started.elapsed().as_secs_f64()
    );
    struct Leg {
        call_id: String,
        to: String,
        caller_sink: Sink,
        caller_stream: Option<Stream>,
        callee_sink: Sink,
        callee_stream: Option<Stream>,
    }
    let mut legs: Vec<Leg> = calls
        .into_iter()
        .map(|(call_id, to, caller, callee)| {
            let (cs, cr) = caller.split();
            let (es, er) = callee.split();
            Leg {
                call_id,
                to,
                caller_sink: Arc::new(Mutex::new(cs)),
                caller_stream: Some(cr),
                callee_sink: Arc::new(Mutex::new(es)),
                callee_stream: Some(er),
            }
        })
        .collect();

    for &rate in &o.rates {
        let per_sender = rate as f64 / o.pairs as f64;
        println!("rate {rate} msg/s ({per_sender:.1}/s per caller):");
        let base = Instant::now();
        let lead = Duration::from_millis(200);
        let start = tokio::time::Instant::now() + lead;
        let period = Duration::from_secs_f64(1.0 / per_sender);
        let count = (per_sender * o.secs as f64).round() as u64;
        let send_end = start + Duration::from_secs(o.secs);
        let hard_stop = send_end + Duration::from_secs(5);
        let read_until = hard_stop + Duration::from_secs(2);
        let measure_from_ns = (lead + Duration::from_secs(o.warmup)).as_nanos() as u64;
        let n = legs.len() as u32;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut senders = Vec::new();
        let mut acks = Vec::new();
        let mut readers = Vec::new();
        for (i, leg) in legs.iter_mut().enumerate() {
            let (Some(cr), Some(er)) = (leg.caller_stream.take(), leg.callee_stream.take()) else {
                return Err("a connection was lost in an earlier round".into());
            };
            // Stagger the senders evenly over one period.
            let offset = period * i as u32 / n;
            let plan = Plan {
                transport: t,
                call_id: leg.call_id.clone(),
                to: leg.to.clone(),
                base,
                start: start + offset,
                period,
                count,
                hard_stop,
            };
            senders.push(tokio::spawn(sender(leg.caller_sink.clone(), plan)));
            acks.push(tokio::spawn(ack_reader(
                t,
                cr,
                leg.caller_sink.clone(),
                stop_rx.clone(),
                read_until,
            )));
            readers.push(tokio::spawn(latency_reader(
                t,
                er,
                leg.callee_sink.clone(),
                base,
                measure_from_ns,
                count,
                read_until,
            )));
        }
        tokio::time::sleep_until(start).await;
        let cpu0 = CpuMark::now(&pids, &aux_pids, &me);
        let mut sent = 0;
        let mut max_late = 0;
        for s in senders {
            let st = s.await.map_err(|e| format!("sender task: {e}"))?;
            sent += st.sent;
            max_late = max_late.max(st.late_ns);
        }
        let cpu1 = CpuMark::now(&pids, &aux_pids, &me);
        let mut lat = Vec::new();
        let mut received = 0;
        let mut max_gap = 0;
        for (leg, r) in legs.iter_mut().zip(readers) {
            let (stream, r) = r.await.map_err(|e| format!("reader task: {e}"))?;
            leg.callee_stream = Some(stream);
            received += r.received;
            max_gap = max_gap.max(r.max_seq_gap);
            lat.extend(r.latencies_ns);
        }
        // Until the last forwarded message arrived: the server's CPU for all of them.
        let cpu2 = CpuMark::now(&pids, &aux_pids, &me);
        let _ = stop_tx.send(true);
        let mut ack_count = 0;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for (leg, a) in legs.iter_mut().zip(acks) {
            let (stream, a) = a.await.map_err(|e| format!("ack task: {e}"))?;
            leg.caller_stream = Some(stream);
            ack_count += a.acks;
            for (k, v) in a.errors {
                *errors.entry(k).or_default() += v;
            }
        }
        let send_secs = cpu1.at.duration_since(cpu0.at).as_secs_f64();
        let round_secs = cpu2.at.duration_since(cpu0.at).as_secs_f64();
        // p99 per second of sending: shows whether the tail is spread out or comes in bursts
        // (e.g. when the server's 15 s heartbeat pings fall due).
        let start_ns = lead.as_nanos() as u64;
        let mut by_second: Vec<Vec<u64>> = vec![Vec::new(); o.secs as usize + 6];
        for &(sent, l) in &lat {
            let s = (sent.saturating_sub(start_ns) / 1_000_000_000) as usize;
            if let Some(b) = by_second.get_mut(s) {
                b.push(l);
            }
        }
        let since_idle = base.duration_since(phase1_start) + lead;
        let per_second: Vec<String> = by_second
            .iter_mut()
            .filter(|b| !b.is_empty())
            .map(|b| {
                b.sort_unstable();
                format!("{:.1}", percentile(b, 0.99) as f64 / 1e6)
            })
            .collect();
        let mut lat: Vec<u64> = lat.into_iter().map(|(_, l)| l).collect();
        lat.sort_unstable();
        let cpu = cpu_between(&cpu0, &cpu1);
        let (server_cpu, client_cpu, machine_cpu) = (cpu.server, cpu.client, cpu.machine);
        let (others_cpu, steal_cpu) = (cpu.others, cpu.steal);
        let server_cpu_secs = match (cpu0.server, cpu2.server) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 100.0),
            _ => None,
        };
        let per_1k = server_cpu_secs
            .filter(|_| sent > 0)
            .map(|s| s / (sent as f64 / 1000.0));
        let aux_cpu_secs = match (cpu0.aux, cpu2.aux) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 100.0),
            _ => None,
        };
        let aux_per_1k = aux_cpu_secs
            .filter(|_| sent > 0)
            .map(|s| s / (sent as f64 / 1000.0));
        let (p50, p90, p99, p999, max) = (
            percentile(&lat, 0.50),
            percentile(&lat, 0.90),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
            lat.last().copied().unwrap_or(0),
        );
        println!(
            "  sent {sent} in {send_secs:.2} s = {:.0} msg/s offered (target {rate}); received \
             {received} ({:.0} msg/s), lost {}; acks {ack_count}; errors {errors:?}; max sender \
             lag {}",
            sent as f64 / send_secs,
            received as f64 / send_secs,
            sent.saturating_sub(received),
            ms(max_late)
        );
        println!(
            "  forward latency over {} samples: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            lat.len(),
            ms(p50),
            ms(p90),
            ms(p99),
            ms(p999),
            ms(max)
        );
        println!(
            "  p99 (ms) by second of sending, which began {:.1} s after the warm-up connection: \
             [{}]",
            since_idle.as_secs_f64(),
            per_second.join(", ")
        );
        let pct = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}%"));
        println!(
            "  CPU while sending (100% = one core): server {}, bench client {}, whole machine {} \
             (other processes {}, stolen by the hypervisor {})",
            pct(server_cpu),
            pct(client_cpu),
            pct(machine_cpu),
            pct(others_cpu),
            pct(steal_cpu)
        );
        println!(
            "  server CPU from the first send to the last receipt ({round_secs:.2} s): {} s = {} \
             s per 1000 messages",
            server_cpu_secs.map_or("?".into(), |v| format!("{v:.2}")),
            per_1k.map_or("?".into(), |v| format!("{v:.4}"))
        );
        if !aux_pids.is_empty() {
            println!(
                "  CPU of --aux-pid {} over the same window: {} s = {} s per 1000 messages",
                aux_pids.join(","),
                aux_cpu_secs.map_or("?".into(), |v| format!("{v:.2}")),
                aux_per_1k.map_or("?".into(), |v| format!("{v:.4}"))
            );
        }
        println!(
            "  server VmRSS {} KiB (peak {} KiB); idle connections closed by the server so far: \
             {}",
            rss("VmRSS:").map_or("?".into(), |v| v.to_string()),
            rss("VmHWM:").map_or("?".into(), |v| v.to_string()),
            idle_closed.load(Ordering::Relaxed)
        );
        let result = json!({
            "phase": "load",
            "transport": t.name(),
            "pairs": o.pairs,
            "rate_target": rate,
            "secs": o.secs,
            "sent": sent,
            "received": received,
            "lost": sent.saturating_sub(received),
            "achieved_rate": received as f64 / send_secs,
            "acks": ack_count,
            "errors": errors,
            "max_seq_gap": max_gap,
            "samples": lat.len(),
            "p50_ms": p50 as f64 / 1e6,
            "p90_ms": p90 as f64 / 1e6,
            "p99_ms": p99 as f64 / 1e6,
            "p999_ms": p999 as f64 / 1e6,
            "max_ms": max as f64 / 1e6,
            "server_cpu_pct": server_cpu,
            "server_cpu_secs": server_cpu_secs,
            "server_cpu_s_per_1k": per_1k,
            "servers": pids.len(),
            "aux_cpu_secs": aux_cpu_secs,
            "aux_cpu_s_per_1k": aux_per_1k,
            "client_cpu_pct": client_cpu,
            "machine_cpu_pct": machine_cpu,
            "others_cpu_pct": others_cpu,
            "steal_cpu_pct": steal_cpu,
            "idle_closed": idle_closed.load(Ordering::Relaxed),
        });
        println!("RESULT {result}");
    }
    warm_task.abort();
    drop(legs);
    Ok(())
}

/// The columns of the side-by-side table, in order, with their headings.
const COLUMNS: &[(&str, &str)] = &[
    ("node", "Node Socket.IO"),
    ("socketio", "signalbox Socket.IO"),
    ("rtc", "signalbox `/rtc`"),
];

/// The side-by-side table (markdown) from a file of `LABEL {json}` lines.
fn report(path: &std::path::Path) -> Res<String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (label, body) = line
            .split_once(' ')
            .ok_or_else(|| format!("{}: bad line {line:?}", path.display()))?;
        let v: Value = serde_json::from_str(body).map_err(|e| format!("{line:?}: {e}"))?;
        rows.push((label.to_string(), v));
    }
    let cols: Vec<(&str, &str)> = COLUMNS
        .iter()
        .copied()
        .filter(|(l, _)| rows.iter().any(|(r, _)| r == l))
        .collect();
    let find = |label: &str, phase: &str, key: &str, want: u64| {
        rows.iter()
            .find(|(l, v)| l == label && v["phase"] == phase && v[key] == want)
            .map(|(_, v)| v)
    };
    let mut rates: Vec<u64> = rows
        .iter()
        .filter(|(_, v)| v["phase"] == "load")
        .filter_map(|(_, v)| v["rate_target"].as_u64())
        .collect();
    rates.sort_unstable();
    rates.dedup();
    let mut conns: Vec<u64> = rows
        .iter()
        .filter(|(_, v)| v["phase"] == "idle")
        .filter_map(|(_, v)| v["conns_target"].as_u64())
        .collect();
    conns.sort_unstable();
    conns.dedup();
    let mut out = String::new();
    out.push_str("| |");
    for (_, h) in &cols {
        out.push_str(&format!(" {h} |"));
    }
    out.push_str("\n|---|");
    for _ in &cols {
        out.push_str("---:|");
    }
    out.push('\n');
    let f = |v: &Value, k: &str| v[k].as_f64();
    for &rate in &rates {
        let vals: Vec<_> = cols
            .iter()
            .map(|(l, _)| (*l, find(l, "load", "rate_target", rate)))
            .collect();
        table_row(
            &mut out,
            &format!("server CPU per 1k messages at {rate} msg/s"),
            &vals,
            &|v| f(v, "server_cpu_s_per_1k").map_or("?".into(), |x| format!("{x:.3} s")),
            Some(&|v| f(v, "server_cpu_s_per_1k")),
        );
        table_row(
            &mut out,
            &format!("server CPU while sending at {rate} msg/s (100% = one core)"),
            &vals,
            &|v| f(v, "server_cpu_pct").map_or("?".into(), |x| format!("{x:.0}%")),
            None,
        );
        table_row(
            &mut out,
            &format!("latency p50 / p99 / max at {rate} msg/s"),
            &vals,
            &|v| {
                format!(
                    "{:.2} / {:.2} / {:.1} ms",
                    f(v, "p50_ms").unwrap_or(f64::NAN),
                    f(v, "p99_ms").unwrap_or(f64::NAN),
                    f(v, "max_ms").unwrap_or(f64::NAN)
                )
            },
            None,
        );
        table_row(
            &mut out,
            &format!("sent / received / lost at {rate} msg/s"),
            &vals,
            &|v| format!("{} / {} / {}", v["sent"], v["received"], v["lost"]),
            None,
        );
        table_row(
            &mut out,
            &format!("bench client CPU at {rate} msg/s"),
            &vals,
            &|v| f(v, "client_cpu_pct").map_or("?".into(), |x| format!("{x:.0}%")),
            None,
        );
        table_row(
            &mut out,
            &format!("other processes' CPU / steal at {rate} msg/s"),
            &vals,
            &|v| {
                let p = |k| f(v, k).map_or("?".into(), |x| format!("{x:.0}%"));
                format!("{} / {}", p("others_cpu_pct"), p("steal_cpu_pct"))
            },
            None,
        );
    }
    for &n in &conns {
        let vals: Vec<_> = cols
            .iter()
            .map(|(l, _)| (*l, find(l, "idle", "conns_target", n)))
            .collect();
        table_row(
            &mut out,
            &format!("memory per idle connection ({n} connections)"),
            &vals,
            &|v| {
                let opened = v["conns_opened"].as_u64().unwrap_or(0);
                let kib = f(v, "kib_per_idle_conn").map_or("?".into(), |x| format!("{x:.1} KiB"));
                if opened == n {
                    kib
                } else {
                    format!("{kib} ({opened} opened)")
                }
            },
            Some(&|v| f(v, "kib_per_idle_conn")),
        );
    }
    Ok(out)
}

/// Picks a number out of a RESULT object.
type Pick<'a> = &'a dyn Fn(&Value) -> Option<f64>;

/// Appends one table row: a cell per column from `cell`, with the ratio to the Node column's
/// figure when `ratio` picks a number out of both.
fn table_row(
    out: &mut String,
    title: &str,
    vals: &[(&str, Option<&Value>)],
    cell: &dyn Fn(&Value) -> String,
    ratio: Option<Pick>,
) {
    out.push_str(&format!("| {title} |"));
    let anchor = vals
        .iter()
        .find(|(l, _)| *l == "node")
        .and_then(|(_, v)| *v)
        .and_then(|v| ratio.and_then(|f| f(v)))
        .filter(|a| *a > 0.0);
    for (label, v) in vals {
        let Some(v) = v else {
            out.push_str(" – |");
            continue;
        };
        let mut c = cell(v);
        if let (Some(a), Some(f), true) = (anchor, ratio, *label != "node") {
            if let Some(x) = f(v) {
                c.push_str(&format!(" ({:.2}×)", x / a));
            }
        }
        out.push_str(&format!(" {c} |"));
    }
    out.push('\n');
}

/// One row per load round (markdown) from a file of `LABEL {json}` lines, LABEL being free
/// text up to the json: the setup, the target rate, what was delivered and how fast, and the
/// servers' CPU (summed over `--server-pid`) and the `--aux-pid` processes' CPU per 1000
/// messages sent.
fn report_runs(path: &std::path::Path) -> Res<String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::from(
        "| setup | target msg/s | delivered msg/s | sent / received / lost | latency p50 | \
         latency p99 | server CPU per 1k msgs | Redis CPU per 1k msgs | server CPU while \
         sending (100% = one core) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let at = line
            .find('{')
            .ok_or_else(|| format!("{}: bad line {line:?}", path.display()))?;
        let (label, body) = line.split_at(at);
        let v: Value = serde_json::from_str(body).map_err(|e| format!("{line:?}: {e}"))?;
        if v["phase"] != "load" {
            continue;
        }
        let f = |k: &str, digits: usize, unit: &str| {
            v[k].as_f64()
                .map_or("–".into(), |x| format!("{x:.digits$}{unit}"))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} |\n",
            label.trim(),
            v["rate_target"],
            f("achieved_rate", 0, ""),
            v["sent"],
            v["received"],
            v["lost"],
            f("p50_ms", 2, " ms"),
            f("p99_ms", 2, " ms"),
            f("server_cpu_s_per_1k", 3, " s"),
            f("aux_cpu_s_per_1k", 3, " s"),
            f("server_cpu_pct", 0, "%"),
        ));
    }
    Ok(out)
}
