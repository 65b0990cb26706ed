//! Fuzzes the sans-IO TURN core with time passed in: the input drives a sequence of raw
//! datagrams and frames from arbitrary client addresses and transports, requests with arbitrary
//! methods and attributes that are correctly signed (so they get past authentication into the
//! Allocate/Refresh/CreatePermission/ChannelBind handlers), ChannelData, peer datagrams on relay
//! sockets, time advances, sweeps and stream closes, under an arbitrary configuration. Nothing
//! may panic, and:
//! - every reply is a STUN response to the request's transaction, with an error code the core
//!   documents; a retransmission gets the same answer; a fresh success says what happened
//!   (Binding and Allocate give the client's address, Allocate the relayed address of the
//!   allocation now on that 5-tuple and a lifetime within bounds, Refresh 0 removes it);
//! - relaying happens only from the allocation on that 5-tuple, and a ChannelData payload is
//!   exactly the frame's data;
//! - a peer datagram is `Gone` exactly when its allocation is not the current one, and goes to a
//!   channel number in range;
//! - allocations stay within the total and per-user quotas, each has its own relay address,
//!   and each closes once.
//!
//! Set `TURN_CORE_TRACE=1` to print every step and answer when replaying one input.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use signalbox_turn::config::{DefaultFamily, Family};
use signalbox_turn::credentials::mint;
use signalbox_turn::nonce::NonceKey;
use signalbox_turn::peer_policy::PeerPolicy;
use signalbox_turn::testing::{
    channel_data, classify, method, new_core, read_answer, request, AllocRef, Attr, ClientOutput,
    Core, CoreConfig, CoreEvent, FiveTuple, Kind, Now, Payload, PeerOutput, PortChoice,
    RelayBinder, Signer, CHANNEL_DATA_HEADER,
};
use signalbox_turn::{Transport, DEFAULT_LIFETIME, MAX_LIFETIME};

const SECRET: &[u8] = b"fuzz-secret";
const REALM: &str = "signalbox";
const NONCE_KEY: [u8; 32] = [3; 32];
const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Attribute types a request may carry: those the core reads, some it ignores, and unknown
/// comprehension-required and optional ones.
const ATTR_TYPES: [u16; 16] = [
    0x000C, 0x000D, 0x0012, 0x0013, 0x0016, 0x0017, 0x0018, 0x0019, 0x001A, 0x0022, 0x0024, 0x0025,
    0x8022, 0x8028, 0x0042, 0xC001,
];

/// Error codes the core answers with (RFC 8489 / RFC 8656).
const ERROR_CODES: [u16; 12] = [400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508];

/// Relay sockets that may fail to bind and, like the OS, never bind a port that is still in
/// use; records what was bound so peer datagrams can target current and stale allocations.
struct Binder {
    fail: bool,
    next_port: u16,
    /// Every bind: the allocation, its address, its handle.
    bound: Vec<(AllocRef, SocketAddr, u32)>,
    /// Ports of relay sockets not closed yet, by handle.
    open: HashMap<u32, (Family, u16)>,
}

impl RelayBinder<u32> for Binder {
    fn bind(
        &mut self,
        alloc: AllocRef,
        family: Family,
        port: PortChoice,
    ) -> std::io::Result<(SocketAddr, u32)> {
        let in_use = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use");
        if self.fail {
            return Err(in_use());
        }
        let port = match port {
            PortChoice::Exact(p) => p,
            PortChoice::Even { .. } => {
                self.next_port = self.next_port.wrapping_add(2) & !1;
                self.next_port
            }
            PortChoice::Any => {
                self.next_port = self.next_port.wrapping_add(1);
                self.next_port
            }
        };
        if self.open.values().any(|&p| p == (family, port)) {
            return Err(in_use());
        }
        let ip: IpAddr = match family {
            Family::V4 => Ipv4Addr::new(198, 51, 100, 1).into(),
            Family::V6 => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        };
        let addr = SocketAddr::new(ip, port);
        let handle = u32::try_from(self.bound.len()).unwrap_or(u32::MAX);
        self.bound.push((alloc, addr, handle));
        self.open.insert(handle, (family, port));
        Ok((addr, handle))
    }
}

fn trace() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TURN_CORE_TRACE").is_some())
}

