//! Unit tests of the sans-IO core: every method and error path, driven with fake relay
//! sockets and requests built with the webrtc-rs `stun` codec, as a client would.
#![allow(clippy::unwrap_used)]
// Tests start from an arbitrary instant and advance time by hand.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FingerprintAttr;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqfamily::{RequestedAddressFamily, REQUESTED_FAMILY_IPV6};
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::{PROTO_TCP, PROTO_UDP};

use super::*;
use crate::credentials::{long_term_key, mint, RestCredential};
use crate::peer_policy::PeerPolicy;

const SECRET: &[u8] = b"s3cret";
const OLD_SECRET: &[u8] = b"previous";
const REALM: &str = "signalbox";
const RELAY_IP: [u8; 4] = [198, 51, 100, 1];
const RELAY_IP6: &str = "2001:db8::1";

/// Hands out fake relay addresses; the handle is the port.
struct FakeBinder {
    next_port: u16,
    fail: bool,
}

impl RelayBinder<u16> for FakeBinder {
    fn bind(
        &mut self,
        _alloc: AllocRef,
        family: Family,
        choice: PortChoice,
    ) -> io::Result<(SocketAddr, u16)> {
        if self.fail {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "full"));
        }
        let ip: IpAddr = match family {
            Family::V4 => RELAY_IP.into(),
            Family::V6 => RELAY_IP6.parse().unwrap(),
        };
        if let PortChoice::Exact(p) = choice {
            return Ok((SocketAddr::new(ip, p), p));
        }
        self.next_port += 1;
        if matches!(choice, PortChoice::Even { .. }) && self.next_port % 2 == 1 {
            self.next_port += 1;
        }
        Ok((SocketAddr::new(ip, self.next_port), self.next_port))
    }
}

struct Harness {
    core: Core<u16>,
    binder: FakeBinder,
    now: Now,
    stats: Arc<Stats>,
}

fn config() -> CoreConfig {
    CoreConfig {
        realm: REALM.into(),
        secrets: vec![SECRET.to_vec(), OLD_SECRET.to_vec()],
        policy: PeerPolicy::default(),
        user_quota: 2,
        total_quota: 3,
        max_bitrate_bps: None,
        relays: vec![(Family::V4, None)],
        default_family: DefaultFamily::Ipv4,
    }
}

fn client(port: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::from(([203, 0, 113, 7], port)),
        server: SocketAddr::from(([192, 0, 2, 1], 3478)),
        transport: Transport::Udp,
    }
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A request of `method` with the given attributes and a fresh transaction id.
fn request(method: Method, attrs: &[&dyn Setter]) -> Message {
    let mut m = Message::new();
    m.set_type(MessageType::new(method, CLASS_REQUEST));
    m.new_transaction_id().unwrap();
    m.write_header();
    for a in attrs {
        a.add_to(&mut m).unwrap();
    }
    m
}

/// Adds the long-term credential attributes and seals the message (as a TURN client does).
fn sign(mut m: Message, username: &str, password: &str, nonce: &str) -> Vec<u8> {
    TextAttribute::new(ATTR_USERNAME, username.into())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_REALM, REALM.into())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_NONCE, nonce.into())
        .add_to(&mut m)
        .unwrap();
    MessageIntegrity::new_long_term_integrity(username.into(), REALM.into(), password.into())
        .add_to(&mut m)
        .unwrap();
    FingerprintAttr.add_to(&mut m).unwrap();
    m.raw
}

fn code(m: &Message) -> u16 {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).unwrap();
    e.code.0
}

fn transport_udp() -> RequestedTransport {
    RequestedTransport {
        protocol: PROTO_UDP,
    }
}

