//! Property tests of the sans-IO TURN core: random sequences of Allocate, Refresh (lifetime 0
//! included), CreatePermission, ChannelBind, Send, ChannelData, peer datagrams, retransmissions,
//! junk, stream closes, sweeps and time advances from several clients, checked against a small
//! model of what RFC 8656 says must hold. Nothing may panic; nothing is relayed for an
//! allocation, permission or channel past its lifetime; quotas hold; every answer is the one
//! the model expects.
#![allow(clippy::disallowed_methods)] // a test is an edge: it reads the clock once, then passes time in

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use signalbox_turn::config::{DefaultFamily, Family};
use signalbox_turn::credentials::{mint, RestCredential};
use signalbox_turn::nonce::NonceKey;
use signalbox_turn::peer_policy::PeerPolicy;
use signalbox_turn::testing::{
    channel_data, method, new_core, read_answer, request, AllocRef, Answer, Attr, ClientOutput,
    Core, CoreConfig, CoreEvent, FiveTuple, Now, Payload, PeerOutput, PortChoice, RelayBinder,
    Signer,
};
use signalbox_turn::Transport;

const SECRET: &[u8] = b"prop-secret";
const REALM: &str = "signalbox";
const NONCE_KEY: [u8; 32] = [7; 32];
const USER_QUOTA: usize = 2;
const TOTAL_QUOTA: usize = 3;
const PERMISSION_SECS: u64 = 300;
const CHANNEL_SECS: u64 = 600;

/// Clients and their users: user `a` has three clients so its quota (2) is reachable, and five
/// clients in all exceed the total quota (3). Client 2 is a TCP connection.
const CLIENTS: [(&str, Transport, [u8; 4], u16); 5] = [
    ("a", Transport::Udp, [203, 0, 113, 1], 5000),
    ("b", Transport::Udp, [203, 0, 113, 2], 5000),
    ("a", Transport::Tcp, [203, 0, 113, 3], 6000),
    ("a", Transport::Udp, [203, 0, 113, 4], 5001),
    ("c", Transport::Udp, [198, 18, 0, 9], 7000),
];

/// Peers: two ports of one IP (permissions are per IP, channels per address), another
/// public IP, a private one the policy refuses (403), and IPv6 for an IPv4 relay (443).
fn peers() -> [SocketAddr; 5] {
    [
        SocketAddr::from(([8, 8, 8, 8], 1000)),
        SocketAddr::from(([8, 8, 8, 8], 2000)),
        SocketAddr::from(([1, 1, 1, 1], 3000)),
        SocketAddr::from(([10, 0, 0, 1], 4000)),
        "[2606:4700::1111]:5000".parse().expect("v6 peer"),
    ]
}

fn allowed(p: SocketAddr) -> bool {
    p.is_ipv4() && !matches!(p.ip(), IpAddr::V4(ip) if ip.is_private())
}