/// The method of a STUN message type (the class bits taken out).
fn method_of(raw: &[u8]) -> u16 {
    let t = u16::from_be_bytes([raw[0], raw[1]]);
    (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
}

/// Whether a STUN message type is a request (class 00).
fn is_request(raw: &[u8]) -> bool {
    u16::from_be_bytes([raw[0], raw[1]]) & 0x0110 == 0
}

fn addr(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    // Mostly a handful of known clients (so state builds up), sometimes anything.
    let ip = match u.int_in_range(0..=5u8)? {
        0 => IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?)),
        1 => IpAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?)),
        2 => "::ffff:203.0.113.5"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        n => IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)),
    };
    let port = if u.ratio(1, 4)? { u.arbitrary()? } else { 5000 };
    Ok(SocketAddr::new(ip, port))
}

fn tuple(u: &mut Unstructured<'_>) -> Result<FiveTuple> {
    let transport = *u.choose(&[Transport::Udp, Transport::Tcp, Transport::Tls])?;
    Ok(FiveTuple {
        client: addr(u)?,
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport,
    })
}

fn peer(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => SocketAddr::from(([8, 8, 8, 8], 1000)),
        1 => SocketAddr::from(([1, 1, 1, 1], u.arbitrary()?)),
        2 => SocketAddr::from(([127, 0, 0, 1], 4000)),
        3 => SocketAddr::from(([198, 51, 100, 1], u.arbitrary()?)), // our own relays
        _ => addr(u)?,
    })
}

/// Up to `max` bytes of input.
fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n)?.to_vec())
}

fn attr(u: &mut Unstructured<'_>) -> Result<Attr> {
    Ok(match u.int_in_range(0..=6u8)? {
        0 => Attr::Lifetime(u.arbitrary()?),
        1 => Attr::RequestedTransport(if u.ratio(3, 4)? { 17 } else { u.arbitrary()? }),
        2 => Attr::XorPeer(peer(u)?),
        3 => Attr::Channel(u.arbitrary()?),
        4 => Attr::Data(bytes(u, 64)?),
        5 => Attr::Raw(*u.choose(&ATTR_TYPES)?, bytes(u, 24)?),
        _ => Attr::Raw(u.arbitrary()?, bytes(u, 24)?),
    })
}

struct World {
    core: Core<u32>,
    binder: Binder,
    nonce: NonceKey,
    start: Instant,
    wall: SystemTime,
    t: Duration,
    total_quota: usize,
    user_quota: usize,
    /// Transactions seen per 5-tuple: a repeated one may be answered from the reply cache.
    seen: HashSet<(FiveTuple, [u8; 12])>,
}

impl World {
    fn now(&self) -> Now {
        Now {
            instant: self.start + self.t,
            wall: self.wall + self.t,
        }
    }

    /// Hands the core one datagram or frame and checks what it does with it.
    fn client(&mut self, t: FiveTuple, raw: &[u8], now: Now) -> ClientOutput<u32> {
        let out = self.core.handle_client(t, raw, now, &mut self.binder);
        if trace() {
            eprintln!("  {t:?} {} bytes -> {out:?}", raw.len());
        }
        match &out {
            ClientOutput::Nothing => {}
            ClientOutput::Reply(bytes) => self.check_reply(t, raw, bytes),
            ClientOutput::Relay {
                relay,
                peer: _,
                payload,
            } => {
                let current = self.core.relay_of(&t).map(|(r, _)| *r);
                assert_eq!(
                    current,
                    Some(*relay),
                    "relays from the 5-tuple's allocation"
                );
                match (payload, classify(raw)) {
                    (Payload::Input(range), Kind::ChannelData(_, len)) => {
                        assert_eq!(*range, CHANNEL_DATA_HEADER..CHANNEL_DATA_HEADER + len);
                        assert!(range.end <= raw.len(), "the payload lies in the frame");
                    }
                    (Payload::Owned(data), Kind::Stun(_)) => {
                        assert_eq!(method_of(raw), method::SEND, "only Send relays from STUN");
                        assert!(data.len() < raw.len());
                    }
                    (p, k) => panic!("relayed {p:?} out of {k:?}"),
                }
            }
        }
        out
    }