fn peer_attr(p: SocketAddr) -> PeerAddress {
    PeerAddress {
        ip: p.ip(),
        port: p.port(),
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(cfg: CoreConfig) -> Self {
        let stats = Arc::new(Stats::default());
        Self {
            core: Core::new(cfg, NonceKey::new([9; 32]), Arc::clone(&stats)),
            binder: FakeBinder {
                next_port: 50_000,
                fail: false,
            },
            now: Now {
                instant: Instant::now(),
                wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            },
            stats,
        }
    }

    fn cred(&self, user: &str) -> RestCredential {
        mint(SECRET, user, self.now.unix(), 3600)
    }

    fn send(&mut self, tuple: FiveTuple, bytes: &[u8]) -> ClientOutput<u16> {
        self.core
            .handle_client(tuple, bytes, self.now, &mut self.binder)
    }

    /// Sends and decodes the reply, which must exist.
    fn ask(&mut self, tuple: FiveTuple, bytes: &[u8]) -> Message {
        match self.send(tuple, bytes) {
            ClientOutput::Reply(r) => message::decode(&r).expect("reply decodes"),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Gets a nonce the way clients do: an unauthenticated Allocate answered with 401.
    fn nonce(&mut self, tuple: FiveTuple) -> String {
        let r = self.ask(tuple, &request(METHOD_ALLOCATE, &[&transport_udp()]).raw);
        assert_eq!(code(&r), 401);
        message::text(&r, ATTR_NONCE).expect("nonce")
    }

    /// Sends an authenticated request and returns the decoded reply.
    fn auth(&mut self, tuple: FiveTuple, cred: &RestCredential, m: Message) -> Message {
        let nonce = self.nonce(tuple);
        let raw = sign(m, &cred.username, &cred.password, &nonce);
        self.ask(tuple, &raw)
    }

    fn allocate(&mut self, tuple: FiveTuple, cred: &RestCredential) -> Message {
        let r = self.auth(tuple, cred, request(METHOD_ALLOCATE, &[&transport_udp()]));
        assert_eq!(
            r.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "allocate failed: {}",
            code(&r)
        );
        r
    }

    fn relayed(r: &Message) -> SocketAddr {
        let mut a = RelayedAddress::default();
        a.get_from(r).unwrap();
        SocketAddr::new(a.ip, a.port)
    }

    fn permit(&mut self, tuple: FiveTuple, cred: &RestCredential, p: SocketAddr) -> Message {
        self.auth(
            tuple,
            cred,
            request(METHOD_CREATE_PERMISSION, &[&peer_attr(p)]),
        )
    }

    fn bind_channel(
        &mut self,
        tuple: FiveTuple,
        cred: &RestCredential,
        n: u16,
        p: SocketAddr,
    ) -> Message {
        self.auth(
            tuple,
            cred,
            request(METHOD_CHANNEL_BIND, &[&ChannelNumber(n), &peer_attr(p)]),
        )
    }

    fn alloc_ref(&self, tuple: FiveTuple) -> AllocRef {
        AllocRef {
            tuple,
            id: self.core.allocations[&tuple].id,
        }
    }

    /// Entries held besides cached replies (which expire on their own after 40 s).
    fn held(&self) -> usize {
        let s = self.core.state_size();
        s.total() - s.cached_replies
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now.after(Duration::from_secs(secs));
    }
}

fn channel_data(n: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn binding_returns_the_reflexive_address_without_auth() {
    let mut h = Harness::new();
    let r = h.ask(client(1000), &request(METHOD_BINDING, &[]).raw);
    assert_eq!(r.typ, BINDING_SUCCESS);
    let mut x = XorMappedAddress::default();
    x.get_from(&r).unwrap();
    assert_eq!(SocketAddr::new(x.ip, x.port), client(1000).client);
    assert_eq!(h.core.state_size().total(), 0);
}

#[test]
fn unauthenticated_allocate_gets_401_with_realm_and_nonce_and_no_state() {
    let mut h = Harness::new();
    let before = h.core.state_size();
    for port in 0..1000 {
        let r = h.ask(
            client(port),
            &request(METHOD_ALLOCATE, &[&transport_udp()]).raw,
        );
        assert_eq!(code(&r), 401);
        assert_eq!(message::text(&r, ATTR_REALM).as_deref(), Some(REALM));
        assert!(message::text(&r, ATTR_NONCE).is_some());
        assert!(!r.contains(ATTR_MESSAGE_INTEGRITY));
    }
    assert_eq!(h.core.state_size(), before);
    assert_eq!(
        h.stats
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn allocate_succeeds_with_relayed_mapped_lifetime_and_integrity() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let r = h.allocate(client(1), &cred);
    assert_eq!(Harness::relayed(&r).ip(), std::net::IpAddr::from(RELAY_IP));
    let mut lt = Lifetime::default();
    lt.get_from(&r).unwrap();
    assert_eq!(lt.0, Duration::from_secs(600));
    let mut x = XorMappedAddress::default();
    x.get_from(&r).unwrap();
    assert_eq!(x.port, 1);
    let key = long_term_key(&cred.username, REALM, &cred.password);
    let mut r2 = r.clone();
    assert!(
        message::integrity_ok(&mut r2, &key),
        "response is integrity-protected"
    );
    let events = h.core.drain_events();
    match &events[..] {
        [CoreEvent::Opened(info)] => {
            assert_eq!(info.user, "alice");
            assert_eq!(info.username, cred.username);
            assert_eq!(info.transport, Transport::Udp);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn external_ip_is_advertised() {
    let mut cfg = config();
    cfg.relays = vec![(Family::V4, Some("8.8.4.4".parse().unwrap()))];
    let mut h = Harness::with(cfg);
    let cred = h.cred("a");
    let r = h.allocate(client(1), &cred);
    assert_eq!(Harness::relayed(&r).ip().to_string(), "8.8.4.4");
}

#[test]
fn a_rotated_out_secret_still_verifies() {
    let mut h = Harness::new();
    let cred = mint(OLD_SECRET, "bob", h.now.unix(), 60);
    h.allocate(client(1), &cred);
}

#[test]
fn wrong_password_is_401_and_counted() {
    let mut h = Harness::new();
    let mut cred = h.cred("alice");
    cred.password = "not-the-password".into();
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 401);
    assert!(message::text(&r, ATTR_NONCE).is_some());
    let cred = mint(b"unknown secret", "alice", h.now.unix(), 60);
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 401);
    assert_eq!(h.stats.snapshot().auth_failures, 2);
    assert_eq!(h.core.state_size().total(), 0);
}

#[test]
fn expired_or_malformed_usernames_are_401() {
    let mut h = Harness::new();
    let expired = mint(SECRET, "alice", h.now.unix() - 100, 50);
    let r = h.auth(
        client(1),
        &expired,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 401);
    let mut malformed = h.cred("x");
    malformed.username = "alice".into();
    malformed.password = crate::credentials::password_for(SECRET, "alice");
    let r = h.auth(
        client(1),
        &malformed,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 401);
}

#[test]
fn wrong_realm_is_401() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let nonce = h.nonce(client(1));
    let mut m = request(METHOD_ALLOCATE, &[&transport_udp()]);
    TextAttribute::new(ATTR_USERNAME, cred.username.clone())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_REALM, "other".into())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_NONCE, nonce)
        .add_to(&mut m)
        .unwrap();
    MessageIntegrity::new_long_term_integrity(cred.username, "other".into(), cred.password)
        .add_to(&mut m)
        .unwrap();
    assert_eq!(code(&h.ask(client(1), &m.raw)), 401);
}

#[test]
fn integrity_without_username_realm_or_nonce_is_400() {
    let mut h = Harness::new();
    let mut m = request(METHOD_ALLOCATE, &[&transport_udp()]);
    MessageIntegrity::new_short_term_integrity("x".into())
        .add_to(&mut m)
        .unwrap();
    assert_eq!(code(&h.ask(client(1), &m.raw)), 400);
}

#[test]
fn stale_forged_or_foreign_nonces_are_438_with_a_fresh_nonce() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let nonce = h.nonce(client(1));
    h.advance(601);
    let cred2 = h.cred("alice");
    let raw = sign(
        request(METHOD_ALLOCATE, &[&transport_udp()]),
        &cred2.username,
        &cred2.password,
        &nonce,
    );
    let r = h.ask(client(1), &raw);
    assert_eq!(code(&r), 438);
    let fresh = message::text(&r, ATTR_NONCE).unwrap();
    assert_ne!(fresh, nonce);
    // Another client's nonce.
    let other = h.nonce(client(2));
    let raw = sign(
        request(METHOD_ALLOCATE, &[&transport_udp()]),
        &cred.username,
        &cred.password,
        &other,
    );
    assert_eq!(code(&h.ask(client(1), &raw)), 438);
    // Garbage.
    let raw = sign(
        request(METHOD_ALLOCATE, &[&transport_udp()]),
        &cred.username,
        &cred.password,
        "garbage",
    );
    assert_eq!(code(&h.ask(client(1), &raw)), 438);
    // The fresh one works.
    let raw = sign(
        request(METHOD_ALLOCATE, &[&transport_udp()]),
        &cred2.username,
        &cred2.password,
        &fresh,
    );
    assert_eq!(h.ask(client(1), &raw).typ.class, CLASS_SUCCESS_RESPONSE);
}

#[test]
fn allocate_retransmission_gets_the_same_answer_never_437() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let nonce = h.nonce(client(1));
    let raw = sign(
        request(METHOD_ALLOCATE, &[&transport_udp()]),
        &cred.username,
        &cred.password,
        &nonce,
    );
    let ClientOutput::Reply(first) = h.send(client(1), &raw) else {
        panic!("no reply")
    };
    let ClientOutput::Reply(again) = h.send(client(1), &raw) else {
        panic!("no reply")
    };
    assert_eq!(first, again);
    // Even once the reply cache has forgotten it (after 40 s), the allocation remembers.
    h.advance(45);
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().cached_replies, 0);
    let ClientOutput::Reply(late) = h.send(client(1), &raw) else {
        panic!("no reply")
    };
    assert_eq!(first, late);
    assert_eq!(h.core.state_size().allocations, 1);
}

#[test]
fn a_second_allocate_on_the_same_5_tuple_is_437() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    h.allocate(client(1), &cred);
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 437);
}