fn tuple(c: usize) -> FiveTuple {
    let (_, transport, ip, port) = CLIENTS[c];
    FiveTuple {
        client: SocketAddr::from((ip, port)),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        c: usize,
        lifetime: Option<u32>,
    },
    Refresh {
        c: usize,
        lifetime: u32,
    },
    Permit {
        c: usize,
        p: usize,
    },
    Bind {
        c: usize,
        ch: u16,
        p: usize,
    },
    Send {
        c: usize,
        p: usize,
        len: usize,
    },
    ChannelData {
        c: usize,
        ch: u16,
        len: usize,
    },
    FromPeer {
        c: usize,
        p: usize,
        len: usize,
    },
    /// Sends the client's last request again at the same instant.
    Retransmit {
        c: usize,
    },
    /// An unauthenticated request (Binding or a TURN method).
    Unsigned {
        c: usize,
        method: u16,
    },
    /// Bytes that are neither STUN nor ChannelData.
    Junk {
        c: usize,
        bytes: Vec<u8>,
    },
    /// A stream transport closed.
    Close {
        c: usize,
    },
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    // Biased towards two clients and the allowed peers, so that state builds up and data is
    // relayed often; the others keep the quotas and refusals in play.
    let c = prop_oneof![4 => Just(0usize), 3 => Just(1usize), 2 => 2..CLIENTS.len()];
    let p = prop_oneof![4 => 0..3usize, 1 => 3..5usize];
    let ch = prop_oneof![
        4 => 0x4000u16..0x4003,
        1 => Just(0x3FFFu16),
        1 => Just(0x7FFFu16),
    ];
    let refresh_lifetime = prop_oneof![3 => Just(0u32), 2 => 1..700u32, 1 => 3000..5000u32];
    let advance = prop_oneof![
        3 => 0..5u64,
        2 => 295..305u64,
        2 => 595..605u64,
        1 => 3595..3605u64,
    ];
    prop_oneof![
        4 => (c.clone(), proptest::option::of(0..5000u32))
            .prop_map(|(c, lifetime)| Op::Allocate { c, lifetime }),
        2 => (c.clone(), refresh_lifetime).prop_map(|(c, lifetime)| Op::Refresh { c, lifetime }),
        3 => (c.clone(), p.clone()).prop_map(|(c, p)| Op::Permit { c, p }),
        3 => (c.clone(), ch.clone(), p.clone()).prop_map(|(c, ch, p)| Op::Bind { c, ch, p }),
        3 => (c.clone(), p.clone(), 0..200usize).prop_map(|(c, p, len)| Op::Send { c, p, len }),
        3 => (c.clone(), 0x4000u16..0x4003, 0..200usize)
            .prop_map(|(c, ch, len)| Op::ChannelData { c, ch, len }),
        3 => (c.clone(), p, 0..200usize).prop_map(|(c, p, len)| Op::FromPeer { c, p, len }),
        1 => c.clone().prop_map(|c| Op::Retransmit { c }),
        1 => (c.clone(), prop::sample::select(vec![
            method::BINDING, method::ALLOCATE, method::REFRESH,
            method::CREATE_PERMISSION, method::CHANNEL_BIND,
        ])).prop_map(|(c, method)| Op::Unsigned { c, method }),
        1 => (c.clone(), prop::collection::vec(any::<u8>(), 0..48))
            .prop_map(|(c, bytes)| Op::Junk { c, bytes }),
        1 => c.prop_map(|c| Op::Close { c }),
        4 => advance.prop_map(Op::Advance),
        2 => Just(Op::Sweep),
    ]
}

/// Fake relay sockets: the handle is a serial number; every bind is remembered.
#[derive(Default)]
struct Binder {
    bound: Vec<AllocRef>,
}

impl RelayBinder<u32> for Binder {
    fn bind(
        &mut self,
        alloc: AllocRef,
        _family: Family,
        _port: PortChoice,
    ) -> std::io::Result<(SocketAddr, u32)> {
        self.bound.push(alloc);
        let n = u32::try_from(self.bound.len()).unwrap_or(u32::MAX);
        let port = 49152 + u16::try_from(n % 16_000).unwrap_or(0);
        Ok((SocketAddr::from(([198, 51, 100, 1], port)), n))
    }
}

/// What the model believes about one live allocation (times in seconds since the start).
#[derive(Debug, Clone)]
struct ModelAlloc {
    expires: u64,
    relay: u32,
    relay_addr: SocketAddr,
    alloc: AllocRef,
    perms: HashMap<IpAddr, u64>,
    /// channel number → (peer, expiry)
    channels: HashMap<u16, (SocketAddr, u64)>,
}

impl ModelAlloc {
    fn perm(&self, ip: IpAddr, t: u64) -> bool {
        self.perms.get(&ip).is_some_and(|&e| e > t)
    }

    fn channel(&self, ch: u16, t: u64) -> Option<SocketAddr> {
        self.channels
            .get(&ch)
            .filter(|(_, e)| *e > t)
            .map(|(p, _)| *p)
    }