    fn check_reply(&mut self, t: FiveTuple, raw: &[u8], bytes: &[u8]) {
        assert!(
            matches!(classify(raw), Kind::Stun(_)) && is_request(raw),
            "only STUN requests are answered"
        );
        let a = read_answer(bytes).expect("a reply is a STUN response");
        let tid: [u8; 12] = raw[8..20].try_into().expect("12 bytes");
        assert_eq!(a.tid, tid, "a reply answers the request's transaction");
        assert_eq!(a.success, a.code.is_none(), "{a:?}");
        if let Some(code) = a.code {
            assert!(ERROR_CODES.contains(&code), "undocumented error {code}");
        }
        // A transaction seen before may be answered from the reply cache, as it was then.
        if !self.seen.insert((t, tid)) || !a.success {
            return;
        }
        let lifetime_ok = |l: Option<u32>| {
            l.is_some_and(|l| {
                (DEFAULT_LIFETIME.as_secs()..=MAX_LIFETIME.as_secs()).contains(&u64::from(l))
            })
        };
        match method_of(raw) {
            method::BINDING => assert_eq!(a.mapped, Some(t.client), "Binding: {a:?}"),
            method::ALLOCATE => {
                let relay = self.core.relay_of(&t).map(|(_, addr)| addr);
                assert!(relay.is_some(), "a successful Allocate allocates");
                assert_eq!(a.relayed, relay, "Allocate: {a:?}");
                assert_eq!(a.mapped, Some(t.client), "Allocate: {a:?}");
                assert!(lifetime_ok(a.lifetime), "Allocate: {a:?}");
            }
            method::REFRESH if a.lifetime == Some(0) => {
                assert!(self.core.relay_of(&t).is_none(), "Refresh 0 deallocates");
            }
            method::REFRESH => {
                assert!(lifetime_ok(a.lifetime), "Refresh: {a:?}");
                assert!(self.core.relay_of(&t).is_some());
            }
            method::CREATE_PERMISSION | method::CHANNEL_BIND => {
                assert!(self.core.relay_of(&t).is_some(), "needs an allocation");
            }
            m => panic!("success for method {m:#x}"),
        }
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let now = self.now();
        match u.int_in_range(0..=8u8)? {
            // Raw bytes from anyone.
            0 => {
                let t = tuple(u)?;
                let raw = bytes(u, 200)?;
                self.client(t, &raw, now);
            }
            // A signed request or indication with arbitrary method and attributes.
            1 | 2 | 3 => {
                let t = tuple(u)?;
                let method = if u.ratio(7, 8)? {
                    *u.choose(&[0x001u16, 0x003, 0x004, 0x006, 0x008, 0x009])?
                } else {
                    u.arbitrary()?
                };
                let indication = u.ratio(1, 8)?;
                let n = u.int_in_range(0..=5usize)?;
                let mut attrs = Vec::with_capacity(n);
                for _ in 0..n {
                    attrs.push(attr(u)?);
                }
                let user = *u.choose(&USERS)?;
                // Usually valid credentials; sometimes expired, or a wrong password.
                let issued = if u.ratio(1, 8)? {
                    1_600_000_000
                } else {
                    now.unix()
                };
                let cred = mint(SECRET, user, issued, 86_400);
                let password = if u.ratio(1, 8)? {
                    "wrong"
                } else {
                    &cred.password
                };
                let nonce = if u.ratio(1, 8)? {
                    String::from_utf8_lossy(u.bytes(36)?).into_owned()
                } else {
                    self.nonce.issue(t.client, now.unix())
                };
                let signer = Signer {
                    username: &cred.username,
                    password,
                    realm: REALM,
                    nonce: &nonce,
                };
                let tid: [u8; 12] = u.arbitrary()?;
                let raw = request(method, indication, tid, &attrs, Some(&signer));
                if trace() {
                    eprintln!("request {method:#x} indication={indication} {attrs:?} as {user}");
                }
                let first = self.client(t, &raw, now);
                // Sometimes the same bytes again (a retransmission): the same answer.
                if u.ratio(1, 8)? {
                    let again = self.client(t, &raw, now);
                    if let ClientOutput::Reply(_) = first {
                        assert_eq!(first, again, "a retransmission gets the same answer");
                    }
                }
            }
            // ChannelData, possibly with a lying length.
            4 => {
                let t = tuple(u)?;
                let channel = 0x4000 | (u.arbitrary::<u16>()? & 0x3FFF);
                let mut frame = channel_data(channel, &bytes(u, 64)?);
                if u.ratio(1, 4)? {
                    frame.truncate(u.int_in_range(0..=frame.len())?);
                }
                self.client(t, &frame, now);
            }
            // A datagram from a peer on a current or stale relay socket.
            5 => {
                if self.binder.bound.is_empty() {
                    return Ok(());
                }
                let (alloc, _, handle) = *u.choose(&self.binder.bound)?;
                let p = peer(u)?;
                let len = u.int_in_range(0..=1500usize)?;
                let current = self.core.relay_of(&alloc.tuple).map(|(r, _)| *r) == Some(handle);
                let out = self.core.handle_peer(alloc, p, len, now.instant);
                if trace() {
                    eprintln!("peer {p} -> relay {handle}: {len} bytes -> {out:?}");
                }
                assert_eq!(
                    out == PeerOutput::Gone,
                    !current,
                    "Gone exactly for a stale allocation"
                );
                if let PeerOutput::Channel(n) = out {
                    assert!((0x4000..=0x4FFF).contains(&n), "channel {n:#x}");
                }
            }
            6 => self.t += Duration::from_secs(u.int_in_range(0..=4000u64)?),
            7 => self.core.sweep(now),
            _ => {
                if u.ratio(1, 8)? {
                    self.core.close_all(now);
                } else {
                    let t = tuple(u)?;
                    self.core.close_tuple(t, now);
                }
            }
        }
        if u.ratio(1, 16)? {
            self.binder.fail = !self.binder.fail;
        }
        for event in self.core.drain_events() {
            if let CoreEvent::Closed { relay, second, .. } = event {
                for relay in std::iter::once(relay).chain(second) {
                    assert!(
                        self.binder.open.remove(&relay).is_some(),
                        "relay {relay} closes once"
                    );
                }
            }
        }
        let size = self.core.state_size();
        assert!(
            size.allocations <= self.total_quota,
            "total quota: {size:?}"
        );
        // One relayed address per allocation, two for a dual one; one open socket for each.
        assert!(
            size.allocations <= size.relay_addresses
                && size.relay_addresses <= 2 * size.allocations,
            "{size:?}"
        );
        assert_eq!(
            size.relay_addresses,
            self.binder.open.len(),
            "open relays: {size:?}"
        );
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for a in self.core.live_allocations() {
            *per_user.entry(a.user).or_default() += 1;
        }
        assert!(
            per_user.values().all(|&n| n <= self.user_quota),
            "user quota {}: {per_user:?}",
            self.user_quota
        );
        assert_eq!(size.users, per_user.len(), "{size:?}");
        Ok(())
    }
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let cfg = CoreConfig {
        realm: REALM.into(),
        secrets: vec![SECRET.to_vec()],
        policy: if u.ratio(1, 4)? {
            PeerPolicy::new("127.0.0.0/8".parse::<ipnet::IpNet>().into_iter().collect())
        } else {
            PeerPolicy::default()
        },
        user_quota: u.int_in_range(1..=3)?,
        total_quota: u.int_in_range(1..=6)?,
        max_bitrate_bps: if u.ratio(1, 4)? {
            Some(u.int_in_range(1..=10_000_000)?)
        } else {
            None
        },
        relays: {
            let external = if u.ratio(1, 4)? {
                Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)))
            } else {
                None
            };
            match u.int_in_range(0..=7)? {
                0 => vec![(Family::V6, None)],
                1 | 2 => vec![(Family::V4, external), (Family::V6, None)],
                _ => vec![(Family::V4, external)],
            }
        },
        default_family: match u.int_in_range(0..=2)? {
            0 => DefaultFamily::Ipv4,
            1 => DefaultFamily::Ipv6,
            _ => DefaultFamily::SameAsClient,
        },
    };
    let total_quota = cfg.total_quota as usize;
    let user_quota = cfg.user_quota as usize;
    let mut w = World {
        core: new_core(cfg, NonceKey::new(NONCE_KEY)),
        binder: Binder {
            fail: false,
            next_port: 49152,
            bound: Vec::new(),
            open: HashMap::new(),
        },
        nonce: NonceKey::new(NONCE_KEY),
        start: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        t: Duration::ZERO,
        total_quota,
        user_quota,
        seen: HashSet::new(),
    };
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        if trace() {
            eprintln!("t={:?}", w.t);
        }
        w.step(&mut u)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