#[test]
fn allocate_attribute_errors() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let r = h.auth(client(1), &cred, request(METHOD_ALLOCATE, &[]));
    assert_eq!(code(&r), 400, "REQUESTED-TRANSPORT missing");
    let tcp = RequestedTransport {
        protocol: PROTO_TCP,
    };
    let r = h.auth(client(1), &cred, request(METHOD_ALLOCATE, &[&tcp]));
    assert_eq!(code(&r), 442);
    let token = turn::proto::rsrvtoken::ReservationToken(vec![1; 8]);
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &token]),
    );
    assert_eq!(code(&r), 508);
    let v6 = RequestedAddressFamily(REQUESTED_FAMILY_IPV6.0);
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &v6]),
    );
    assert_eq!(code(&r), 440);
    assert_eq!(h.core.state_size().allocations, 0);
    let even = turn::proto::evenport::EvenPort::default();
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &even]),
    );
    assert_eq!(Harness::relayed(&r).port() % 2, 0);
}

#[test]
fn lifetimes_are_defaulted_and_capped() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let long = Lifetime(Duration::from_secs(100_000));
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &long]),
    );
    let mut lt = Lifetime::default();
    lt.get_from(&r).unwrap();
    assert_eq!(lt.0, Duration::from_secs(3600));
    h.advance(3599);
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().allocations, 1);
    h.advance(1);
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().allocations, 0);
    assert_eq!(
        h.core.state_size().total(),
        0,
        "users and relay index are cleaned too"
    );
}

#[test]
fn user_quota_is_486_and_total_quota_508() {
    let mut h = Harness::new();
    let alice = h.cred("alice");
    h.allocate(client(1), &alice);
    h.allocate(client(2), &alice);
    let r = h.auth(
        client(3),
        &alice,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 486);
    let bob = h.cred("bob");
    h.allocate(client(4), &bob);
    let r = h.auth(
        client(5),
        &bob,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 508);
    assert_eq!(h.stats.snapshot().quota_rejections, 2);
}

/// Found by turn/tests/props.rs: the sweep runs only now and then, and an allocation past its
/// lifetime but not yet swept used to answer 437 to its own client's new Allocate, count against
/// the quotas and still relay.
#[test]
fn an_allocation_past_its_lifetime_is_gone_before_the_sweep() {
    let mut h = Harness::new();
    let alice = h.cred("alice");
    let first = h.allocate(client(1), &alice);
    let relayed = Harness::relayed(&first);
    let first_ref = h.alloc_ref(client(1));
    h.permit(client(1), &alice, peer("203.0.113.7:5000"));
    h.allocate(client(2), &alice);
    h.advance(600);
    // No sweep has run. A peer datagram to the old relay is not relayed.
    assert!(matches!(
        h.core
            .handle_peer(first_ref, peer("203.0.113.7:5000"), 10, h.now.instant),
        PeerOutput::Drop
    ));
    // Its own client may allocate again, and the user's quota of 2 is free again.
    let alice = h.cred("alice");
    let again = h.allocate(client(1), &alice);
    assert_ne!(Harness::relayed(&again), relayed, "a new relay address");
    h.allocate(client(3), &alice);
    assert_eq!(h.core.state_size().allocations, 2);
}

#[test]
fn no_relay_port_is_508() {
    let mut h = Harness::new();
    h.binder.fail = true;
    let cred = h.cred("alice");
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp()]),
    );
    assert_eq!(code(&r), 508);
    assert_eq!(h.held(), 0);
}

#[test]
fn refresh_extends_and_refresh_zero_deletes() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    h.allocate(client(1), &cred);
    h.advance(500);
    let r = h.auth(
        client(1),
        &cred,
        request(METHOD_REFRESH, &[&Lifetime(Duration::from_secs(1200))]),
    );
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    h.advance(1000);
    h.core.sweep(h.now);
    assert_eq!(
        h.core.state_size().allocations,
        1,
        "refreshed past its first lifetime"
    );
    h.core.drain_events();

    let nonce = h.nonce(client(1));
    let zero = Lifetime(Duration::ZERO);
    let raw = sign(
        request(METHOD_REFRESH, &[&zero]),
        &cred.username,
        &cred.password,
        &nonce,
    );
    let r = h.ask(client(1), &raw);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut lt = Lifetime::default();
    lt.get_from(&r).unwrap();
    assert_eq!(lt.0, Duration::ZERO);
    assert_eq!(h.core.state_size().allocations, 0);
    assert!(matches!(
        &h.core.drain_events()[..],
        [CoreEvent::Closed { .. }]
    ));
    // The retransmitted Refresh 0 gets the same success, not 437.
    let r2 = h.ask(client(1), &raw);
    assert_eq!(r2.typ.class, CLASS_SUCCESS_RESPONSE);
    // A new Refresh now finds nothing.
    let r3 = h.auth(client(1), &cred, request(METHOD_REFRESH, &[]));
    assert_eq!(code(&r3), 437);
}

#[test]
fn requests_without_an_allocation_are_437() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let p = peer("8.8.8.8:9");
    assert_eq!(
        code(&h.auth(client(1), &cred, request(METHOD_REFRESH, &[]))),
        437
    );
    assert_eq!(code(&h.permit(client(1), &cred, p)), 437);
    assert_eq!(code(&h.bind_channel(client(1), &cred, 0x4000, p)), 437);
}

#[test]
fn another_user_on_the_same_5_tuple_is_441() {
    let mut h = Harness::new();
    let alice = h.cred("alice");
    h.allocate(client(1), &alice);
    let mallory = h.cred("mallory");
    assert_eq!(
        code(&h.auth(client(1), &mallory, request(METHOD_REFRESH, &[]))),
        441
    );
}

#[test]
fn create_permission_refuses_special_peers_with_403() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    h.allocate(client(1), &cred);
    for p in [
        "127.0.0.1:5000",
        "10.0.0.1:1",
        "192.168.1.1:1",
        "169.254.0.1:1",
        "100.64.0.1:1",
        "224.0.0.1:1",
        "0.0.0.0:1",
        "192.0.2.5:1",
    ] {
        assert_eq!(code(&h.permit(client(1), &cred, peer(p))), 403, "{p}");
    }
    assert_eq!(
        code(&h.permit(client(1), &cred, peer("[::ffff:127.0.0.1]:5"))),
        403
    );
    assert_eq!(
        code(&h.permit(client(1), &cred, peer("[2001:4860::1]:5"))),
        443
    );
    assert_eq!(h.stats.snapshot().denied_peers, 9);
    assert_eq!(
        code(&h.auth(client(1), &cred, request(METHOD_CREATE_PERMISSION, &[]))),
        400
    );
    let r = h.permit(client(1), &cred, peer("8.8.8.8:53"));
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(h.core.state_size().permissions, 1);
}