    fn channel_of(&self, peer: SocketAddr, t: u64) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, (p, e))| *p == peer && *e > t)
            .map(|(n, _)| *n)
    }
}

/// A client's last request, its answer and the model time it was sent.
type Sent = (Vec<u8>, Vec<u8>, u64);

struct World {
    core: Core<u32>,
    binder: Binder,
    nonce: NonceKey,
    start: Instant,
    wall: SystemTime,
    t: u64,
    creds: Vec<RestCredential>,
    tid: u64,
    /// Per client: the model allocation while it is within its lifetime (expired ones are
    /// dropped from the model by `live`).
    allocs: Vec<Option<ModelAlloc>>,
    /// Every allocation ref ever handed out per client (stale ones must be Gone).
    past: Vec<Vec<AllocRef>>,
    last: Vec<Option<Sent>>,
    opened: usize,
    closed: usize,
}

impl World {
    fn new() -> Self {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cfg = CoreConfig {
            realm: REALM.into(),
            secrets: vec![SECRET.to_vec()],
            policy: PeerPolicy::default(),
            user_quota: USER_QUOTA as u32,
            total_quota: TOTAL_QUOTA as u32,
            max_bitrate_bps: None,
            relays: vec![(Family::V4, None)],
            default_family: DefaultFamily::Ipv4,
        };
        let creds = CLIENTS
            .iter()
            .map(|(user, ..)| mint(SECRET, user, 1_700_000_000, 10 * 365 * 86_400))
            .collect();
        World {
            core: new_core(cfg, NonceKey::new(NONCE_KEY)),
            binder: Binder::default(),
            nonce: NonceKey::new(NONCE_KEY),
            start: Instant::now(),
            wall,
            t: 0,
            creds,
            tid: 0,
            allocs: vec![None; CLIENTS.len()],
            past: vec![Vec::new(); CLIENTS.len()],
            last: vec![None; CLIENTS.len()],
            opened: 0,
            closed: 0,
        }
    }

    fn now(&self) -> Now {
        let d = Duration::from_secs(self.t);
        Now {
            instant: self.start + d,
            wall: self.wall + d,
        }
    }

    /// The model allocation of `c` if it is within its lifetime.
    fn live(&self, c: usize) -> Option<&ModelAlloc> {
        self.allocs[c].as_ref().filter(|a| a.expires > self.t)
    }

    fn live_mut(&mut self, c: usize) -> Option<&mut ModelAlloc> {
        let t = self.t;
        self.allocs[c].as_mut().filter(|a| a.expires > t)
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[4..].copy_from_slice(&self.tid.to_be_bytes());
        tid
    }

    fn send(&mut self, c: usize, bytes: &[u8]) -> ClientOutput<u32> {
        let now = self.now();
        self.core
            .handle_client(tuple(c), bytes, now, &mut self.binder)
    }

    /// Sends a signed request from client `c` and returns the decoded answer.
    fn ask(&mut self, c: usize, m: u16, attrs: &[Attr]) -> Answer {
        let tid = self.next_tid();
        let nonce = self.nonce.issue(tuple(c).client, self.now().unix());
        let cred = self.creds[c].clone();
        let raw = request(
            m,
            false,
            tid,
            attrs,
            Some(&Signer {
                username: &cred.username,
                password: &cred.password,
                realm: REALM,
                nonce: &nonce,
            }),
        );
        let out = self.send(c, &raw);
        let ClientOutput::Reply(reply) = out else {
            panic!("a signed request gets an answer, got {out:?}");
        };
        let answer = read_answer(&reply).expect("the answer decodes");
        assert_eq!(
            answer.tid, tid,
            "the answer carries the request's transaction id"
        );
        self.last[c] = Some((raw, reply, self.t));
        answer
    }

    fn user_live(&self, user: &str) -> usize {
        (0..CLIENTS.len())
            .filter(|&c| CLIENTS[c].0 == user && self.live(c).is_some())
            .count()
    }

