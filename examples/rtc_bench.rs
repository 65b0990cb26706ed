//! Signaling load benchmark for `/rtc` (run on demand, not part of the tests; see
//! `bench/signaling/run.sh`, which builds it, starts a server and passes the arguments).
//!
//! Phase 1: N authenticated idle `/rtc` connections (each waits for its `welcome`); the server's
//! VmRSS is read from /proc before and after, giving memory per idle connection.
//! Phase 2: P 1:1 calls are set up over `/rtc` (call-initiate → ack, call-accept), then the
//! callers send `ice-candidate` messages at a total of R msg/s for S seconds, each carrying its
//! send time (ns since one `Instant` shared by both sides, same process); the callees record
//! receive time minus send time. Reports p50/p99/p99.9/max, the achieved rate, losses and the
//! CPU time the server and this client used.
//!
//! Tokens are minted here from `<data-dir>/jwt-secret` (the secret the server generated), so no
//! process is spawned per token. Every loop is bounded in count and time; only the given address
//! (loopback in run.sh) is contacted.
//!
//! ```text
//! rtc_bench --addr 127.0.0.1:PORT --data-dir DIR [--server-pid PID] [--conns 10000]
//!           [--pairs 200] [--rate 10000] [--secs 10] [--warmup 1] [--parallel 200]
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
use tokio::time::{timeout_at, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{
    connect, machine_ticks, next_json, percentile, proc_cpu_ticks, proc_kib, Minter, Res, Ws,
};

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;
/// Above this per-connection rate the server's limiter (100/s sustained, burst 300) interferes.
const MAX_PER_SENDER: f64 = 90.0;

struct Opts {
    addr: String,
    data_dir: PathBuf,
    server_pid: Option<u32>,
    conns: usize,
    pairs: usize,
    rate: u64,
    secs: u64,
    warmup: u64,
    parallel: usize,
    threads: usize,
}

fn usage() -> String {
    "usage: rtc_bench --addr HOST:PORT --data-dir DIR [--server-pid PID] [--conns N] \
     [--pairs P] [--rate MSG_PER_S] [--secs S] [--warmup S] [--parallel K] \
     [--threads T (client runtime workers; 0 = one per core)]"
        .to_string()
}

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        addr: String::new(),
        data_dir: PathBuf::new(),
        server_pid: None,
        conns: 10_000,
        pairs: 0,
        rate: 10_000,
        secs: 10,
        warmup: 1,
        parallel: 200,
        threads: 0,
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
            "--server-pid" => o.server_pid = Some(num(&value)? as u32),
            "--conns" => o.conns = num(&value)? as usize,
            "--pairs" => o.pairs = num(&value)? as usize,
            "--rate" => o.rate = num(&value)?,
            "--secs" => o.secs = num(&value)?,
            "--warmup" => o.warmup = num(&value)?,
            "--parallel" => o.parallel = num(&value)?.max(1) as usize,
            "--threads" => o.threads = num(&value)? as usize,
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    if o.addr.is_empty() || o.data_dir.as_os_str().is_empty() {
        return Err(usage());
    }
    if o.pairs == 0 {
        // Keep each sender at or below 50 msg/s, and at least 200 pairs.
        o.pairs = (o.rate.div_ceil(50) as usize).max(200);
    }
    if o.secs == 0 || o.secs > 600 || o.warmup >= o.secs {
        return Err("--secs must be 1..=600 and greater than --warmup".into());
    }
    if o.rate as f64 / o.pairs as f64 > MAX_PER_SENDER {
        return Err(format!(
            "{} msg/s over {} pairs is over {MAX_PER_SENDER} msg/s per connection: the server \
             rate-limits at 100/s; use more --pairs",
            o.rate, o.pairs
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

async fn send_json(ws: &mut Ws, v: Value) -> Res<()> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Opens `users.len()` connections, at most `parallel` handshakes at a time.
async fn connect_many(addr: &str, tokens: Vec<String>, parallel: usize) -> Vec<Res<Ws>> {
    let addr = addr.to_string();
    futures_util::stream::iter(tokens)
        .map(|t| {
            let addr = addr.clone();
            async move { connect(&addr, &t).await.map(|(ws, _)| ws) }
        })
        .buffered(parallel)
        .collect()
        .await
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// Sets up one call: caller initiates, callee receives and accepts. Returns the call id.
async fn setup_call(caller: &mut Ws, callee: &mut Ws, callee_id: &str) -> Res<String> {
    send_json(
        caller,
        json!({"type":"call-initiate","id":1,"to":callee_id,"callType":"audio"}),
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
        json!({"type":"call-accept","id":2,"callId":call_id}),
    )
    .await?;
    wait_for(callee, "ack", Some(2)).await?;
    wait_for(caller, "call-accept", None).await?;
    Ok(call_id)
}

#[derive(Default)]
struct SenderStats {
    sent: u64,
    late_ns: u64,
}

/// Sends `count` ice-candidates at `period` intervals from `start`, stamping send times.
async fn sender(
    mut sink: Sink,
    call_id: String,
    base: Instant,
    start: tokio::time::Instant,
    period: Duration,
    count: u64,
    hard_stop: tokio::time::Instant,
) -> (Sink, SenderStats) {
    let mut stats = SenderStats::default();
    let mut tick = tokio::time::interval_at(start, period);
    // Burst: a sender that fell behind catches up, so the offered rate stays the target.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for seq in 0..count {
        let due = tick.tick().await;
        if tokio::time::Instant::now() >= hard_stop {
            break;
        }
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        stats.late_ns = stats.late_ns.max(late.as_nanos() as u64);
        let sent_ns = base.elapsed().as_nanos() as u64;
        let frame = format!(
            concat!(
                r#"{{"type":"ice-candidate","callId":"{}","candidate":{{"candidate":"#,
                r#""candidate:{} {} 1 udp 2122260223 192.0.2.10 {} typ host","#,
                r#""sdpMid":"0","sdpMLineIndex":0}}}}"#
            ),
            call_id,
            seq,
            sent_ns,
            40000 + seq % 20000
        );
        if sink.send(Message::text(frame)).await.is_err() {
            break;
        }
        stats.sent += 1;
    }
    (sink, stats)
}

#[derive(Default)]
struct AckStats {
    acks: u64,
    errors: BTreeMap<String, u64>,
}

/// Reads and discards the acks on a sender socket (so buffers never fill), counting errors.
async fn ack_reader(mut stream: Stream, until: tokio::time::Instant) -> AckStats {
    let mut stats = AckStats::default();
    while let Ok(Some(Ok(msg))) = timeout_at(until, stream.next()).await {
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        if t.contains(r#""type":"ack""#) {
            stats.acks += 1;
        } else if let Ok(v) = serde_json::from_str::<Value>(t) {
            if v["type"] == "error" {
                let code = v["code"].as_str().unwrap_or("?").to_string();
                *stats.errors.entry(code).or_default() += 1;
            }
        }
    }
    stats
}

struct Received {
    /// (send time, latency), ns.
    latencies_ns: Vec<(u64, u64)>,
    received: u64,
    max_seq_gap: u64,
}

/// Records receive time minus send time for each forwarded ice-candidate.
async fn latency_reader(
    mut stream: Stream,
    base: Instant,
    measure_from_ns: u64,
    until: tokio::time::Instant,
) -> Received {
    let mut r = Received {
        latencies_ns: Vec::with_capacity(1024),
        received: 0,
        max_seq_gap: 0,
    };
    let mut next_seq = 0u64;
    while let Ok(Some(Ok(msg))) = timeout_at(until, stream.next()).await {
        let now_ns = base.elapsed().as_nanos() as u64;
        let Message::Text(t) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
            continue;
        };
        if v["type"] != "ice-candidate" {
            continue;
        }
        let Some(c) = v["candidate"]["candidate"].as_str() else {
            continue;
        };
        let mut parts = c.split_whitespace();
        let seq = parts
            .next()
            .and_then(|p| p.strip_prefix("candidate:"))
            .and_then(|s| s.parse::<u64>().ok());
        let sent = parts.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(seq), Some(sent)) = (seq, sent) else {
            continue;
        };
        r.received += 1;
        r.max_seq_gap = r.max_seq_gap.max(seq.saturating_sub(next_seq));
        next_seq = seq + 1;
        if sent >= measure_from_ns {
            r.latencies_ns.push((sent, now_ns.saturating_sub(sent)));
        }
    }
    r
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = common::runtime("rtc_bench", opts.threads);
    if let Err(e) = rt.block_on(run(opts)) {
        eprintln!("rtc_bench: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Opts) -> Res<()> {
    let minter = Minter::from_data_dir(&o.data_dir)?;
    let pid = o.server_pid.map(|p| p.to_string());
    let rss = |field: &str| pid.as_deref().and_then(|p| proc_kib(p, field));
    let me = std::process::id().to_string();
    let mut results = serde_json::Map::new();

    // ---- Phase 1: idle connections -------------------------------------------------------
    // One warm-up connection first, so one-time allocations (runtime, SQLite pages, TLS-free
    // HTTP stack) are in the "before" figure rather than charged to the idle connections.
    let (warm, _) = connect(&o.addr, &minter.token("warmup")?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let phase1_start = Instant::now();
    let t = phase1_start;
    let conns = connect_many(&o.addr, idle_tokens, o.parallel).await;
    let connect_secs = t.elapsed().as_secs_f64();
    let mut idle = Vec::with_capacity(conns.len());
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for c in conns {
        match c {
            Ok(ws) => idle.push(ws),
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    let opened = idle.len();
    // Idle connections keep being read, so the server's pings are answered (silence = close).
    let idle_closed = Arc::new(AtomicU64::new(0));
    for mut ws in idle {
        let closed = idle_closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {}
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
    results.insert("conns_target".into(), json!(o.conns));
    results.insert("conns_opened".into(), json!(opened));
    results.insert("connect_secs".into(), json!(connect_secs));
    results.insert("rss_before_kib".into(), json!(rss_before));
    results.insert("rss_after_kib".into(), json!(rss_after));
    results.insert("kib_per_idle_conn".into(), json!(per_conn));

    // ---- Phase 2: forward latency -----------------------------------------------------------
    let per_sender = o.rate as f64 / o.pairs as f64;
    println!(
        "phase 2: {} calls, {} msg/s total ({per_sender:.1}/s per caller) for {} s \
         (first {} s not measured), with the idle connections still open",
        o.pairs, o.rate, o.secs, o.warmup
    );
    let mut tokens = Vec::with_capacity(o.pairs * 2);
    for i in 0..o.pairs {
        tokens.push(minter.token(&format!("caller-{i}"))?);
        tokens.push(minter.token(&format!("callee-{i}"))?);
    }
    let mut socks = connect_many(&o.addr, tokens, o.parallel)
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
    let t = Instant::now();
    let calls: Vec<Res<_>> = futures_util::stream::iter(pairs)
        .map(|(i, mut caller, mut callee)| async move {
            let id = setup_call(&mut caller, &mut callee, &format!("callee-{i}")).await?;
            Ok((id, caller, callee))
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let calls = calls.into_iter().collect::<Res<Vec<_>>>()?;
    println!(
        "  {} calls set up in {:.2} s",
        calls.len(),
        t.elapsed().as_secs_f64()
    );

    let base = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let period = Duration::from_secs_f64(1.0 / per_sender);
    let count = (per_sender * o.secs as f64).round() as u64;
    let send_end = start + Duration::from_secs(o.secs);
    let hard_stop = send_end + Duration::from_secs(5);
    let read_until = hard_stop + Duration::from_secs(2);
    let measure_from_ns = (Duration::from_millis(200) + Duration::from_secs(o.warmup)).as_nanos();
    let n = calls.len() as u32;
    let mut senders = Vec::new();
    let mut acks = Vec::new();
    let mut readers = Vec::new();
    let mut callee_sinks = Vec::new();
    for (i, (call_id, caller, callee)) in calls.into_iter().enumerate() {
        let (sink, stream) = caller.split();
        let (callee_sink, callee_stream) = callee.split();
        callee_sinks.push(callee_sink);
        // Stagger the senders evenly over one period.
        let offset = period * i as u32 / n;
        senders.push(tokio::spawn(sender(
            sink,
            call_id,
            base,
            start + offset,
            period,
            count,
            hard_stop,
        )));
        acks.push(tokio::spawn(ack_reader(stream, read_until)));
        readers.push(tokio::spawn(latency_reader(
            callee_stream,
            base,
            measure_from_ns as u64,
            read_until,
        )));
    }
    tokio::time::sleep_until(start).await;
    let cpu0 = (
        pid.as_deref().and_then(proc_cpu_ticks),
        proc_cpu_ticks(&me),
        Instant::now(),
        machine_ticks(),
    );
    let mut sent = 0;
    let mut max_late = 0;
    let mut sinks = Vec::new();
    for s in senders {
        let (sink, st) = s.await.map_err(|e| format!("sender task: {e}"))?;
        sent += st.sent;
        max_late = max_late.max(st.late_ns);
        sinks.push(sink);
    }
    let send_secs = cpu0.2.elapsed().as_secs_f64();
    let cpu1 = (
        pid.as_deref().and_then(proc_cpu_ticks),
        proc_cpu_ticks(&me),
        machine_ticks(),
    );
    let mut lat = Vec::new();
    let mut received = 0;
    let mut max_gap = 0;
    for r in readers {
        let r = r.await.map_err(|e| format!("reader task: {e}"))?;
        received += r.received;
        max_gap = max_gap.max(r.max_seq_gap);
        lat.extend(r.latencies_ns);
    }
    let mut ack_count = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for a in acks {
        let a = a.await.map_err(|e| format!("ack task: {e}"))?;
        ack_count += a.acks;
        for (k, v) in a.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    // p99 per second of sending: shows whether the tail is spread out or comes in bursts
    // (e.g. when the server's 15 s heartbeat pings to the idle connections fall due).
    let start_ns = Duration::from_millis(200).as_nanos() as u64;
    let mut by_second: Vec<Vec<u64>> = vec![Vec::new(); o.secs as usize + 6];
    for &(sent, l) in &lat {
        let s = (sent.saturating_sub(start_ns) / 1_000_000_000) as usize;
        if let Some(b) = by_second.get_mut(s) {
            b.push(l);
        }
    }
    let since_idle = base.duration_since(phase1_start) + Duration::from_millis(200);
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
    let cpu_pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 100.0 / send_secs * 100.0),
        _ => None,
    };
    let server_cpu = cpu_pct(cpu0.0, cpu1.0);
    let client_cpu = cpu_pct(cpu0.1, cpu1.1);
    // Whole machine, in the same unit (100% = one core): what else ran alongside.
    let machine_cpu = match (cpu0.3, cpu1.2) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            Some((b1 - b0) as f64 / (t1 - t0) as f64 * cores * 100.0)
        }
        _ => None,
    };
    let others_cpu = match (machine_cpu, server_cpu, client_cpu) {
        (Some(m), Some(s), Some(c)) => Some((m - s - c).max(0.0)),
        _ => None,
    };
    let (p50, p90, p99, p999, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().copied().unwrap_or(0),
    );
    println!(
        "  sent {sent} in {send_secs:.2} s = {:.0} msg/s offered (target {}); received {received} \
         ({:.0} msg/s), lost {}; acks {ack_count}; errors {errors:?}; max sender lag {}",
        sent as f64 / send_secs,
        o.rate,
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
        "  p99 (ms) by second of sending, which began {:.1} s after the first idle connection \
         opened: [{}]",
        since_idle.as_secs_f64(),
        per_second.join(", ")
    );
    let pct = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}%"));
    println!(
        "  CPU while sending (100% = one core): server {}, bench client {}, whole machine {} \
         (other processes {})",
        pct(server_cpu),
        pct(client_cpu),
        pct(machine_cpu),
        pct(others_cpu)
    );
    println!(
        "  server VmRSS {} KiB (peak {} KiB); idle connections closed by the server meanwhile: {}",
        rss("VmRSS:").map_or("?".into(), |v| v.to_string()),
        rss("VmHWM:").map_or("?".into(), |v| v.to_string()),
        idle_closed.load(Ordering::Relaxed)
    );
    for (k, v) in [
        ("pairs", json!(o.pairs)),
        ("rate_target", json!(o.rate)),
        ("secs", json!(o.secs)),
        ("sent", json!(sent)),
        ("received", json!(received)),
        ("achieved_rate", json!(received as f64 / send_secs)),
        ("errors", json!(errors)),
        ("max_seq_gap", json!(max_gap)),
        ("samples", json!(lat.len())),
        ("p50_ms", json!(p50 as f64 / 1e6)),
        ("p90_ms", json!(p90 as f64 / 1e6)),
        ("p99_ms", json!(p99 as f64 / 1e6)),
        ("p999_ms", json!(p999 as f64 / 1e6)),
        ("max_ms", json!(max as f64 / 1e6)),
        ("server_cpu_pct", json!(server_cpu)),
        ("client_cpu_pct", json!(client_cpu)),
        ("machine_cpu_pct", json!(machine_cpu)),
        ("others_cpu_pct", json!(others_cpu)),
        ("idle_closed", json!(idle_closed.load(Ordering::Relaxed))),
    ] {
        results.insert(k.into(), v);
    }
    println!("RESULT {}", Value::Object(results));
    drop((warm, sinks, callee_sinks));
    Ok(())
}