#[test]
fn allow_list_wins_and_own_relay_addresses_are_allowed() {
    let mut cfg = config();
    cfg.policy = PeerPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
    let mut h = Harness::with(cfg);
    let cred = h.cred("alice");
    h.allocate(client(1), &cred);
    let r = h.permit(client(1), &cred, peer("127.0.0.1:5000"));
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);

    // Relay-to-relay on the same server: the other allocation's relayed address is in a
    // documentation range, yet allowed because it is ours.
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let a = h.allocate(client(1), &cred);
    let b = h.allocate(client(2), &cred);
    let relay_b = Harness::relayed(&b);
    let relay_a = Harness::relayed(&a);
    assert_eq!(
        h.permit(client(1), &cred, relay_b).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(
        h.bind_channel(client(2), &cred, 0x4000, relay_a).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    // ...but not another port on that IP.
    let other = SocketAddr::new(relay_b.ip(), 9);
    assert_eq!(code(&h.permit(client(1), &cred, other)), 403);
}

#[test]
fn channel_bind_validates_and_relays_channel_data_both_ways() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let p = peer("8.8.8.8:4000");
    assert_eq!(
        code(&h.bind_channel(t, &cred, 0x3FFF, p)),
        400,
        "below channel range"
    );
    assert_eq!(
        code(&h.bind_channel(t, &cred, 0x8000, p)),
        400,
        "above channel range"
    );
    assert_eq!(
        code(&h.bind_channel(t, &cred, 0x4000, peer("10.0.0.1:1"))),
        403
    );
    let no_peer = h.auth(
        t,
        &cred,
        request(METHOD_CHANNEL_BIND, &[&ChannelNumber(0x4000)]),
    );
    assert_eq!(code(&no_peer), 400);
    let no_number = h.auth(t, &cred, request(METHOD_CHANNEL_BIND, &[&peer_attr(p)]));
    assert_eq!(code(&no_number), 400);
    assert_eq!(
        h.bind_channel(t, &cred, 0x4000, p).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(
        code(&h.bind_channel(t, &cred, 0x4000, peer("8.8.4.4:1"))),
        400,
        "channel taken"
    );
    assert_eq!(
        code(&h.bind_channel(t, &cred, 0x4001, p)),
        400,
        "peer taken"
    );

    // Client → peer: a 1600-byte datagram is relayed from the input buffer, intact.
    let payload = vec![0x5A; 1600];
    let frame = channel_data(0x4000, &payload);
    match h.send(t, &frame) {
        ClientOutput::Relay {
            relay,
            peer: to,
            payload: Payload::Input(r),
        } => {
            assert_eq!(to, p);
            assert_eq!(relay, h.core.allocations[&t].relay);
            assert_eq!(&frame[r], &payload[..]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Unbound channel: dropped.
    assert_eq!(
        h.send(t, &channel_data(0x4005, b"x")),
        ClientOutput::Nothing
    );
    // Peer → client: on the channel.
    let a = h.alloc_ref(t);
    assert_eq!(
        h.core.handle_peer(a, p, 1600, h.now.instant),
        PeerOutput::Channel(0x4000)
    );
    // Same IP, other port: permitted, no channel → Data indication.
    assert_eq!(
        h.core
            .handle_peer(a, peer("8.8.8.8:4001"), 10, h.now.instant),
        PeerOutput::Indication
    );
    // Unpermitted peer: dropped.
    assert_eq!(
        h.core.handle_peer(a, peer("1.1.1.1:1"), 10, h.now.instant),
        PeerOutput::Drop
    );
    let usage = h.core.allocations[&t].usage;
    assert_eq!((usage.bytes_to_peer, usage.packets_to_peer), (1600, 1));
    assert_eq!((usage.bytes_from_peer, usage.packets_from_peer), (1610, 2));
}

#[test]
fn permissions_and_channels_expire() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let p = peer("8.8.8.8:4000");
    h.bind_channel(t, &cred, 0x4000, p);
    let a = h.alloc_ref(t);
    h.advance(300);
    assert_eq!(
        h.core.handle_peer(a, p, 1, h.now.instant),
        PeerOutput::Drop,
        "permission expired"
    );
    assert_eq!(
        h.send(t, &channel_data(0x4000, b"x")),
        ClientOutput::Nothing
    );
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().permissions, 0);
    assert_eq!(h.core.state_size().channels, 1);
    h.advance(300);
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().channels, 0);
}

#[test]
fn send_indication_needs_a_permission() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let p = peer("8.8.8.8:4000");
    let send = |p: SocketAddr| {
        let mut m = Message::new();
        m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
        m.new_transaction_id().unwrap();
        m.write_header();
        peer_attr(p).add_to(&mut m).unwrap();
        Data(b"hello".to_vec()).add_to(&mut m).unwrap();
        m.raw
    };
    assert_eq!(h.send(t, &send(p)), ClientOutput::Nothing);
    assert_eq!(h.stats.snapshot().dropped_packets, 1);
    h.permit(t, &cred, p);
    match h.send(t, &send(p)) {
        ClientOutput::Relay {
            peer: to,
            payload: Payload::Owned(d),
            ..
        } => {
            assert_eq!(to, p);
            assert_eq!(d, b"hello");
        }
        other => panic!("unexpected {other:?}"),
    }
    // No allocation on that 5-tuple: dropped silently.
    assert_eq!(h.send(client(9), &send(p)), ClientOutput::Nothing);
}

#[test]
fn unknown_comprehension_required_attribute_is_420_and_unknown_method_400() {
    let mut h = Harness::new();
    let mut m = request(METHOD_BINDING, &[]);
    m.add(AttrType(0x0077), &[0, 0, 0, 0]);
    let r = h.ask(client(1), &m.raw);
    assert_eq!(code(&r), 420);
    assert!(r.contains(ATTR_UNKNOWN_ATTRIBUTES));
    // Comprehension-optional unknowns are ignored.
    let mut m = request(METHOD_BINDING, &[]);
    m.add(AttrType(0x8077), &[0, 0, 0, 0]);
    assert_eq!(h.ask(client(1), &m.raw).typ, BINDING_SUCCESS);
    assert_eq!(
        code(&h.ask(client(1), &request(METHOD_CONNECT, &[]).raw)),
        400
    );
}

#[test]
fn bad_datagrams_cost_a_counter() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(client(1), b"GET / HTTP/1.1\r\n"),
        ClientOutput::Nothing
    );
    assert_eq!(
        h.send(client(1), &[0x40, 0x00, 0x00, 0x10, 1]),
        ClientOutput::Nothing
    );
    assert_eq!(h.send(client(1), &[]), ClientOutput::Nothing);
    let mut resp = request(METHOD_BINDING, &[]);
    resp.set_type(BINDING_SUCCESS);
    assert_eq!(
        h.send(client(1), &resp.raw),
        ClientOutput::Nothing,
        "responses are not accepted"
    );
    let mut raw = request(METHOD_BINDING, &[]);
    FingerprintAttr.add_to(&mut raw).unwrap();
    let mut bytes = raw.raw.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    assert_eq!(
        h.send(client(1), &bytes),
        ClientOutput::Nothing,
        "bad fingerprint"
    );
    assert_eq!(h.stats.snapshot().bad_packets, 5);
    assert_eq!(h.core.state_size().total(), 0);
}