    fn total_live(&self) -> usize {
        (0..CLIENTS.len())
            .filter(|&c| self.live(c).is_some())
            .count()
    }

    fn apply(&mut self, op: &Op) {
        let peers = peers();
        match *op {
            Op::Allocate { c, lifetime } => {
                let mut attrs = vec![Attr::RequestedTransport(17)];
                if let Some(l) = lifetime {
                    attrs.push(Attr::Lifetime(l));
                }
                let expected = if self.live(c).is_some() {
                    Err(437)
                } else if self.user_live(CLIENTS[c].0) >= USER_QUOTA {
                    Err(486)
                } else if self.total_live() >= TOTAL_QUOTA {
                    Err(508)
                } else {
                    Ok(u64::from(lifetime.unwrap_or(600)).clamp(600, 3600))
                };
                let a = self.ask(c, method::ALLOCATE, &attrs);
                match expected {
                    Ok(granted) => {
                        assert!(a.success, "allocate should succeed: {a:?}");
                        assert_eq!(a.lifetime.map(u64::from), Some(granted));
                        assert_eq!(a.mapped, Some(tuple(c).client));
                        let alloc = *self.binder.bound.last().expect("a relay was bound");
                        assert_eq!(alloc.tuple, tuple(c));
                        self.past[c].push(alloc);
                        self.allocs[c] = Some(ModelAlloc {
                            expires: self.t + granted,
                            relay: u32::try_from(self.binder.bound.len()).unwrap_or(0),
                            relay_addr: a.relayed.expect("XOR-RELAYED-ADDRESS"),
                            alloc,
                            perms: HashMap::new(),
                            channels: HashMap::new(),
                        });
                    }
                    Err(code) => assert_eq!(a.code, Some(code), "allocate: {a:?}"),
                }
            }
            Op::Refresh { c, lifetime } => {
                let live = self.live(c).is_some();
                let a = self.ask(c, method::REFRESH, &[Attr::Lifetime(lifetime)]);
                if !live {
                    assert_eq!(a.code, Some(437), "refresh without allocation: {a:?}");
                } else if lifetime == 0 {
                    assert!(a.success, "refresh 0: {a:?}");
                    assert_eq!(a.lifetime, Some(0));
                    self.allocs[c] = None;
                } else {
                    let granted = u64::from(lifetime).clamp(600, 3600);
                    assert!(a.success, "refresh: {a:?}");
                    assert_eq!(a.lifetime.map(u64::from), Some(granted));
                    let t = self.t;
                    if let Some(m) = self.live_mut(c) {
                        m.expires = t + granted;
                    }
                }
            }
            Op::Permit { c, p } => {
                let peer = peers[p];
                let live = self.live(c).is_some();
                let a = self.ask(c, method::CREATE_PERMISSION, &[Attr::XorPeer(peer)]);
                let expected = if !live {
                    Err(437)
                } else if peer.is_ipv6() {
                    Err(443)
                } else if !allowed(peer) {
                    Err(403)
                } else {
                    Ok(())
                };
                match expected {
                    Ok(()) => {
                        assert!(a.success, "create-permission: {a:?}");
                        let t = self.t;
                        if let Some(m) = self.live_mut(c) {
                            m.perms.insert(peer.ip(), t + PERMISSION_SECS);
                        }
                    }
                    Err(code) => assert_eq!(a.code, Some(code), "create-permission: {a:?}"),
                }
            }
            Op::Bind { c, ch, p } => {
                let peer = peers[p];
                let t = self.t;
                let expected = match self.live(c) {
                    None => Err(437),
                    Some(_) if !(0x4000..=0x7FFF).contains(&ch) => Err(400),
                    Some(_) if peer.is_ipv6() => Err(443),
                    Some(_) if !allowed(peer) => Err(403),
                    Some(m) if m.channel(ch, t).is_some_and(|q| q != peer) => Err(400),
                    Some(m) if m.channel_of(peer, t).is_some_and(|n| n != ch) => Err(400),
                    Some(_) => Ok(()),
                };
                let a = self.ask(
                    c,
                    method::CHANNEL_BIND,
                    &[Attr::Channel(ch), Attr::XorPeer(peer)],
                );
                match expected {
                    Ok(()) => {
                        assert!(a.success, "channel-bind: {a:?}");
                        if let Some(m) = self.live_mut(c) {
                            m.channels.retain(|n, (q, _)| *n == ch || *q != peer);
                            m.channels.insert(ch, (peer, t + CHANNEL_SECS));
                            m.perms.insert(peer.ip(), t + PERMISSION_SECS);
                        }
                    }
                    Err(code) => assert_eq!(a.code, Some(code), "channel-bind: {a:?}"),
                }
            }
            Op::Send { c, p, len } => {
                let peer = peers[p];
                let data = vec![0x5A; len];
                let tid = self.next_tid();
                let raw = request(
                    method::SEND,
                    true,
                    tid,
                    &[Attr::XorPeer(peer), Attr::Data(data.clone())],
                    None,
                );
                let t = self.t;
                let expect = self
                    .live(c)
                    .filter(|m| m.perm(peer.ip(), t))
                    .map(|m| m.relay);
                match (self.send(c, &raw), expect) {
                    (ClientOutput::Nothing, None) => {}
                    (
                        ClientOutput::Relay {
                            relay,
                            peer: to,
                            payload,
                        },
                        Some(r),
                    ) => {
                        assert_eq!((relay, to, payload), (r, peer, Payload::Owned(data)));
                    }
                    (out, expect) => panic!("send to {peer}: got {out:?}, expected {expect:?}"),
                }
            }
            Op::ChannelData { c, ch, len } => {
                let t = self.t;
                let expect = self.live(c).and_then(|m| {
                    let peer = m.channel(ch, t)?;
                    m.perm(peer.ip(), t).then_some((m.relay, peer))
                });
                let frame = channel_data(ch, &vec![0xC3; len]);
                match (self.send(c, &frame), expect) {
                    (ClientOutput::Nothing, None) => {}
                    (
                        ClientOutput::Relay {
                            relay,
                            peer,
                            payload,
                        },
                        Some((r, p)),
                    ) => {
                        assert_eq!((relay, peer), (r, p));
                        assert_eq!(payload, Payload::Input(4..4 + len));
                    }
                    (out, expect) => {
                        panic!("channel data {ch:#x}: got {out:?}, expected {expect:?}")
                    }
                }
            }
            Op::FromPeer { c, p, len } => {
                let peer = peers[p];
                let t = self.t;
                let now = self.now().instant;
                // The current allocation's relay, or an old one of this client (must be Gone).
                let (alloc, expect) = match (self.live(c), self.past[c].last()) {
                    (Some(m), _) => {
                        let want = if !m.perm(peer.ip(), t) {
                            PeerOutput::Drop
                        } else {
                            match m.channel_of(peer, t) {
                                Some(n) => PeerOutput::Channel(n),
                                None => PeerOutput::Indication,
                            }
                        };
                        (m.alloc, Some(want))
                    }
                    (None, Some(old)) => (*old, None),
                    (None, None) => return,
                };
                let got = self.core.handle_peer(alloc, peer, len, now);
                match expect {
                    Some(want) => assert_eq!(got, want, "from peer {peer}"),
                    None => assert!(
                        matches!(got, PeerOutput::Gone | PeerOutput::Drop),
                        "a peer datagram for a finished allocation is not relayed: {got:?}"
                    ),
                }
            }
            Op::Retransmit { c } => {
                let Some((raw, reply, at)) = self.last[c].clone() else {
                    return;
                };
                if at != self.t {
                    return;
                }
                match self.send(c, &raw) {
                    ClientOutput::Reply(again) => {
                        assert_eq!(again, reply, "a retransmission gets the same answer")
                    }
                    other => panic!("retransmission: {other:?}"),
                }
            }
            Op::Unsigned { c, method: m } => {
                let tid = self.next_tid();
                let raw = request(m, false, tid, &[Attr::RequestedTransport(17)], None);
                let ClientOutput::Reply(reply) = self.send(c, &raw) else {
                    panic!("an unsigned request gets an answer");
                };
                let a = read_answer(&reply).expect("answer");
                if m == method::BINDING {
                    assert!(a.success);
                    assert_eq!(a.mapped, Some(tuple(c).client));
                } else {
                    assert_eq!(a.code, Some(401), "unsigned {m:#x}: {a:?}");
                    assert!(a.nonce.is_some(), "a 401 carries a nonce");
                }
            }
            Op::Junk { c, ref bytes } => {
                let mut bytes = bytes.clone();
                if let Some(b) = bytes.first_mut() {
                    *b |= 0x80; // first two bits 1x: neither STUN nor ChannelData
                }
                let out = self.send(c, &bytes);
                assert_eq!(out, ClientOutput::Nothing, "junk is ignored");
            }
            Op::Close { c } => {
                let now = self.now();
                self.core.close_tuple(tuple(c), now);
                self.allocs[c] = None;
            }
            Op::Advance(secs) => self.t += secs,
            Op::Sweep => {
                let now = self.now();
                self.core.sweep(now);
                let t = self.t;
                for a in &mut self.allocs {
                    if a.as_ref().is_some_and(|m| m.expires <= t) {
                        *a = None;
                    }
                }
                let size = self.core.state_size();
                let live: Vec<&ModelAlloc> = self.allocs.iter().flatten().collect();
                assert_eq!(size.allocations, live.len(), "after a sweep, counts match");
                assert_eq!(size.relay_addresses, live.len());
                let perms: usize = live
                    .iter()
                    .map(|m| m.perms.values().filter(|&&e| e > t).count())
                    .sum();
                let channels: usize = live
                    .iter()
                    .map(|m| m.channels.values().filter(|(_, e)| *e > t).count())
                    .sum();
                assert_eq!(size.permissions, perms, "expired permissions are gone");
                assert_eq!(size.channels, channels, "expired channels are gone");
            }
        }
    }

