//! Fuzzes the sans-IO TURN core with time passed in: the input drives a sequence of raw
//! datagrams and frames from arbitrary client addresses and transports, requests with arbitrary
//! methods and attributes that are correctly signed (so they get past authentication into the
//! Allocate/Refresh/CreatePermission/ChannelBind handlers), ChannelData, peer datagrams on relay
//! sockets, time advances, sweeps and stream closes, under an arbitrary configuration. Nothing
//! may panic, and the core's bookkeeping stays within its quotas.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use signalbox_turn::credentials::mint;
use signalbox_turn::nonce::NonceKey;
use signalbox_turn::peer_policy::PeerPolicy;
use signalbox_turn::testing::{
    channel_data, new_core, request, AllocRef, Attr, Core, CoreConfig, FiveTuple, Now, PortChoice,
    RelayBinder, Signer,
};
use signalbox_turn::Transport;

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

/// Relay sockets that may fail to bind; records what was bound so peer datagrams can target
/// current and stale allocations.
struct Binder {
    fail: bool,
    next_port: u16,
    bound: Vec<(AllocRef, SocketAddr)>,
}

impl RelayBinder<u32> for Binder {
    fn bind(&mut self, alloc: AllocRef, port: PortChoice) -> std::io::Result<(SocketAddr, u32)> {
        if self.fail {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "full"));
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
        let addr = SocketAddr::from(([198, 51, 100, 1], port));
        self.bound.push((alloc, addr));
        Ok((addr, u32::try_from(self.bound.len()).unwrap_or(u32::MAX)))
    }
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
}

impl World {
    fn now(&self) -> Now {
        Now {
            instant: self.start + self.t,
            wall: self.wall + self.t,
        }
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let now = self.now();
        match u.int_in_range(0..=8u8)? {
            // Raw bytes from anyone.
            0 => {
                let t = tuple(u)?;
                let raw = bytes(u, 200)?;
                let _ = self.core.handle_client(t, &raw, now, &mut self.binder);
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
                let _ = self.core.handle_client(t, &raw, now, &mut self.binder);
                // Sometimes the same bytes again (a retransmission).
                if u.ratio(1, 8)? {
                    let _ = self.core.handle_client(t, &raw, now, &mut self.binder);
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
                let _ = self.core.handle_client(t, &frame, now, &mut self.binder);
            }
            // A datagram from a peer on a current or stale relay socket.
            5 => {
                if self.binder.bound.is_empty() {
                    return Ok(());
                }
                let (alloc, _) = *u.choose(&self.binder.bound)?;
                let p = peer(u)?;
                let len = u.int_in_range(0..=1500usize)?;
                let _ = self.core.handle_peer(alloc, p, len, now.instant);
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
        let _ = self.core.drain_events();
        let size = self.core.state_size();
        assert!(
            size.allocations <= self.total_quota,
            "total quota: {size:?}"
        );
        assert_eq!(size.allocations, size.relay_addresses, "{size:?}");
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
        external_ip: if u.ratio(1, 4)? {
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)))
        } else {
            None
        },
        relay_is_v6: u.ratio(1, 8)?,
    };
    let total_quota = cfg.total_quota as usize;
    let mut w = World {
        core: new_core(cfg, NonceKey::new(NONCE_KEY)),
        binder: Binder {
            fail: false,
            next_port: 49152,
            bound: Vec::new(),
        },
        nonce: NonceKey::new(NONCE_KEY),
        start: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        t: Duration::ZERO,
        total_quota,
    };
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        w.step(&mut u)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