#[test]
fn bandwidth_cap_drops_excess() {
    let mut cfg = config();
    cfg.max_bitrate_bps = Some(64_000); // 8 kB/s, bucket 8 kB
    let mut h = Harness::with(cfg);
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let p = peer("8.8.8.8:4000");
    h.bind_channel(t, &cred, 0x4000, p);
    let frame = channel_data(0x4000, &[0; 1000]);
    let relayed = (0..20)
        .filter(|_| matches!(h.send(t, &frame), ClientOutput::Relay { .. }))
        .count();
    assert_eq!(relayed, 8);
    let a = h.alloc_ref(t);
    let back = (0..20)
        .filter(|_| h.core.handle_peer(a, p, 1000, h.now.instant) == PeerOutput::Channel(0x4000))
        .count();
    assert_eq!(back, 8);
}

#[test]
fn closing_a_stream_ends_its_allocation_with_usage() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let p = peer("8.8.8.8:4000");
    h.bind_channel(t, &cred, 0x4000, p);
    h.send(t, &channel_data(0x4000, b"abc"));
    let a = h.alloc_ref(t);
    h.core.handle_peer(a, p, 7, h.now.instant);
    h.core.drain_events();
    h.core.close_tuple(t, h.now);
    match &h.core.drain_events()[..] {
        [CoreEvent::Closed { info, usage, .. }] => {
            assert_eq!(info.user, "alice");
            assert_eq!(usage.bytes_to_peer, 3);
            assert_eq!(usage.bytes_from_peer, 7);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.core.handle_peer(a, p, 1, h.now.instant), PeerOutput::Gone);
    assert_eq!(h.held(), 0);
    assert_eq!(h.stats.snapshot().allocations_active, 0);
    assert_eq!(h.stats.snapshot().allocations_total, 1);
}

#[test]
fn a_stale_relay_task_does_not_see_a_newer_allocation() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let old = h.alloc_ref(t);
    h.core.close_tuple(t, h.now);
    h.allocate(t, &cred);
    assert_eq!(
        h.core.handle_peer(old, peer("8.8.8.8:1"), 1, h.now.instant),
        PeerOutput::Gone
    );
}

#[test]
fn even_port_reservation_is_redeemed_once_by_its_token() {
    let mut cfg = config();
    cfg.user_quota = 10;
    cfg.total_quota = 10;
    let mut h = Harness::with(cfg);
    let cred = h.cred("alice");
    let mut m = request(METHOD_ALLOCATE, &[&transport_udp()]);
    m.add(ATTR_EVEN_PORT, &[0x80]);
    let r = h.auth(client(1), &cred, m);
    let rtp = Harness::relayed(&r);
    assert_eq!(rtp.port() % 2, 0);
    let mut token = turn::proto::rsrvtoken::ReservationToken::default();
    token.get_from(&r).unwrap();
    assert_eq!(h.core.state_size().reservations, 1);
    h.core.drain_events();
    let r = h.auth(
        client(2),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &token]),
    );
    assert_eq!(Harness::relayed(&r).port(), rtp.port() + 1);
    assert_eq!(h.core.state_size().reservations, 0);
    assert!(
        !h.core
            .drain_events()
            .iter()
            .any(|e| matches!(e, CoreEvent::Unreserved { .. })),
        "a redeemed port is the new allocation's, not released"
    );
    let r = h.auth(
        client(3),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &token]),
    );
    assert_eq!(code(&r), 508, "a token is good once");
    // Unredeemed reservations expire, and the shell is told to release the port.
    let mut m = request(METHOD_ALLOCATE, &[&transport_udp()]);
    m.add(ATTR_EVEN_PORT, &[0x80]);
    let bob = h.cred("bob");
    let reserved = Harness::relayed(&h.auth(client(4), &bob, m)).port() + 1;
    h.core.drain_events();
    h.advance(29);
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().reservations, 1);
    assert!(h.core.drain_events().is_empty());
    h.advance(2);
    h.core.sweep(h.now);
    assert_eq!(h.core.state_size().reservations, 0);
    assert!(matches!(
        &h.core.drain_events()[..],
        [CoreEvent::Unreserved { port, family: Family::V4 }] if *port == reserved
    ));
}

#[test]
fn a_reservation_presented_late_or_left_at_shutdown_is_released() {
    let mut cfg = config();
    cfg.user_quota = 10;
    cfg.total_quota = 10;
    let mut h = Harness::with(cfg);
    let cred = h.cred("alice");
    let reserve = |h: &mut Harness, c: u16| {
        let mut m = request(METHOD_ALLOCATE, &[&transport_udp()]);
        m.add(ATTR_EVEN_PORT, &[0x80]);
        let r = h.auth(client(c), &cred, m);
        let mut token = turn::proto::rsrvtoken::ReservationToken::default();
        token.get_from(&r).unwrap();
        (Harness::relayed(&r).port() + 1, token)
    };
    let (late_port, token) = reserve(&mut h, 1);
    h.advance(31); // past the reservation, before any sweep
    h.core.drain_events();
    let r = h.auth(
        client(2),
        &cred,
        request(METHOD_ALLOCATE, &[&transport_udp(), &token]),
    );
    assert_eq!(code(&r), 508, "an expired token");
    assert!(matches!(
        &h.core.drain_events()[..],
        [CoreEvent::Unreserved { port, family: Family::V4 }] if *port == late_port
    ));
    let (kept, _) = reserve(&mut h, 3);
    h.core.drain_events();
    h.core.close_all(h.now);
    let released: Vec<u16> = h
        .core
        .drain_events()
        .iter()
        .filter_map(|e| match e {
            CoreEvent::Unreserved { port, .. } => Some(*port),
            _ => None,
        })
        .collect();
    assert_eq!(released, [kept]);
    assert_eq!(h.core.state_size().reservations, 0);
}

/// The core stays sans-IO: no sockets, no runtime, no files (clippy.toml keeps clock reads out).
#[test]
fn the_core_names_no_io() {
    let files = [
        ("mod.rs", include_str!("mod.rs")),
        ("allocation.rs", include_str!("allocation.rs")),
        ("auth.rs", include_str!("auth.rs")),
        ("bandwidth.rs", include_str!("bandwidth.rs")),
        ("message.rs", include_str!("message.rs")),
        ("permissions.rs", include_str!("permissions.rs")),
        ("reply_cache.rs", include_str!("reply_cache.rs")),
    ];
    let banned = [
        "tokio",
        "crate::io",
        "std::fs",
        "UdpSocket",
        "TcpStream",
        "socket2",
    ];
    for (name, source) in files {
        for word in banned {
            assert!(
                !source.contains(word),
                "core/{name} names `{word}`: IO belongs in the shell (src/io)"
            );
        }
    }
}

