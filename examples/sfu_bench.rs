//! SFU forwarding benchmark (run on demand, not part of the tests; see `bench/sfu/run.sh`, which
//! builds it in release mode and passes the arguments).
//!
//! For each requested number of subscriber streams it runs two rounds, each against a forwarder
//! in a child process of its own (this binary started again with `--role sfu` or
//! `--role naive`), so the forwarder's CPU time can be read from /proc apart from the load:
//!
//! * **sfu**: the `signalbox-sfu` crate's UDP server ([`signalbox_sfu::start`], the edge the
//!   signalbox binary runs), driven over the child's stdin/stdout with one JSON line per SDP
//!   offer or answer instead of the `/rtc` signaling. Rooms of one publisher and
//!   `--subs-per-room` subscribers; every participant is a str0m session on its own loopback UDP
//!   socket (full ICE, DTLS-SRTP, VP8). Each publisher writes `--frame-bytes` frames at `--fps`
//!   (1250 B × 30 fps = 300 kbit/s); the subscribers run str0m in RTP mode and count the distinct
//!   RTP sequence numbers they receive per stream (after NACK/RTX repair, as a browser would).
//! * **naive**: the physical reference, a blocking std UDP loop that receives a datagram and
//!   sends it to each of the publisher's subscribers; no crypto, no RTP. Publishers send the same
//!   number of packets per second per stream as the SFU round delivered, of about the same size;
//!   subscribers count sequence numbers the same way.
//!
//! After every subscriber has received media, `--warmup` seconds pass, then a window of `--secs`
//! seconds is measured: packets delivered to subscribers and those missing (gaps in each stream's
//! sequence numbers; a stream that delivered nothing in the window counts as fully lost), the
//! forwarder's utime+stime, this process's and the whole machine's CPU. From these: CPU µs per
//! forwarded packet and streams per core = streams ÷ (forwarder's share of one core), an
//! extrapolation when the forwarder used less than a core. Only 127.0.0.1 is used; every wait has
//! a deadline; the child processes end when their stdin closes (and are killed if they do not).
//! `--idle N` adds N connected SFU participants without media (each alone in a room), to see
//! what sessions that forward nothing cost the ones that do.
//!
//! `--simulcast`: every publisher declares three simulcast send layers, rids `q`, `h`, `f`, in
//! its SDP and writes each frame on each of them: `--frame-bytes` ÷ 3, × 1 and × 3 bytes (with
//! the default 1250 B at 30 fps: ~100, 300 and 900 kbit/s). Each layer's frames start like VP8
//! frames with a keyframe's start code and a picture width of 160, 320 and 640 px, then the
//! frame number (the same on every layer) and the layer's index; the first frame of a layer and
//! the next one after a keyframe request (PLI/FIR) for its rid are keyframes, the others
//! interframes, so the SFU learns the widths and switches layers on keyframes it asks for. In
//! each room the subscribers tell the SFU ([`signalbox_sfu::SfuHandle::view`]) the width of the
//! tile they show the publisher in, by thirds: 150 px (→ `q`), 300 px (→ `h`), 600 px (→ `f`).
//! Besides the table above, a second one per stream count: bytes/s publishers sent the SFU (all
//! layers) and subscribers received from it, what sending every layer to every subscriber would
//! have cost and what one layer per subscriber saved, the share of frames of each layer each
//! third received (from the layer index in the frames), and what the SFU's quality samples say
//! it forwards to each third, with its bandwidth estimates towards them (str0m's RTP mode still
//! sends TWCC feedback, so the SFU's allocation works from real estimates, not an unbounded
//! budget). The naive round then sends datagrams of the average size the SFU round delivered.
//!
//! ```text
//! sfu_bench [--streams 100,200,300,400,500] [--subs-per-room 50] [--fps 30] [--frame-bytes 1250]
//!           [--warmup 3] [--secs 10] [--parallel 32] [--threads 0] [--sfu-cpus LIST]
//!           [--idle N] [--simulcast] [--only sfu|naive]
//! ```
#![allow(clippy::disallowed_methods)] // benchmarks are an edge: they read the clock

// Only its /proc readings are used here.
#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use signalbox_sfu::{Notice, ParticipantId, SfuEvent};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::timeout_at;

/// Waiting for a child's first line (its address).
const CHILD_START: Duration = Duration::from_secs(15);
/// Waiting for the SFU's answer to an offer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Waiting for a child to exit after its stdin closed.
const CHILD_EXIT: Duration = Duration::from_secs(5);
/// The largest naive datagram and the receive buffers.
const DATAGRAM_MAX: usize = 2048;
/// Bytes of a naive datagram taken by its header (publisher index, sequence number).
const NAIVE_HEADER: usize = 12;
/// Added to each naive datagram's share of a frame, for the RTP/SRTP headers an SFU packet
/// carries (12 B RTP, ~8 B extensions, 1 B VP8 descriptor, 10 B SRTP tag, rounded up).
const NAIVE_OVERHEAD: usize = 40;

#[derive(Clone)]
struct Opts {
    streams: Vec<usize>,
    subs_per_room: usize,
    fps: u32,
    frame_bytes: usize,
    warmup: u64,
    secs: u64,
    parallel: usize,
    threads: usize,
    sfu_cpus: Option<String>,
    /// Connected SFU participants without media, each alone in a room of its own.
    idle: usize,
    /// Publishers send three simulcast layers; subscribers show them in tiles of three sizes.
    simulcast: bool,
    sfu: bool,
    naive: bool,
}