    /// Invariants after every step.
    fn check(&mut self) {
        for ev in self.core.drain_events() {
            match ev {
                CoreEvent::Opened(_) => self.opened += 1,
                CoreEvent::Closed { info, .. } => {
                    self.closed += 1;
                    let c = (0..CLIENTS.len())
                        .find(|&c| tuple(c).client == info.client)
                        .expect("a known client");
                    assert_ne!(
                        self.live(c).map(|m| m.relay_addr),
                        Some(info.relay),
                        "an allocation within its lifetime was closed"
                    );
                }
                CoreEvent::Unreserved { .. } => {}
            }
        }
        let size = self.core.state_size();
        assert_eq!(
            self.opened - self.closed,
            size.allocations,
            "every allocation held was opened and not yet closed"
        );
        assert!(size.allocations <= TOTAL_QUOTA, "total quota: {size:?}");
        let live = self.core.live_allocations();
        for (user, ..) in CLIENTS {
            let held = live.iter().filter(|a| a.user == user).count();
            assert!(held <= USER_QUOTA, "user {user} holds {held}");
        }
        assert!(
            size.users <= 3 && size.reservations == 0,
            "no stray state: {size:?}"
        );
        // Everything the model says is live is held by the core.
        for c in 0..CLIENTS.len() {
            if let Some(m) = self.live(c) {
                assert!(
                    live.iter().any(|a| a.relay == m.relay_addr),
                    "client {c}'s allocation is missing"
                );
            }
        }
    }
}

/// 256 cases per `cargo test` (about 3 s in a debug build); `PROPTEST_CASES=N` for a deeper run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn turn_core_keeps_lifetimes_quotas_and_answers(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
            w.check();
        }
    }
}