/// A Send indication carrying `data` to `p`.
fn send_indication(p: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
    m.new_transaction_id().unwrap();
    m.write_header();
    peer_attr(p).add_to(&mut m).unwrap();
    Data(data.to_vec()).add_to(&mut m).unwrap();
    m.raw
}

/// The SFU a relay-only client must reach: loopback, allowed as an exact address only.
const SFU: &str = "127.0.0.1:3479";

fn exact_sfu_config() -> CoreConfig {
    let mut cfg = config();
    cfg.policy = PeerPolicy::default().with_exact([peer(SFU)]);
    cfg
}

#[test]
fn exact_peer_address_is_reachable_both_ways() {
    let mut h = Harness::with(exact_sfu_config());
    let cred = h.cred("alice");
    let sfu = peer(SFU);

    // Channel: CreatePermission, ChannelBind, ChannelData out, ChannelData in.
    let t = client(1);
    h.allocate(t, &cred);
    assert_eq!(h.permit(t, &cred, sfu).typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(h.core.state_size().permissions, 1);
    assert_eq!(
        h.bind_channel(t, &cred, 0x4000, sfu).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    match h.send(t, &channel_data(0x4000, b"rtp")) {
        ClientOutput::Relay { peer: to, .. } => assert_eq!(to, sfu),
        other => panic!("unexpected {other:?}"),
    }
    let a = h.alloc_ref(t);
    assert_eq!(
        h.core.handle_peer(a, sfu, 3, h.now.instant),
        PeerOutput::Channel(0x4000)
    );

    // Send/Data indications on another allocation with only a permission.
    let t2 = client(2);
    h.allocate(t2, &cred);
    assert_eq!(h.permit(t2, &cred, sfu).typ.class, CLASS_SUCCESS_RESPONSE);
    match h.send(t2, &send_indication(sfu, b"hello")) {
        ClientOutput::Relay {
            peer: to,
            payload: Payload::Owned(d),
            ..
        } => {
            assert_eq!(to, sfu);
            assert_eq!(d, b"hello");
        }
        other => panic!("unexpected {other:?}"),
    }
    let a2 = h.alloc_ref(t2);
    assert_eq!(
        h.core.handle_peer(a2, sfu, 5, h.now.instant),
        PeerOutput::Indication
    );
    let s = h.stats.snapshot();
    assert_eq!((s.packets_to_peer, s.packets_from_peer), (2, 2));
    assert_eq!((s.denied_peers, s.dropped_packets), (0, 0));
}

#[test]
fn other_ports_of_an_exact_address_ip_stay_refused() {
    let mut h = Harness::with(exact_sfu_config());
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let sfu = peer(SFU);
    let ssh = peer("127.0.0.1:22");

    // The permission for 127.0.0.1 exists (because of 127.0.0.1:3479)...
    assert_eq!(h.permit(t, &cred, sfu).typ.class, CLASS_SUCCESS_RESPONSE);
    assert!(h.core.allocations[&t]
        .permissions
        .allows(ssh.ip(), h.now.instant));

    // ...yet a CreatePermission or ChannelBind naming another port is 403,
    assert_eq!(code(&h.permit(t, &cred, ssh)), 403);
    assert_eq!(code(&h.bind_channel(t, &cred, 0x4001, ssh)), 403);
    assert_eq!(h.core.state_size().channels, 0);
    assert_eq!(h.stats.snapshot().denied_peers, 2);
    // as is a CreatePermission listing both the allowed and a refused address.
    let both = h.auth(
        t,
        &cred,
        request(
            METHOD_CREATE_PERMISSION,
            &[&peer_attr(sfu), &peer_attr(ssh)],
        ),
    );
    assert_eq!(code(&both), 403);
    assert_eq!(h.stats.snapshot().denied_peers, 3);

    // a Send to it is dropped and counted as denied,
    assert_eq!(
        h.send(t, &send_indication(ssh, b"SSH-2.0")),
        ClientOutput::Nothing
    );
    assert_eq!(h.stats.snapshot().denied_peers, 4);

    // and datagrams from it are not delivered to the client.
    let a = h.alloc_ref(t);
    assert_eq!(
        h.core.handle_peer(a, ssh, 10, h.now.instant),
        PeerOutput::Drop
    );
    assert_eq!(h.stats.snapshot().denied_peers, 5);
    // Another loopback IP has no permission at all: dropped as before.
    assert_eq!(
        h.core
            .handle_peer(a, peer("127.0.0.2:3479"), 10, h.now.instant),
        PeerOutput::Drop
    );
    let s = h.stats.snapshot();
    assert_eq!(s.dropped_packets, 1);
    assert_eq!((s.packets_to_peer, s.packets_from_peer), (0, 0));
    let usage = h.core.allocations[&t].usage;
    assert_eq!((usage.packets_to_peer, usage.packets_from_peer), (0, 0));
}

#[test]
fn mapped_forms_of_an_exact_address_are_the_same_peer() {
    let mapped_sfu = peer("[::ffff:127.0.0.1]:3479");
    let mapped_ssh = peer("[::ffff:127.0.0.1]:22");
    // The entry in plain form, the peer in mapped form; then the other way round.
    for entry in [peer(SFU), mapped_sfu] {
        let mut cfg = config();
        cfg.policy = PeerPolicy::default().with_exact([entry]);
        let mut h = Harness::with(cfg);
        let cred = h.cred("alice");
        let t = client(1);
        h.allocate(t, &cred);
        assert_eq!(
            h.permit(t, &cred, mapped_sfu).typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{entry}"
        );
        assert_eq!(
            h.bind_channel(t, &cred, 0x4000, peer(SFU)).typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{entry}"
        );
        assert_eq!(code(&h.permit(t, &cred, mapped_ssh)), 403, "{entry}");
        assert_eq!(
            code(&h.bind_channel(t, &cred, 0x4001, mapped_ssh)),
            403,
            "{entry}"
        );
        match h.send(t, &send_indication(mapped_sfu, b"x")) {
            ClientOutput::Relay { peer: to, .. } => assert_eq!(to, peer(SFU), "{entry}"),
            other => panic!("{entry}: unexpected {other:?}"),
        }
        assert_eq!(
            h.send(t, &send_indication(mapped_ssh, b"x")),
            ClientOutput::Nothing
        );
        let a = h.alloc_ref(t);
        assert_eq!(
            h.core.handle_peer(a, mapped_sfu, 1, h.now.instant),
            PeerOutput::Channel(0x4000),
            "{entry}"
        );
        assert_eq!(
            h.core.handle_peer(a, mapped_ssh, 1, h.now.instant),
            PeerOutput::Drop,
            "{entry}"
        );
        assert_eq!(h.stats.snapshot().denied_peers, 4, "{entry}");
    }
}

#[test]
fn cidr_allow_list_still_opens_every_port_next_to_exact_addresses() {
    let mut cfg = config();
    cfg.policy =
        PeerPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]).with_exact([peer("10.0.0.5:3479")]);
    let mut h = Harness::with(cfg);
    let cred = h.cred("alice");
    let t = client(1);
    h.allocate(t, &cred);
    let ssh = peer("127.0.0.1:22");
    assert_eq!(h.permit(t, &cred, ssh).typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(
        h.bind_channel(t, &cred, 0x4000, peer("127.0.0.1:5000"))
            .typ
            .class,
        CLASS_SUCCESS_RESPONSE
    );
    assert!(matches!(
        h.send(t, &send_indication(ssh, b"x")),
        ClientOutput::Relay { .. }
    ));
    let a = h.alloc_ref(t);
    assert_eq!(
        h.core
            .handle_peer(a, peer("127.0.0.1:9999"), 1, h.now.instant),
        PeerOutput::Indication
    );
    assert_eq!(
        h.core
            .handle_peer(a, peer("127.0.0.1:5000"), 1, h.now.instant),
        PeerOutput::Channel(0x4000)
    );
    // The exact entry still opens one port of its IP only.
    assert_eq!(
        h.permit(t, &cred, peer("10.0.0.5:3479")).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(code(&h.permit(t, &cred, peer("10.0.0.5:3480"))), 403);
    assert_eq!(
        h.core
            .handle_peer(a, peer("10.0.0.5:3480"), 1, h.now.instant),
        PeerOutput::Drop
    );
    assert_eq!(h.stats.snapshot().denied_peers, 2);
}

#[test]
fn own_relay_addresses_are_reachable_inbound_on_their_port_only() {
    // RELAY_IP is in a documentation range: only the relayed addresses themselves pass.
    let mut h = Harness::new();
    let cred = h.cred("alice");
    h.allocate(client(1), &cred);
    let relay_b = Harness::relayed(&h.allocate(client(2), &cred));
    assert_eq!(
        h.permit(client(1), &cred, relay_b).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    let a = h.alloc_ref(client(1));
    assert_eq!(
        h.core.handle_peer(a, relay_b, 1, h.now.instant),
        PeerOutput::Indication
    );
    assert_eq!(
        h.core
            .handle_peer(a, SocketAddr::new(relay_b.ip(), 9), 1, h.now.instant),
        PeerOutput::Drop
    );
    assert_eq!(h.stats.snapshot().denied_peers, 1);
}

#[test]
fn turn_config_exact_addresses_reach_the_core_policy() {
    let turn = TurnConfig::default();
    assert!(turn.allow_peer_addrs.is_empty());
    assert!(CoreConfig::from_turn_config(&turn)
        .policy
        .exact()
        .is_empty());
    let turn = TurnConfig {
        allow_peer_addrs: vec![peer(SFU), peer("[::ffff:192.168.1.5]:3479")],
        ..TurnConfig::default()
    };
    let cfg = CoreConfig::from_turn_config(&turn);
    assert_eq!(cfg.policy.exact(), &[peer(SFU), peer("192.168.1.5:3479")]);
    assert!(cfg.policy.allows_addr(peer(SFU)));
    assert!(!cfg.policy.allows_addr(peer("127.0.0.1:3478")));
}

// ---- Both address families on one server (RFC 8656 §7.2) ----

fn dual_config() -> CoreConfig {
    let mut cfg = config();
    cfg.relays = vec![(Family::V4, None), (Family::V6, None)];
    cfg
}

fn client6(port: u16) -> FiveTuple {
    FiveTuple {
        client: peer(&format!("[2001:db8:77::7]:{port}")),
        server: peer("[2001:db8::3478]:3478"),
        transport: Transport::Udp,
    }
}

/// An attribute written as raw bytes.
struct RawAttr(AttrType, Vec<u8>);

impl Setter for RawAttr {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

fn requested(family: u8) -> RawAttr {
    RawAttr(ATTR_REQUESTED_ADDRESS_FAMILY, vec![family, 0, 0, 0])
}

fn additional(family: u8) -> RawAttr {
    RawAttr(ATTR_ADDITIONAL_ADDRESS_FAMILY, vec![family, 0, 0, 0])
}

/// Every XOR-RELAYED-ADDRESS of a reply, in order (a dual allocation has two).
fn all_relayed(r: &Message) -> Vec<SocketAddr> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&stun::message::MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&r.transaction_id.0);
    r.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_RELAYED_ADDRESS)
        .map(|a| {
            let v = &a.value;
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip: IpAddr = match v[1] {
                0x01 => {
                    let b: [u8; 4] = std::array::from_fn(|i| v[4 + i] ^ key[i]);
                    b.into()
                }
                _ => {
                    let b: [u8; 16] = std::array::from_fn(|i| v[4 + i] ^ key[i]);
                    b.into()
                }
            };
            SocketAddr::new(ip, port)
        })
        .collect()
}

impl Harness {
    fn allocate_with(
        &mut self,
        tuple: FiveTuple,
        cred: &RestCredential,
        attrs: &[&dyn Setter],
    ) -> Message {
        let transport = transport_udp();
        let mut all: Vec<&dyn Setter> = vec![&transport];
        all.extend_from_slice(attrs);
        self.auth(tuple, cred, request(METHOD_ALLOCATE, &all))
    }
}

#[test]
fn one_server_allocates_either_family_on_request_and_by_its_default() {
    let mut h = Harness::with(dual_config());
    let cred = h.cred("alice");
    let r = h.allocate_with(client(1), &cred, &[&requested(0x02)]);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{}", code(&r));
    assert_eq!(Harness::relayed(&r).ip().to_string(), RELAY_IP6);
    let r = h.allocate_with(client(2), &cred, &[&requested(0x01)]);
    assert_eq!(Harness::relayed(&r).ip(), IpAddr::from(RELAY_IP));
    // None named: IPv4 by default, even for an IPv6 client (RFC 8656 §7.2)...
    let mut h = Harness::with(dual_config());
    let r = h.allocate(client6(1), &cred);
    assert_eq!(Harness::relayed(&r).ip(), IpAddr::from(RELAY_IP));
    // ...the client's own family with `keep`...
    let mut cfg = dual_config();
    cfg.default_family = DefaultFamily::SameAsClient;
    let mut h = Harness::with(cfg);
    assert_eq!(
        Harness::relayed(&h.allocate(client6(1), &cred))
            .ip()
            .to_string(),
        RELAY_IP6
    );
    assert_eq!(
        Harness::relayed(&h.allocate(client(1), &cred)).ip(),
        IpAddr::from(RELAY_IP)
    );
    // ...and the family the server has when it has only one.
    let mut cfg = config();
    cfg.relays = vec![(Family::V6, None)];
    let mut h = Harness::with(cfg);
    assert_eq!(
        Harness::relayed(&h.allocate(client(1), &cred))
            .ip()
            .to_string(),
        RELAY_IP6
    );
    let r = h.allocate_with(client(2), &cred, &[&requested(0x01)]);
    assert_eq!(code(&r), 440, "IPv4 named, none offered");
    let r = h.allocate_with(client(3), &cred, &[&requested(0x07)]);
    assert_eq!(code(&r), 440, "no such family");
}

#[test]
fn an_ipv6_allocation_refuses_ipv4_peers_and_special_ipv6_ranges() {
    let mut h = Harness::with(dual_config());
    let cred = h.cred("alice");
    h.allocate_with(client(1), &cred, &[&requested(0x02)]);
    assert_eq!(code(&h.permit(client(1), &cred, peer("8.8.8.8:53"))), 443);
    for p in [
        "[::1]:5000",
        "[fe80::1]:5",
        "[fc00::1]:5",
        "[64:ff9b::a00:1]:5",
        "[64:ff9b:1::1]:5",
        "[2001:db8::5]:5",
        "[ff02::1]:5",
        "[::]:5",
    ] {
        assert_eq!(code(&h.permit(client(1), &cred, peer(p))), 403, "{p}");
    }
    // An IPv4-mapped peer is an IPv4 one: this IPv6-only relay cannot reach it.
    for p in ["[::ffff:127.0.0.1]:5", "[::ffff:8.8.8.8]:5"] {
        assert_eq!(code(&h.permit(client(1), &cred, peer(p))), 443, "{p}");
    }
    let r = h.permit(client(1), &cred, peer("[2001:4860::1]:5"));
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    // An allow-list entry opens IPv6 loopback, as 127.0.0.0/8 does for IPv4.
    let mut cfg = dual_config();
    cfg.policy = PeerPolicy::new(vec!["::1/128".parse().unwrap()]);
    let mut h = Harness::with(cfg);
    h.allocate_with(client(1), &cred, &[&requested(0x02)]);
    let r = h.permit(client(1), &cred, peer("[::1]:5000"));
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(code(&h.permit(client(1), &cred, peer("[::2]:5000"))), 403);
}

#[test]
fn a_dual_allocation_answers_both_addresses_and_relays_per_family() {
    let mut h = Harness::with(dual_config());
    let cred = h.cred("alice");
    let r = h.allocate_with(client(1), &cred, &[&additional(0x02)]);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{}", code(&r));
    let relays = all_relayed(&r);
    assert_eq!(relays.len(), 2, "{relays:?}");
    assert_eq!(relays[0].ip(), IpAddr::from(RELAY_IP));
    assert_eq!(relays[1].ip().to_string(), RELAY_IP6);
    assert!(!r.contains(ATTR_ADDRESS_ERROR_CODE));
    assert_eq!(h.core.state_size().relay_addresses, 2);

    let (p4, p6) = (peer("8.8.8.8:53"), peer("[2001:4860::1]:53"));
    for p in [p4, p6] {
        assert_eq!(
            h.permit(client(1), &cred, p).typ.class,
            CLASS_SUCCESS_RESPONSE
        );
    }
    assert_eq!(
        h.bind_channel(client(1), &cred, 0x4001, p6).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    // ChannelData to the IPv6 peer leaves from the IPv6 relay socket, a Send indication to
    // the IPv4 peer from the IPv4 one (the fake binder's handle is the port).
    match h.send(client(1), &channel_data(0x4001, b"six")) {
        ClientOutput::Relay { relay, peer, .. } => {
            assert_eq!((relay, peer), (relays[1].port(), p6));
        }
        other => panic!("not relayed: {other:?}"),
    }
    match h.send(client(1), &send_indication(p4, b"four")) {
        ClientOutput::Relay { relay, peer, .. } => {
            assert_eq!((relay, peer), (relays[0].port(), p4));
        }
        other => panic!("not relayed: {other:?}"),
    }
    // Both relay sockets close with it.
    h.core.close_tuple(client(1), h.now);
    match h.core.drain_events().as_slice() {
        [CoreEvent::Opened(_), CoreEvent::Closed { relay, second, .. }] => {
            assert_eq!(
                (*relay, *second),
                (relays[0].port(), Some(relays[1].port()))
            );
        }
        other => panic!("unexpected events {other:?}"),
    }
    assert_eq!(h.core.state_size().relay_addresses, 0);
}

#[test]
fn a_dual_allocation_without_ipv6_gets_ipv4_and_an_address_error() {
    let mut h = Harness::new();
    let cred = h.cred("alice");
    let r = h.allocate_with(client(1), &cred, &[&additional(0x02)]);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{}", code(&r));
    assert_eq!(all_relayed(&r).len(), 1);
    let e = r.get(ATTR_ADDRESS_ERROR_CODE).expect("ADDRESS-ERROR-CODE");
    assert_eq!((e[0], e[2] & 0x07, e[3]), (0x02, 4, 40), "IPv6, 440");
    assert_eq!(&e[4..], b"Address Family not Supported");
}

#[test]
fn malformed_family_combinations_are_400() {
    let mut h = Harness::with(dual_config());
    let cred = h.cred("alice");
    let r = h.allocate_with(client(1), &cred, &[&additional(0x01)]);
    assert_eq!(code(&r), 400, "IPv4 as the additional family");
    let r = h.allocate_with(client(1), &cred, &[&requested(0x02), &additional(0x02)]);
    assert_eq!(code(&r), 400, "both family attributes");
    let token = turn::proto::rsrvtoken::ReservationToken(vec![1; 8]);
    let r = h.allocate_with(client(1), &cred, &[&additional(0x02), &token]);
    assert_eq!(code(&r), 400, "additional family with a reservation token");
    let r = h.allocate_with(client(1), &cred, &[&requested(0x02), &token]);
    assert_eq!(code(&r), 400, "requested family with a reservation token");
    assert_eq!(h.core.state_size().allocations, 0);
}

#[test]
fn an_ipv6_reservation_is_redeemed_and_released_in_its_family() {
    let mut cfg = dual_config();
    cfg.user_quota = 10;
    cfg.total_quota = 10;
    let mut h = Harness::with(cfg);
    let cred = h.cred("alice");
    let even = RawAttr(ATTR_EVEN_PORT, vec![0x80]);
    let r = h.allocate_with(client(1), &cred, &[&requested(0x02), &even]);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{}", code(&r));
    let mut token = turn::proto::rsrvtoken::ReservationToken::default();
    token.get_from(&r).unwrap();
    let rtp = Harness::relayed(&r);
    let r = h.allocate_with(client(2), &cred, &[&token]);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{}", code(&r));
    let rtcp = Harness::relayed(&r);
    assert_eq!(
        rtcp,
        SocketAddr::new(rtp.ip(), rtp.port() + 1),
        "same family, port + 1"
    );
    let _ = h.core.drain_events();
    let r = h.allocate_with(client(3), &cred, &[&requested(0x02), &even]);
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    let _ = h.core.drain_events();
    h.core.close_all(h.now);
    let released: Vec<Family> = h
        .core
        .drain_events()
        .iter()
        .filter_map(|e| match e {
            CoreEvent::Unreserved { family, .. } => Some(*family),
            _ => None,
        })
        .collect();
    assert_eq!(released, [Family::V6]);
}