fn usage() -> &'static str {
    "usage: sfu_bench [--streams N[,N...]] [--subs-per-room S] [--fps F] [--frame-bytes B] \
     [--warmup S] [--secs S] [--parallel K] [--threads T (0 = one per core)] \
     [--sfu-cpus LIST (pin the forwarder child with taskset)] \
     [--idle N (SFU participants without media, alone in rooms of their own)] \
     [--simulcast (three layers per publisher, subscribers in thirds by tile size)] [--only sfu|naive]"
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        streams: vec![100, 200, 300, 400, 500],
        subs_per_room: 50,
        fps: 30,
        frame_bytes: 1250,
        warmup: 3,
        secs: 10,
        parallel: 32,
        threads: 0,
        sfu_cpus: None,
        idle: 0,
        simulcast: false,
        sfu: true,
        naive: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{}", usage()))
        };
        let number = |v: String| -> Result<u64> {
            v.parse()
                .map_err(|_| anyhow!("{flag}: not a number: {v}\n{}", usage()))
        };
        match flag.as_str() {
            "--streams" => {
                o.streams = value()?
                    .split(',')
                    .map(|s| number(s.trim().to_string()).map(|n| n as usize))
                    .collect::<Result<_>>()?
            }
            "--subs-per-room" => o.subs_per_room = number(value()?)? as usize,
            "--fps" => o.fps = number(value()?)? as u32,
            "--frame-bytes" => o.frame_bytes = number(value()?)? as usize,
            "--warmup" => o.warmup = number(value()?)?,
            "--secs" => o.secs = number(value()?)?,
            "--parallel" => o.parallel = number(value()?)? as usize,
            "--threads" => o.threads = number(value()?)? as usize,
            "--sfu-cpus" => o.sfu_cpus = Some(value()?),
            "--idle" => o.idle = number(value()?)? as usize,
            "--simulcast" => o.simulcast = true,
            "--only" => match value()?.as_str() {
                "sfu" => o.naive = false,
                "naive" => o.sfu = false,
                other => bail!("--only sfu|naive, not {other}\n{}", usage()),
            },
            "-h" | "--help" => bail!("{}", usage()),
            other => bail!("unknown argument {other}\n{}", usage()),
        }
    }
    if o.streams.is_empty() || o.streams.contains(&0) {
        bail!("--streams: counts must be at least 1");
    }
    if o.subs_per_room == 0 || o.parallel == 0 || o.secs == 0 {
        bail!("--subs-per-room, --parallel and --secs must be at least 1");
    }
    if !(1..=120).contains(&o.fps) || !(16..=100_000).contains(&o.frame_bytes) {
        bail!("--fps must be 1..=120 and --frame-bytes 16..=100000");
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The children: `--role sfu` and `--role naive` (started by the bench itself).
    let role = match args.as_slice() {
        [flag, role] if flag == "--role" => Some(role.clone()),
        _ => None,
    };
    let result = match role.as_deref() {
        Some("sfu") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime")
            .and_then(|rt| rt.block_on(sfu_role())),
        Some("naive") => naive_role(),
        Some(other) => Err(anyhow!("unknown role {other}")),
        None => parse_opts(&args).and_then(|o| {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if o.threads > 0 {
                rt.worker_threads(o.threads);
            }
            rt.enable_all()
                .build()
                .context("runtime")
                .and_then(|rt| rt.block_on(bench(o)))
        }),
    };
    if let Err(e) = result {
        eprintln!("sfu_bench: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The children.

/// The SFU child: `signalbox_sfu::start` on 127.0.0.1, one JSON command per stdin line
/// (`negotiate`, `answer`, `view`, `traffic`, `quality`), one JSON line per SDP notice on
/// stdout. The latest quality sample of each subscriber is kept and sent on `quality`. Ends at
/// stdin's end.
async fn sfu_role() -> Result<()> {
    signalbox_sfu::init_crypto();
    let (notice_tx, mut notices) = mpsc::unbounded_channel();
    let (handle, _task) = signalbox_sfu::start((Ipv4Addr::LOCALHOST, 0).into(), &[], notice_tx)
        .await
        .context("starting the SFU")?;
    let (out, mut lines_out) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(v) = lines_out.recv().await {
            let mut line = v.to_string();
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            if lines_out.is_empty() && stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let _ = out.send(json!({"kind": "ready", "addr": handle.local_addr().to_string()}));
    let notice_out = out.clone();
    let quality: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let samples = quality.clone();
    tokio::spawn(async move {
        while let Some(n) = notices.recv().await {
            let v = match n {
                Notice::Answer { participant, sdp } => {
                    json!({"kind": "answer", "id": participant.0, "sdp": sdp})
                }
                Notice::Offer { participant, sdp } => {
                    json!({"kind": "offer", "id": participant.0, "sdp": sdp})
                }
                // What a subscriber is sent: kept (the latest per subscriber) until asked for.
                Notice::Event(SfuEvent::Quality(q)) => {
                    let layer = q.layers.first();
                    let sample = json!({
                        "estimate_bps": q.estimate_bps,
                        "layer": layer.and_then(|l| l.layer.clone()),
                        "width": layer.and_then(|l| l.width),
                        "paused": layer.is_some_and(|l| l.paused),
                        "freezes": q.freezes,
                    });
                    lock(&samples).insert(q.participant.0, sample);
                    continue;
                }
                // Connection changes and per-track figures: the load side counts for itself.
                Notice::Event(_) => continue,
            };
            if notice_out.send(v).is_err() {
                break;
            }
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await.context("reading stdin")? {
        let v: Value = serde_json::from_str(&line).context("a command line")?;
        let id = ParticipantId(v["id"].as_str().unwrap_or_default().to_string());
        let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
        let (h, out) = (handle.clone(), out.clone());
        match v["op"].as_str() {
            Some("negotiate") => {
                let room = v["room"].as_str().unwrap_or_default().to_string();
                tokio::spawn(async move {
                    if let Err(e) = h.negotiate(&room, id.clone(), sdp, true).await {
                        let _ = out
                            .send(json!({"kind": "error", "id": id.0, "message": e.to_string()}));
                    }
                });
            }
            Some("answer") => {
                tokio::spawn(async move {
                    if let Err(e) = h.answer(id.clone(), sdp).await {
                        let _ = out
                            .send(json!({"kind": "error", "id": id.0, "message": e.to_string()}));
                    }
                });
            }
            Some("view") => {
                // [[publisher, tile width], ...]; entries that are not such pairs are left out.
                let tiles = v["tiles"]
                    .as_array()
                    .map(|tiles| {
                        tiles
                            .iter()
                            .filter_map(|t| {
                                let publisher = t.get(0)?.as_str()?;
                                let width = u32::try_from(t.get(1)?.as_u64()?).ok()?;
                                Some((ParticipantId(publisher.to_string()), width))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let max_bitrate = v["max_bitrate"].as_u64();
                tokio::spawn(async move {
                    if let Err(e) = h.view(id.clone(), tiles, max_bitrate).await {
                        let _ = out
                            .send(json!({"kind": "error", "id": id.0, "message": e.to_string()}));
                    }
                });
            }
            Some("quality") => {
                let samples = lock(&quality).clone();
                let _ = out.send(json!({"kind": "quality", "samples": samples}));
            }
            Some("traffic") => {
                let t = handle.traffic();
                let _ = out.send(json!({
                    "kind": "traffic",
                    "datagrams_in": t.datagrams_in,
                    "bytes_in": t.bytes_in,
                    "datagrams_out": t.datagrams_out,
                    "bytes_out": t.bytes_out,
                    "datagrams_unknown": t.datagrams_unknown,
                    "participants": t.counters.participants,
                    "frames_forwarded": t.counters.frames_forwarded,
                    "keyframe_requests": t.counters.keyframe_requests,
                }));
            }
            other => bail!("unknown command {other:?}"),
        }
    }
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    Ok(())
}

/// The naive forwarder child: reads `route {from, to: [..]}` lines until `go`, then forwards
/// every datagram from `from` to each of `to`, in a blocking loop. Exits at stdin's end.
fn naive_role() -> Result<()> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding")?;
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "{}",
        json!({"kind": "ready", "addr": socket.local_addr()?.to_string()})
    )?;
    stdout.flush()?;
    let mut routes: HashMap<SocketAddr, Vec<SocketAddr>> = HashMap::new();
    let mut stdin = std::io::stdin().lock().lines();
    loop {
        let line = stdin.next().context("stdin closed before `go`")??;
        let v: Value = serde_json::from_str(&line).context("a command line")?;
        match v["op"].as_str() {
            Some("route") => {
                let parse = |s: &Value| -> Result<SocketAddr> {
                    s.as_str()
                        .context("an address")?
                        .parse()
                        .context("an address")
                };
                let from = parse(&v["from"])?;
                let to = v["to"]
                    .as_array()
                    .context("`to` addresses")?
                    .iter()
                    .map(parse)
                    .collect::<Result<Vec<_>>>()?;
                routes.insert(from, to);
            }
            Some("go") => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    writeln!(stdout, "{}", json!({"kind": "going"}))?;
    stdout.flush()?;
    // The forwarding loop runs on a thread of its own; the end of stdin ends the process.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(to) = routes.get(&from) {
                for a in to {
                    let _ = socket.send_to(&buf[..n], a);
                }
            }
        }
    });
    for _ in stdin {}
    Ok(())
}

/// A child process and its line protocol, as the load side sees it.
struct ChildCtl {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    lines: mpsc::UnboundedSender<String>,
}

impl ChildCtl {
    /// Starts this binary with `--role ROLE` (through `taskset -c CPUS` when given) and reads
    /// its address; returns it with its stdout for further reading.
    async fn spawn(role: &str, cpus: Option<&str>) -> Result<(ChildCtl, BufReader<ChildStdout>)> {
        let exe = std::env::current_exe().context("this program's path")?;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["--role", role])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {role} child"))?;
        let pid = child.id().context("the child's pid")?;
        let mut stdin = child.stdin.take().context("the child's stdin")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        timeout_at(
            (Instant::now() + CHILD_START).into(),
            stdout.read_line(&mut first),
        )
        .await
        .map_err(|_| anyhow!("the {role} child did not start within {CHILD_START:?}"))??;
        let v: Value = serde_json::from_str(&first)
            .with_context(|| format!("the {role} child's first line: {first:?}"))?;
        let addr: SocketAddr = v["addr"]
            .as_str()
            .context("the child's address")?
            .parse()
            .context("the child's address")?;
        let (lines, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                if rx.is_empty() && stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin here tells the child to stop.
        });
        Ok((
            ChildCtl {
                child,
                pid,
                addr,
                lines,
            },
            stdout,
        ))
    }

    fn send(&self, v: Value) -> Result<()> {
        self.lines
            .send(v.to_string())
            .map_err(|_| anyhow!("the child's stdin is closed"))
    }

    /// Closes the child's stdin and waits (bounded) for it to exit; kills it otherwise.
    async fn stop(self) {
        let ChildCtl {
            mut child, lines, ..
        } = self;
        drop(lines);
        if tokio::time::timeout(CHILD_EXIT, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(CHILD_EXIT, child.wait()).await;
        }
    }
}

/// Routes the SFU child's output lines to the participants they concern.
#[derive(Default)]
struct Dispatch {
    participants: Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>,
    /// The replies to `traffic` and `quality`.
    traffic: Mutex<Option<mpsc::UnboundedSender<Value>>>,
}

impl Dispatch {
    fn register(&self, id: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.participants).insert(id.to_string(), tx);
        rx
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_sfu_lines(mut stdout: BufReader<ChildStdout>, dispatch: Arc<Dispatch>) {
    let mut line = String::new();
    loop {
        line.clear();
        match stdout.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            eprintln!("sfu_bench: unreadable line from the SFU child: {line:?}");
            continue;
        };
        if v["kind"] == "traffic" || v["kind"] == "quality" {
            if let Some(tx) = lock(&dispatch.traffic).as_ref() {
                let _ = tx.send(v);
            }
            continue;
        }
        let id = v["id"].as_str().unwrap_or_default();
        if let Some(tx) = lock(&dispatch.participants).get(id) {
            let _ = tx.send(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counting what subscribers receive.

/// One received stream: sequence numbers seen (each counted once).
#[derive(Debug, Default, Clone, Copy)]
struct StreamCount {
    highest: u64,
    received: u64,
    bytes: u64,
    /// Frame numbers the publisher wrote into its frames (SFU rounds only): end to end, so
    /// frames lost on the way into the SFU count too.
    highest_frame: u64,
    frames: u64,
    /// Simulcast: the layer of the frame last started, and per layer the frames started and
    /// the payload bytes received (a packet counts for the layer of the last frame start).
    layer: Option<usize>,
    layer_frames: [u64; LAYERS.len()],
    layer_bytes: [u64; LAYERS.len()],
}

impl StreamCount {
    fn packet(&mut self, seq: u64, bytes: usize) {
        self.highest = self.highest.max(seq);
        self.received += 1;
        self.bytes += bytes as u64;
    }

    /// A packet that started a frame (`start`) or continued one; its payload `bytes`.
    fn layer_packet(&mut self, start: Option<FrameStart>, bytes: usize) {
        if let Some(l) = start.and_then(|f| f.layer).filter(|l| *l < LAYERS.len()) {
            self.layer = Some(l);
            self.layer_frames[l] += 1;
        }
        if let Some(l) = self.layer {
            self.layer_bytes[l] += bytes as u64;
        }
    }

    fn frame(&mut self, number: u64) {
        if number > self.highest_frame {
            self.highest_frame = number;
            self.frames += 1;
        }
    }
}

/// The simulcast layers: rid, picture width, frame size relative to `--frame-bytes` (× n ÷ 3),
/// and the tile width the third of the subscribers that should get it says it shows.
const LAYERS: [Layer; 3] = [
    Layer {
        rid: "q",
        width: 160,
        thirds: 1,
        tile: 150,
    },
    Layer {
        rid: "h",
        width: 320,
        thirds: 3,
        tile: 300,
    },
    Layer {
        rid: "f",
        width: 640,
        thirds: 9,
        tile: 600,
    },
];

struct Layer {
    rid: &'static str,
    width: u16,
    /// Frame size in thirds of `--frame-bytes`.
    thirds: usize,
    tile: u32,
}

impl Layer {
    fn frame_bytes(&self, frame_bytes: usize) -> usize {
        (frame_bytes * self.thirds / 3).max(LAYER_HEADER)
    }
}

/// A simulcast frame's header: VP8 frame tag (3 B), start code (3 B), width and height (2 B
/// each, little endian), then the frame number (8 B, big endian) and the layer's index (1 B).
const LAYER_HEADER: usize = 19;
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// What the first packet of a frame says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameStart {
    number: u64,
    /// The simulcast layer's index (frames of `layer_payload`).
    layer: Option<usize>,
}

/// The frame a publisher wrote, read from the RTP packet that starts it (the VP8 descriptor's S
/// bit with partition 0, RFC 7741 4.2): the frame number, and the layer with simulcast. A
/// simulcast frame (`layer_payload`) has the VP8 start code at bytes 3..6, else the number is
/// in bytes 1..9 (`frame_payload`). None for the frame's other packets.
fn vp8_frame_start(payload: &[u8]) -> Option<FrameStart> {
    let b0 = *payload.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if *payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let frame = payload.get(i..)?;
    if frame.get(3..6) == Some(&VP8_START_CODE[..]) {
        let number = frame.get(10..18)?;
        return Some(FrameStart {
            number: u64::from_be_bytes(number.try_into().ok()?),
            layer: Some(usize::from(*frame.get(18)?)),
        });
    }
    let number = frame.get(1..9)?;
    Some(FrameStart {
        number: u64::from_be_bytes(number.try_into().ok()?),
        layer: None,
    })
}

/// A publisher's frame `number`: the VP8 frame tag byte the other tests use, the number, filler.
fn frame_payload(bytes: usize, number: u64) -> Arc<[u8]> {
    let mut frame = vec![0x10u8; bytes.max(9)];
    frame[1..9].copy_from_slice(&number.to_be_bytes());
    frame.into()
}

/// Frame `number` of simulcast layer `layer` (an index of [`LAYERS`]), `bytes` long: a VP8
/// frame header as far as the SFU reads it (RFC 6386 9.1: the frame tag's lowest bit 0 for a
/// keyframe, the start code, the 14-bit width; the SFU takes the width from keyframes only),
/// then the number and the layer index, then filler.
fn layer_payload(bytes: usize, number: u64, layer: usize, keyframe: bool) -> Arc<[u8]> {
    let mut frame = vec![0u8; bytes.max(LAYER_HEADER)];
    // show_frame set, version 0; bit 0: 0 = keyframe, 1 = interframe.
    frame[0] = if keyframe { 0x10 } else { 0x11 };
    frame[3..6].copy_from_slice(&VP8_START_CODE);
    let width = LAYERS.get(layer).map_or(0, |l| l.width);
    frame[6..8].copy_from_slice(&width.to_le_bytes());
    frame[8..10].copy_from_slice(&(width * 3 / 4).to_le_bytes());
    frame[10..18].copy_from_slice(&number.to_be_bytes());
    frame[18] = layer as u8;
    frame.into()
}

/// What one participant of the load did, shared with the measuring code.
#[derive(Default)]
struct ClientStats {
    connected: AtomicBool,
    frames_sent: AtomicU64,
    /// Simulcast publishers: keyframes written (every layer counts), and the keyframe
    /// requests (PLI/FIR) the SFU sent.
    keyframes_sent: AtomicU64,
    keyframe_requests: AtomicU64,
    /// Frame bytes written per simulcast layer (before packetization).
    layer_bytes_sent: [AtomicU64; LAYERS.len()],
    /// UDP payload bytes this participant's socket sent and received (media, RTCP, ICE, DTLS).
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    nacks: AtomicU64,
    streams: Mutex<HashMap<u32, StreamCount>>,
    failed: Mutex<Option<String>>,
}

impl ClientStats {
    fn has_media(&self) -> bool {
        lock(&self.streams).values().any(|s| s.received > 0)
    }
}

/// Readings at the start or end of the measured window.
struct Snapshot {
    at: Instant,
    forwarder_ticks: Option<u64>,
    own_ticks: Option<u64>,
    machine: Option<(u64, u64)>,
    streams: Vec<HashMap<u32, StreamCount>>,
    nacks: u64,
    datagrams_out: Option<u64>,
    /// Frames the publishers wrote (SFU rounds).
    frames_sent: u64,
    /// Per publisher: bytes its socket sent; per subscriber: bytes its socket received.
    pub_bytes: Vec<u64>,
    sub_bytes: Vec<u64>,
    /// Summed over the publishers: frame bytes written per layer, keyframes written, keyframe
    /// requests received (simulcast).
    layer_bytes: [u64; LAYERS.len()],
    keyframes_sent: u64,
    keyframe_requests: u64,
    /// The SFU child's `traffic` reply.
    traffic: Option<Value>,
}

fn snapshot(
    forwarder: u32,
    pubs: &[Arc<ClientStats>],
    subs: &[Arc<ClientStats>],
    traffic: Option<Value>,
) -> Snapshot {
    let sum = |f: &dyn Fn(&ClientStats) -> u64| pubs.iter().map(|s| f(s)).sum::<u64>();
    Snapshot {
        at: Instant::now(),
        forwarder_ticks: common::proc_cpu_ticks(&forwarder.to_string()),
        own_ticks: common::proc_cpu_ticks(&std::process::id().to_string()),
        machine: common::machine_ticks(),
        streams: subs.iter().map(|s| lock(&s.streams).clone()).collect(),
        nacks: subs.iter().map(|s| s.nacks.load(Ordering::Relaxed)).sum(),
        datagrams_out: traffic.as_ref().and_then(|t| t["datagrams_out"].as_u64()),
        frames_sent: sum(&|s| s.frames_sent.load(Ordering::Relaxed)),
        pub_bytes: pubs
            .iter()
            .map(|s| s.bytes_sent.load(Ordering::Relaxed))
            .collect(),
        sub_bytes: subs
            .iter()
            .map(|s| s.bytes_received.load(Ordering::Relaxed))
            .collect(),
        layer_bytes: std::array::from_fn(|i| {
            sum(&|s| s.layer_bytes_sent[i].load(Ordering::Relaxed))
        }),
        keyframes_sent: sum(&|s| s.keyframes_sent.load(Ordering::Relaxed)),
        keyframe_requests: sum(&|s| s.keyframe_requests.load(Ordering::Relaxed)),
        traffic,
    }
}

const USER_HZ: f64 = 100.0;

/// One measured round.
#[derive(Debug, Clone)]
struct Row {
    mode: &'static str,
    streams: usize,
    ready: usize,
    secs: f64,
    delivered: u64,
    expected: u64,
    dead_streams: usize,
    frames_expected: u64,
    frames_delivered: u64,
    /// Frames each publisher wrote per second (SFU rounds).
    publisher_fps: Option<f64>,
    bytes: u64,
    nacks: u64,
    /// Fractions of one core.
    forwarder_cpu: Option<f64>,
    own_cpu: Option<f64>,
    machine_cpu: Option<f64>,
    datagrams_out: Option<u64>,
    /// The simulcast figures (SFU rounds with `--simulcast`).
    sim: Option<SimRow>,
}

impl Row {
    /// Packets missing from the streams the forwarder sent (gaps in their sequence numbers).
    fn packet_loss(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            1.0 - self.delivered.min(self.expected) as f64 / self.expected as f64
        }
    }
    /// Frames missing end to end (gaps in the publishers' frame numbers), SFU rounds only.
    fn frame_loss(&self) -> Option<f64> {
        (self.frames_expected > 0).then(|| {
            1.0 - self.frames_delivered.min(self.frames_expected) as f64
                / self.frames_expected as f64
        })
    }
    /// The worse of the two.
    fn loss(&self) -> f64 {
        self.packet_loss().max(self.frame_loss().unwrap_or(0.0))
    }
    fn pps_per_stream(&self) -> f64 {
        self.delivered as f64 / self.secs / self.streams as f64
    }
    fn kbps_per_stream(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1000.0 / self.secs / self.streams as f64
    }
    fn us_per_packet(&self) -> Option<f64> {
        let cpu = self.forwarder_cpu?;
        (self.delivered > 0).then(|| cpu * self.secs * 1e6 / self.delivered as f64)
    }
    fn streams_per_core(&self) -> Option<f64> {
        let cpu = self.forwarder_cpu?;
        (cpu > 0.0).then(|| self.streams as f64 / cpu)
    }
    /// CPU of everything else on the machine (other processes, the kernel's own threads).
    fn other_cpu(&self) -> Option<f64> {
        Some((self.machine_cpu? - self.forwarder_cpu? - self.own_cpu?).max(0.0))
    }
    fn json(&self) -> Value {
        json!({
            "mode": self.mode, "streams": self.streams, "ready": self.ready, "secs": self.secs,
            "delivered": self.delivered, "expected": self.expected, "loss": self.loss(),
            "packet_loss": self.packet_loss(), "frame_loss": self.frame_loss(),
            "frames_expected": self.frames_expected, "frames_delivered": self.frames_delivered,
            "publisher_fps": self.publisher_fps,
            "dead_streams": self.dead_streams, "pps_per_stream": self.pps_per_stream(),
            "kbps_per_stream": self.kbps_per_stream(), "nacks": self.nacks,
            "forwarder_cpu": self.forwarder_cpu, "own_cpu": self.own_cpu,
            "machine_cpu": self.machine_cpu, "other_cpu": self.other_cpu(), "us_per_packet": self.us_per_packet(),
            "streams_per_core": self.streams_per_core(), "datagrams_out": self.datagrams_out,
            "simulcast": self.sim.as_ref().map(SimRow::json),
        })
    }
}

/// Compares two snapshots: per stream, packets expected = advance of the highest sequence
/// number, delivered = distinct packets counted meanwhile. A subscriber without a stream, or a
/// stream that did not advance, counts as the median stream's expectation lost.
/// The median advance of the streams' frame numbers between two snapshots.
fn median_frames(a: &Snapshot, b: &Snapshot) -> u64 {
    let mut advances: Vec<u64> = Vec::new();
    for (before, after) in a.streams.iter().zip(&b.streams) {
        for (ssrc, end) in after {
            if let Some(start) = before.get(ssrc).filter(|s| s.highest_frame > 0) {
                advances.push(end.highest_frame.saturating_sub(start.highest_frame));
            }
        }
    }
    advances.sort_unstable();
    advances.get(advances.len() / 2).copied().unwrap_or(0)
}

fn compare(
    mode: &'static str,
    streams: usize,
    per_room: usize,
    ready: usize,
    a: &Snapshot,
    b: &Snapshot,
) -> Row {
    let secs = (b.at - a.at).as_secs_f64();
    let mut per_stream: Vec<(u64, u64, u64)> = Vec::new(); // expected, delivered, bytes
    let mut dead = 0usize;
    let (mut frames_expected, mut frames_delivered) = (0u64, 0u64);
    for (before, after) in a.streams.iter().zip(&b.streams) {
        if after.is_empty() {
            dead += 1;
        }
        for (ssrc, end) in after {
            let start = before.get(ssrc).copied().unwrap_or_default();
            let expected = end.highest.saturating_sub(start.highest);
            let delivered = end.received - start.received;
            if start.highest_frame > 0 {
                frames_expected += end.highest_frame - start.highest_frame;
                frames_delivered += end.frames - start.frames;
            }
            if expected == 0 {
                dead += 1;
            } else {
                per_stream.push((expected, delivered, end.bytes - start.bytes));
            }
        }
    }
    let mut sorted: Vec<u64> = per_stream.iter().map(|s| s.0).collect();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let expected = per_stream.iter().map(|s| s.0).sum::<u64>() + dead as u64 * median;
    let delivered = per_stream.iter().map(|s| s.1).sum();
    let bytes = per_stream.iter().map(|s| s.2).sum();
    let ticks = |x: Option<u64>, y: Option<u64>| Some(y?.saturating_sub(x?) as f64 / USER_HZ);
    let cores = |t: Option<f64>| t.map(|t| t / secs);
    let machine = match (a.machine, b.machine) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            Some((b1 - b0) as f64 / (t1 - t0) as f64 * n)
        }
        _ => None,
    };
    Row {
        mode,
        streams,
        ready,
        secs,
        delivered,
        expected,
        dead_streams: dead,
        frames_expected: frames_expected + dead as u64 * median_frames(a, b),
        frames_delivered,
        publisher_fps: (b.frames_sent > a.frames_sent).then(|| {
            let pubs = streams.div_ceil(per_room.max(1)) as f64;
            (b.frames_sent - a.frames_sent) as f64 / secs / pubs
        }),
        bytes,
        nacks: b.nacks.saturating_sub(a.nacks),
        forwarder_cpu: cores(ticks(a.forwarder_ticks, b.forwarder_ticks)),
        own_cpu: cores(ticks(a.own_ticks, b.own_ticks)),
        machine_cpu: machine,
        datagrams_out: match (a.datagrams_out, b.datagrams_out) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x)),
            _ => None,
        },
        sim: None,
    }
}

/// One third of the subscribers of a simulcast round (those showing one tile size), over the
/// measured window.
#[derive(Debug, Clone, Default)]
struct Third {
    subscribers: usize,
    /// Frames of each layer they received (by the layer index in the frames).
    frames: [u64; LAYERS.len()],
    /// Bytes their sockets received.
    bytes: u64,
    /// What the SFU's latest quality sample of each says it forwards: a rid (with the width
    /// the SFU read from the layer's keyframes, if any), `paused`, `none` (nothing forwarded
    /// yet) or `no sample` → subscribers.
    sfu_layers: BTreeMap<String, usize>,
    /// The SFU's bandwidth estimates towards them (sorted), and how many had none.
    estimates: Vec<u64>,
    no_estimate: usize,
}

impl Third {
    /// Each layer's share of the frames received, as `q/h/f` percentages.
    fn shares(&self) -> String {
        let total: u64 = self.frames.iter().sum();
        if total == 0 {
            return "no frames".into();
        }
        self.frames
            .iter()
            .map(|f| format!("{:.0}", *f as f64 * 100.0 / total as f64))
            .collect::<Vec<_>>()
            .join("/")
            + "%"
    }

    fn sfu_says(&self) -> String {
        self.sfu_layers
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn json(&self, secs: f64) -> Value {
        json!({
            "subscribers": self.subscribers,
            "frames_per_layer": LAYERS.iter().zip(self.frames).map(|(l, f)| (l.rid, f)).collect::<BTreeMap<_, _>>(),
            "kbps_per_subscriber": self.bytes as f64 * 8.0 / 1000.0 / secs / self.subscribers.max(1) as f64,
            "sfu_layers": self.sfu_layers,
            "estimates_bps": self.estimates,
            "no_estimate": self.no_estimate,
        })
    }
}

/// A simulcast round's traffic and layer choices.
#[derive(Debug, Clone)]
struct SimRow {
    secs: f64,
    publishers: usize,
    /// Bits/s the publishers' sockets sent (every layer, with RTP/SRTP, RTCP, ICE).
    from_publishers: f64,
    /// Bits/s the subscribers' sockets received.
    to_subscribers: f64,
    /// The SFU's own counters: every datagram in and out.
    sfu_in: Option<f64>,
    sfu_out: Option<f64>,
    /// What sending each publisher's every layer to each of its subscribers would be: per room,
    /// what the publisher sent × its subscribers.
    every_layer: f64,
    /// Frame bits/s written per layer, per publisher.
    layer_bps: [f64; LAYERS.len()],
    /// Per publisher per second: keyframes written (all layers), keyframe requests received.
    keyframes: f64,
    keyframe_requests: f64,
    thirds: [Third; LAYERS.len()],
}

impl SimRow {
    fn saved(&self) -> f64 {
        self.every_layer - self.to_subscribers
    }

    fn json(&self) -> Value {
        json!({
            "publishers": self.publishers,
            "from_publishers_bps": self.from_publishers, "to_subscribers_bps": self.to_subscribers,
            "sfu_in_bps": self.sfu_in, "sfu_out_bps": self.sfu_out,
            "every_layer_to_every_subscriber_bps": self.every_layer, "saved_bps": self.saved(),
            "layer_bps_per_publisher": LAYERS.iter().zip(self.layer_bps).map(|(l, b)| (l.rid, b)).collect::<BTreeMap<_, _>>(),
            "keyframes_per_s_per_publisher": self.keyframes,
            "keyframe_requests_per_s_per_publisher": self.keyframe_requests,
            "thirds": LAYERS.iter().zip(&self.thirds).map(|(l, t)| (l.tile.to_string(), t.json(self.secs))).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// The simulcast figures of a round: `layout` the subscribers per room (one publisher each),
/// `thirds` and `ids` per subscriber its third and id, `quality` the SFU's `quality` reply.
fn simulcast_row(
    layout: &[usize],
    thirds: &[usize],
    ids: &[String],
    a: &Snapshot,
    b: &Snapshot,
    quality: Option<&Value>,
) -> SimRow {
    let secs = (b.at - a.at).as_secs_f64().max(1e-3);
    let bps = |bytes: u64| bytes as f64 * 8.0 / secs;
    let delta = |x: &[u64], y: &[u64]| -> Vec<u64> {
        x.iter().zip(y).map(|(x, y)| y.saturating_sub(*x)).collect()
    };
    let pub_bytes = delta(&a.pub_bytes, &b.pub_bytes);
    let sub_bytes = delta(&a.sub_bytes, &b.sub_bytes);
    let every_layer: u64 = pub_bytes
        .iter()
        .zip(layout)
        .map(|(p, n)| p * *n as u64)
        .sum();
    let traffic = |key: &str| {
        let x = a.traffic.as_ref()?[key].as_u64()?;
        let y = b.traffic.as_ref()?[key].as_u64()?;
        Some(bps(y.saturating_sub(x)))
    };
    let pubs = layout.len().max(1) as f64;
    let mut out: [Third; LAYERS.len()] = Default::default();
    let samples = quality.map(|q| &q["samples"]);
    for (k, third) in thirds.iter().enumerate() {
        let Some(t) = out.get_mut(*third) else {
            continue;
        };
        t.subscribers += 1;
        t.bytes += sub_bytes.get(k).copied().unwrap_or(0);
        if let (Some(before), Some(after)) = (a.streams.get(k), b.streams.get(k)) {
            for (ssrc, end) in after {
                let start = before.get(ssrc).copied().unwrap_or_default();
                for (f, (e, s)) in t
                    .frames
                    .iter_mut()
                    .zip(end.layer_frames.iter().zip(start.layer_frames))
                {
                    *f += e.saturating_sub(s);
                }
            }
        }
        let sample = ids.get(k).and_then(|id| samples?.get(id));
        let said = match sample {
            None => "no sample".to_string(),
            Some(s) if s["paused"] == true => "paused".to_string(),
            Some(s) => {
                let layer = s["layer"].as_str().unwrap_or("none");
                match s["width"].as_u64() {
                    Some(w) => format!("{layer} ({w} px)"),
                    None => layer.to_string(),
                }
            }
        };
        *t.sfu_layers.entry(said).or_default() += 1;
        match sample.and_then(|s| s["estimate_bps"].as_u64()) {
            Some(e) => t.estimates.push(e),
            None => t.no_estimate += 1,
        }
    }
    for t in &mut out {
        t.estimates.sort_unstable();
    }
    SimRow {
        secs,
        publishers: layout.len(),
        from_publishers: bps(pub_bytes.iter().sum()),
        to_subscribers: bps(sub_bytes.iter().sum()),
        sfu_in: traffic("bytes_in"),
        sfu_out: traffic("bytes_out"),
        every_layer: bps(every_layer),
        layer_bps: std::array::from_fn(|i| {
            bps(b.layer_bytes[i].saturating_sub(a.layer_bytes[i])) / pubs
        }),
        keyframes: b.keyframes_sent.saturating_sub(a.keyframes_sent) as f64 / secs / pubs,
        keyframe_requests: b.keyframe_requests.saturating_sub(a.keyframe_requests) as f64
            / secs
            / pubs,
        thirds: out,
    }
}

// ---------------------------------------------------------------------------------------------
// The str0m participants of the SFU round.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
    /// Like a subscriber, alone in its room: connected, no media either way.
    Idle,
}

struct ClientCfg {
    role: Role,
    id: String,
    room: String,
    fps: u32,
    frame_bytes: usize,
    /// Publishers: send the [`LAYERS`] as simulcast.
    simulcast: bool,
    /// Subscribers: the publisher and the width of the tile showing it, told to the SFU once
    /// it answered.
    tile: Option<(String, u32)>,
}

/// One participant: negotiates with the SFU through the child's lines, then runs its session
/// until `stop`. Publishers write a frame every 1/fps once connected (with simulcast, one on
/// each layer, a keyframe where one is due); subscribers (RTP mode) count every new RTP packet
/// per SSRC. Releases `setup` once connected (and, for a subscriber, once media arrived).
async fn participant(
    cfg: ClientCfg,
    ctl: Arc<ChildCtl>,
    dispatch: Arc<Dispatch>,
    stats: Arc<ClientStats>,
    mut stop: watch::Receiver<bool>,
    setup: Arc<Semaphore>,
) -> Result<()> {
    let mut permit = Some(setup.acquire_owned().await.context("setup semaphore")?);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("participant socket")?;
    let addr = socket.local_addr()?;
    let start = Instant::now();
    let subscriber = cfg.role != Role::Publisher;
    let wants_media = cfg.role == Role::Subscriber;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_vp8(true)
        .set_rtp_mode(subscriber)
        .set_stats_interval(Some(Duration::from_secs(1)))
        .build(start);
    rtc.add_local_candidate(Candidate::host(addr, "udp").map_err(|e| anyhow!("candidate: {e}"))?);
    let mut change = rtc.sdp_api();
    let dir = if subscriber {
        Direction::RecvOnly
    } else {
        Direction::SendOnly
    };
    let simulcast = (cfg.simulcast && cfg.role == Role::Publisher).then(|| {
        let mut sim = Simulcast::new();
        for l in &LAYERS {
            sim.add_send_layer(SimulcastLayer::new(l.rid));
        }
        sim
    });
    let mid: Mid = change.add_media(MediaKind::Video, dir, None, None, simulcast);
    // Simulcast: which layers' next frame is a keyframe (the first is, and one asked for).
    let mut keyframe_due = [true; LAYERS.len()];
    let (offer, pending) = change.apply().context("str0m made no offer")?;
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    let mut notices = dispatch.register(&cfg.id);
    ctl.send(
        json!({"op": "negotiate", "room": cfg.room, "id": cfg.id, "sdp": offer.to_sdp_string()}),
    )?;
    let answer_deadline = Instant::now() + ANSWER_WAIT;
    let frame_every = Duration::from_secs(1) / cfg.fps;
    let mut next_frame = start;
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        if permit.is_some()
            && stats.connected.load(Ordering::Relaxed)
            && (!wants_media || stats.has_media())
        {
            permit = None;
        }
        let timeout = loop {
            match rtc.poll_output().context("participant session")? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    if let Ok(n) = socket.send_to(&t.contents, t.destination).await {
                        stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Output::Event(e) => match e {
                    Event::Connected => stats.connected.store(true, Ordering::Relaxed),
                    Event::RtpPacket(p) => {
                        let mut streams = lock(&stats.streams);
                        let stream = streams.entry(*p.header.ssrc).or_default();
                        stream.packet(*p.seq_no, p.payload.len());
                        let start = vp8_frame_start(&p.payload);
                        stream.layer_packet(start, p.payload.len());
                        if let Some(f) = start {
                            stream.frame(f.number);
                        }
                    }
                    Event::KeyframeRequest(req) => {
                        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        for (due, l) in keyframe_due.iter_mut().zip(&LAYERS) {
                            if req.rid.is_none_or(|r| *r == *l.rid) {
                                *due = true;
                            }
                        }
                    }
                    Event::MediaIngressStats(s) => {
                        stats.nacks.store(s.nacks, Ordering::Relaxed);
                    }
                    _ => {}
                },
            }
        };
        let mut wake = timeout;
        if !subscriber {
            wake = wake.min(next_frame);
        }
        if pending.is_some() {
            wake = wake.min(answer_deadline);
        }
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                let Ok(contents) = (&buf[..n]).try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp, source, destination: addr, contents,
                });
                rtc.handle_input(input).context("participant input")?;
            }
            n = notices.recv() => {
                let Some(v) = n else { bail!("the SFU child went away") };
                let sdp = v["sdp"].as_str().unwrap_or_default();
                match v["kind"].as_str() {
                    Some("answer") => {
                        let answer = SdpAnswer::from_sdp_string(sdp).context("the SFU's answer")?;
                        let p = pending.take().context("an answer without an offer")?;
                        rtc.sdp_api().accept_answer(p, answer).context("accepting the SFU's answer")?;
                        // Joined: the SFU knows the participant now and takes its view.
                        if let Some((publisher, width)) = &cfg.tile {
                            ctl.send(json!({"op": "view", "id": cfg.id, "tiles": [[publisher, width]]}))?;
                        }
                    }
                    Some("offer") => {
                        let offer = SdpOffer::from_sdp_string(sdp).context("the SFU's offer")?;
                        let answer = rtc.sdp_api().accept_offer(offer).context("accepting the SFU's offer")?;
                        ctl.send(json!({"op": "answer", "id": cfg.id, "sdp": answer.to_sdp_string()}))?;
                    }
                    _ => bail!("the SFU refused: {}", v["message"]),
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if pending.is_some() && now >= answer_deadline {
                    bail!("no answer from the SFU within {ANSWER_WAIT:?}");
                }
                if !subscriber && now >= next_frame {
                    next_frame += frame_every;
                    if next_frame < now {
                        next_frame = now + frame_every; // fell behind: do not burst
                    }
                    if stats.connected.load(Ordering::Relaxed) {
                        let pt = rtc.codec_config().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt());
                        let time: MediaTime = (now - start).into();
                        if let (Some(pt), true) = (pt, cfg.simulcast) {
                            let number = stats.frames_sent.fetch_add(1, Ordering::Relaxed) + 1;
                            for (i, l) in LAYERS.iter().enumerate() {
                                let Some(w) = rtc.writer(mid) else { break };
                                let keyframe = std::mem::take(&mut keyframe_due[i]);
                                let bytes = l.frame_bytes(cfg.frame_bytes);
                                w.rid(Rid::from(l.rid))
                                    .write(pt, now, time, layer_payload(bytes, number, i, keyframe))
                                    .context("writing a frame")?;
                                stats.layer_bytes_sent[i].fetch_add(bytes as u64, Ordering::Relaxed);
                                if keyframe {
                                    stats.keyframes_sent.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if let (Some(pt), Some(w)) = (pt, rtc.writer(mid)) {
                            let number = stats.frames_sent.fetch_add(1, Ordering::Relaxed) + 1;
                            w.write(pt, now, time, frame_payload(cfg.frame_bytes, number)).context("writing a frame")?;
                        }
                    }
                }
                rtc.handle_input(Input::Timeout(now)).context("participant timeout")?;
            }
        }
    }
}

/// Spawns a participant task that records its error in its stats.
fn spawn_participant(
    cfg: ClientCfg,
    ctl: &Arc<ChildCtl>,
    dispatch: &Arc<Dispatch>,
    stop: &watch::Receiver<bool>,
    setup: &Arc<Semaphore>,
) -> (Arc<ClientStats>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(ClientStats::default());
    let task = tokio::spawn({
        let (ctl, dispatch, stats, stop, setup) = (
            ctl.clone(),
            dispatch.clone(),
            stats.clone(),
            stop.clone(),
            setup.clone(),
        );
        async move {
            if let Err(e) = participant(cfg, ctl, dispatch, stats.clone(), stop, setup).await {
                *lock(&stats.failed) = Some(format!("{e:#}"));
            }
        }
    });
    (stats, task)
}

/// Waits until `done` holds or the deadline passes; returns whether it held.
async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rooms of one publisher and `per_room` subscribers making up `streams` subscriber streams
/// (the last room takes the remainder): the subscriber count of each room.
fn rooms(streams: usize, per_room: usize) -> Vec<usize> {
    let mut rooms = vec![per_room; streams / per_room];
    if streams % per_room > 0 {
        rooms.push(streams % per_room);
    }
    rooms
}

/// Stops the participant tasks (bounded wait) and reports failures.
async fn stop_tasks(stop: watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    let _ = stop.send(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let abort = t.abort_handle();
        if timeout_at(deadline.into(), t).await.is_err() {
            abort.abort();
        }
    }
}

fn failures(stats: &[Arc<ClientStats>]) -> (usize, Option<String>) {
    let failed: Vec<String> = stats
        .iter()
        .filter_map(|s| lock(&s.failed).clone())
        .collect();
    (failed.len(), failed.into_iter().next())
}

/// Asks the SFU child for `op` (`traffic` or `quality`) and returns its reply (None when it
/// does not answer within 5 s; a late reply to an earlier question is passed over).
async fn ask_child(
    ctl: &ChildCtl,
    rx: &mut mpsc::UnboundedReceiver<Value>,
    op: &str,
) -> Option<Value> {
    ctl.send(json!({"op": op})).ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = timeout_at(deadline.into(), rx.recv()).await.ok()??;
        if v["kind"] == op {
            return Some(v);
        }
    }
}

async fn sfu_round(o: &Opts, streams: usize) -> Result<Row> {
    let (ctl, stdout) = ChildCtl::spawn("sfu", o.sfu_cpus.as_deref()).await?;
    let ctl = Arc::new(ctl);
    let dispatch = Arc::new(Dispatch::default());
    let (traffic_tx, mut traffic_rx) = mpsc::unbounded_channel();
    *lock(&dispatch.traffic) = Some(traffic_tx);
    tokio::spawn(read_sfu_lines(stdout, dispatch.clone()));
    let (stop_tx, stop) = watch::channel(false);
    let setup = Arc::new(Semaphore::new(o.parallel));
    let layout = rooms(streams, o.subs_per_room);
    let mut tasks = Vec::new();
    let mut pubs = Vec::new();
    let mut subs = Vec::new();
    let started = Instant::now();
    for (r, _) in layout.iter().enumerate() {
        let cfg = ClientCfg {
            role: Role::Publisher,
            id: format!("pub-{r}"),
            room: format!("room-{r}"),
            fps: o.fps,
            frame_bytes: o.frame_bytes,
            simulcast: o.simulcast,
            tile: None,
        };
        let (s, t) = spawn_participant(cfg, &ctl, &dispatch, &stop, &setup);
        pubs.push(s);
        tasks.push(t);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let pubs_up = wait_until(deadline, || {
        pubs.iter().all(|s| s.connected.load(Ordering::Relaxed))
    })
    .await;
    if !pubs_up {
        let (n, first) = failures(&pubs);
        stop_tasks(stop_tx, tasks).await;
        bail!("publishers did not connect within 30 s ({n} failed; first: {first:?})");
    }
    // Simulcast: per subscriber, the third (index of LAYERS) whose tile size it shows.
    let mut thirds = Vec::new();
    let mut sub_ids = Vec::new();
    for (r, n) in layout.iter().enumerate() {
        for s in 0..*n {
            let third = s % LAYERS.len();
            let cfg = ClientCfg {
                role: Role::Subscriber,
                id: format!("sub-{r}-{s}"),
                room: format!("room-{r}"),
                fps: o.fps,
                frame_bytes: o.frame_bytes,
                simulcast: o.simulcast,
                tile: o
                    .simulcast
                    .then(|| (format!("pub-{r}"), LAYERS[third].tile)),
            };
            sub_ids.push(cfg.id.clone());
            thirds.push(third);
            let (st, t) = spawn_participant(cfg, &ctl, &dispatch, &stop, &setup);
            subs.push(st);
            tasks.push(t);
        }
    }
    let mut idle = Vec::new();
    for i in 0..o.idle {
        let cfg = ClientCfg {
            role: Role::Idle,
            id: format!("idle-{i}"),
            room: format!("idle-room-{i}"),
            fps: o.fps,
            frame_bytes: o.frame_bytes,
            simulcast: false,
            tile: None,
        };
        let (st, t) = spawn_participant(cfg, &ctl, &dispatch, &stop, &setup);
        idle.push(st);
        tasks.push(t);
    }
    // Setting up takes a few ms per subscriber in the SFU: allow 60 s plus 100 ms each.
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(100) * streams as u32;
    wait_until(deadline, || {
        subs.iter().all(|s| s.has_media())
            && idle.iter().all(|s| s.connected.load(Ordering::Relaxed))
    })
    .await;
    let ready = subs.iter().filter(|s| s.has_media()).count();
    let idle_up = idle
        .iter()
        .filter(|s| s.connected.load(Ordering::Relaxed))
        .count();
    if idle_up < o.idle {
        println!(
            "  sfu {streams}: only {idle_up} of {} idle participants connected",
            o.idle
        );
    }
    let (failed, first) = failures(&subs);
    println!(
        "  sfu {streams}: {ready}/{streams} subscribers receiving after {:.1} s ({} rooms; {failed} failed{})",
        started.elapsed().as_secs_f64(),
        layout.len(),
        first.map(|f| format!("; first: {f}")).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(o.warmup)).await;
    if o.simulcast {
        let total = |f: &dyn Fn(&ClientStats) -> &AtomicU64| {
            pubs.iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        println!(
            "  sfu {streams}: before the window the publishers got {} keyframe requests and wrote {} keyframes (all layers; the first frame of each layer is one)",
            total(&|s| &s.keyframe_requests),
            total(&|s| &s.keyframes_sent),
        );
    }
    let t0 = ask_child(&ctl, &mut traffic_rx, "traffic").await;
    let a = snapshot(ctl.pid, &pubs, &subs, t0);
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let t1 = ask_child(&ctl, &mut traffic_rx, "traffic").await;
    let b = snapshot(ctl.pid, &pubs, &subs, t1);
    let mut row = compare("sfu", streams, o.subs_per_room, ready, &a, &b);
    if o.simulcast {
        // After the window's readings: the child's reply costs it CPU outside the window.
        let quality = ask_child(&ctl, &mut traffic_rx, "quality").await;
        row.sim = Some(simulcast_row(
            &layout,
            &thirds,
            &sub_ids,
            &a,
            &b,
            quality.as_ref(),
        ));
    }
    stop_tasks(stop_tx, tasks).await;
    match Arc::try_unwrap(ctl) {
        Ok(ctl) => ctl.stop().await,
        Err(_) => eprintln!("sfu_bench: the SFU child is still referenced; it is killed on exit"),
    }
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// The naive forwarder round.

/// `payload`: the RTP payload bytes per packet to copy (the SFU round's average with
/// simulcast), else `--frame-bytes` split over the packets of a frame.
async fn naive_round(
    o: &Opts,
    streams: usize,
    pps_per_stream: f64,
    payload: Option<f64>,
) -> Result<Row> {
    let (ctl, mut stdout) = ChildCtl::spawn("naive", o.sfu_cpus.as_deref()).await?;
    let layout = rooms(streams, o.subs_per_room);
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut subs = Vec::new();
    let mut pub_sockets = Vec::new();
    for (r, n) in layout.iter().enumerate() {
        let publisher = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let mut to = Vec::new();
        for _ in 0..*n {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            to.push(socket.local_addr()?.to_string());
            let stats = Arc::new(ClientStats::default());
            subs.push(stats.clone());
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; DATAGRAM_MAX];
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        r = socket.recv(&mut buf) => {
                            let Ok(n) = r else { continue };
                            if n < NAIVE_HEADER { continue }
                            let mut ssrc = [0u8; 4];
                            ssrc.copy_from_slice(&buf[..4]);
                            let mut seq = [0u8; 8];
                            seq.copy_from_slice(&buf[4..12]);
                            lock(&stats.streams)
                                .entry(u32::from_be_bytes(ssrc))
                                .or_default()
                                .packet(u64::from_be_bytes(seq), n);
                        }
                    }
                }
            }));
        }
        ctl.send(json!({"op": "route", "from": publisher.local_addr()?.to_string(), "to": to}))?;
        pub_sockets.push((r as u32, publisher));
    }
    ctl.send(json!({"op": "go"}))?;
    let mut line = String::new();
    timeout_at(
        (Instant::now() + CHILD_START).into(),
        stdout.read_line(&mut line),
    )
    .await
    .map_err(|_| anyhow!("the naive forwarder did not take its routes"))??;
    // Packets per frame so that the stream carries what the SFU round delivered per stream.
    let per_frame = ((pps_per_stream / o.fps as f64).round() as usize).max(1);
    let payload = payload.map_or(o.frame_bytes / per_frame, |p| p.round() as usize);
    let size = (payload + NAIVE_OVERHEAD).clamp(NAIVE_HEADER, DATAGRAM_MAX);
    let dest = ctl.addr;
    for (index, socket) in pub_sockets {
        let mut stop = stop.clone();
        let every = Duration::from_secs(1) / o.fps;
        tasks.push(tokio::spawn(async move {
            let mut packet = vec![0u8; size];
            packet[..4].copy_from_slice(&index.to_be_bytes());
            let mut seq: u64 = 0;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {
                        for _ in 0..per_frame {
                            seq += 1;
                            packet[4..12].copy_from_slice(&seq.to_be_bytes());
                            let _ = socket.send_to(&packet, dest).await;
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_until(deadline, || subs.iter().all(|s| s.has_media())).await;
    let ready = subs.iter().filter(|s| s.has_media()).count();
    println!(
        "  naive {streams}: {ready}/{streams} subscribers receiving; {per_frame} datagram(s) of {size} B per frame"
    );
    tokio::time::sleep(Duration::from_secs(o.warmup)).await;
    let a = snapshot(ctl.pid, &[], &subs, None);
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let b = snapshot(ctl.pid, &[], &subs, None);
    let row = compare("naive", streams, o.subs_per_room, ready, &a, &b);
    stop_tasks(stop_tx, tasks).await;
    ctl.stop().await;
    Ok(row)
}

// ---------------------------------------------------------------------------------------------

fn pct(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{:.0}%", v * 100.0))
}

fn print_table(rows: &[Row], o: &Opts) {
    println!();
    println!(
        "== SFU forwarding: rooms of 1 publisher + {} subscribers, {} B frames at {} fps{} ==",
        o.subs_per_room,
        o.frame_bytes,
        o.fps,
        if o.idle > 0 {
            format!(", {} idle SFU participants", o.idle)
        } else {
            String::new()
        }
    );
    println!(
        "| forwarder | streams | receiving | pkt/s per stream | kbit/s per stream | packets forwarded/s | packet loss | frame loss | NACKs | forwarder CPU (1 core = 100%) | µs CPU per packet | streams per core | load CPU | other CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.3}% | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.streams,
            r.ready,
            r.pps_per_stream(),
            r.kbps_per_stream(),
            r.delivered as f64 / r.secs,
            r.packet_loss() * 100.0,
            r.frame_loss()
                .map_or("n/a".into(), |v| format!("{:.3}%", v * 100.0)),
            r.nacks,
            pct(r.forwarder_cpu),
            r.us_per_packet().map_or("?".into(), |v| format!("{v:.2}")),
            r.streams_per_core()
                .map_or("?".into(), |v| format!("{v:.0}")),
            pct(r.own_cpu),
            pct(r.other_cpu()),
        );
    }
    let best = |mode: &str| {
        rows.iter()
            .filter(|r| r.mode == mode && r.loss() < 0.001 && r.ready == r.streams)
            .max_by_key(|r| r.streams)
    };
    for mode in ["sfu", "naive"] {
        match best(mode) {
            Some(r) => println!(
                "{mode}: highest stream count with loss < 0.1%: {} (forwarder at {} of a core, {} µs per packet) → ~{} streams per core (extrapolated when below 100%)",
                r.streams,
                pct(r.forwarder_cpu),
                r.us_per_packet().map_or("?".into(), |v| format!("{v:.2}")),
                r.streams_per_core().map_or("?".into(), |v| format!("{v:.0}")),
            ),
            None if rows.iter().any(|r| r.mode == mode) => {
                println!("{mode}: no stream count stayed below 0.1% loss")
            }
            None => {}
        }
    }
}

/// The simulcast layers and tiles, for headings.
fn layers_described(o: &Opts) -> String {
    let each = |f: &dyn Fn(&Layer) -> String| LAYERS.iter().map(f).collect::<Vec<_>>().join("/");
    format!(
        "layers {} of {} px, {} B frames; subscribers in thirds showing {} px tiles",
        each(&|l| l.rid.to_string()),
        each(&|l| l.width.to_string()),
        each(&|l| l.frame_bytes(o.frame_bytes).to_string()),
        each(&|l| l.tile.to_string()),
    )
}

fn mbps(bps: f64) -> String {
    format!("{:.1}", bps / 1e6)
}

fn print_simulcast_table(rows: &[Row], o: &Opts) {
    println!();
    println!(
        "== SFU simulcast: {}; Mbit/s on the wire (UDP payload) ==",
        layers_described(o)
    );
    let tiles: Vec<String> = LAYERS
        .iter()
        .map(|l| {
            format!(
                "{} px tiles: frames q/h/f, kbit/s each | SFU sends them",
                l.tile
            )
        })
        .collect();
    println!(
        "| streams | from publishers (all layers) | to subscribers | every layer to every subscriber | saved | SFU in / out (all datagrams) | written per publisher q/h/f, kbit/s | keyframes/s (asked) per publisher | {} | SFU estimate towards subscribers: median (min), none |",
        tiles.join(" | ")
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|{}---|",
        "---|---|".repeat(LAYERS.len())
    );
    for r in rows {
        let Some(sim) = &r.sim else { continue };
        let thirds: Vec<String> = sim
            .thirds
            .iter()
            .map(|t| {
                format!(
                    "{}, {:.0} | {}",
                    t.shares(),
                    t.bytes as f64 * 8.0 / 1000.0 / sim.secs / t.subscribers.max(1) as f64,
                    t.sfu_says()
                )
            })
            .collect();
        let mut estimates: Vec<u64> = sim
            .thirds
            .iter()
            .flat_map(|t| t.estimates.iter().copied())
            .collect();
        estimates.sort_unstable();
        let none: usize = sim.thirds.iter().map(|t| t.no_estimate).sum();
        let estimate = match (estimates.get(estimates.len() / 2), estimates.first()) {
            (Some(m), Some(min)) => format!("{} ({}), {none}", mbps(*m as f64), mbps(*min as f64)),
            _ => format!("none ({none})"),
        };
        println!(
            "| {} | {} | {} | {} | {} ({:.0}%) | {} / {} | {} | {:.1} ({:.1}) | {} | {} |",
            r.streams,
            mbps(sim.from_publishers),
            mbps(sim.to_subscribers),
            mbps(sim.every_layer),
            mbps(sim.saved()),
            if sim.every_layer > 0.0 {
                sim.saved() / sim.every_layer * 100.0
            } else {
                0.0
            },
            sim.sfu_in.map_or("?".into(), mbps),
            sim.sfu_out.map_or("?".into(), mbps),
            sim.layer_bps
                .iter()
                .map(|b| format!("{:.0}", b / 1000.0))
                .collect::<Vec<_>>()
                .join("/"),
            sim.keyframes,
            sim.keyframe_requests,
            thirds.join(" | "),
            estimate,
        );
    }
}

async fn bench(o: Opts) -> Result<()> {
    signalbox_sfu::init_crypto();
    println!(
        "# sfu_bench: streams {:?}, {} subscribers per room, {} B × {} fps, warmup {} s, window {} s, forwarder cpus {}, idle SFU participants {}, simulcast {}",
        o.streams,
        o.subs_per_room,
        o.frame_bytes,
        o.fps,
        o.warmup,
        o.secs,
        o.sfu_cpus.as_deref().unwrap_or("any"),
        o.idle,
        if o.simulcast {
            layers_described(&o)
        } else {
            "off".into()
        }
    );
    let mut rows = Vec::new();
    // Without an SFU round to copy from: the packets a frame of this size makes at str0m's MTU.
    let mut pps = (o.frame_bytes.div_ceil(1100) as f64) * o.fps as f64;
    let mut payload = None;
    for &n in &o.streams {
        if o.sfu {
            match sfu_round(&o, n).await {
                Ok(row) => {
                    println!("RESULT {}", row.json());
                    // Copy the packet rate only from a round the SFU kept up with.
                    if row.ready == row.streams && row.loss() < 0.001 {
                        pps = row.pps_per_stream();
                        // Simulcast: the subscribers' layers differ; copy the average packet.
                        if o.simulcast && row.delivered > 0 {
                            payload = Some(row.bytes as f64 / row.delivered as f64);
                        }
                    }
                    rows.push(row);
                }
                Err(e) => println!("  sfu {n}: failed: {e:#}"),
            }
        }
        if o.naive {
            match naive_round(&o, n, pps, payload).await {
                Ok(row) => {
                    println!("RESULT {}", row.json());
                    rows.push(row);
                }
                Err(e) => println!("  naive {n}: failed: {e:#}"),
            }
        }
    }
    print_table(&rows, &o);
    if o.simulcast {
        print_simulcast_table(&rows, &o);
    }
    Ok(())
}
