//! The sans-IO TURN server (RFC 8656 / RFC 5766 semantics): bytes from a client or a peer go
//! in with the current time, answers and relay decisions come out. No sockets, no clocks.
//!
//! Run loop for an IO shell:
//! - a datagram/frame from a client → [`Core::handle_client`] → send the [`ClientOutput`];
//! - a datagram on an allocation's relay socket → [`Core::handle_peer`] → frame it as
//!   ChannelData or a Data indication ([`message`]) and send it to the client;
//! - every second → [`Core::sweep`]; a stream transport closing → [`Core::close_tuple`];
//! - after each call → [`Core::drain_events`] to stop relay sockets, release reserved ports and
//!   report usage.
//!
//! Relay sockets are opaque handles `R` produced by a [`RelayBinder`] the shell passes in, so
//! tests drive the whole state machine with fakes.

pub mod allocation;
mod auth;
pub(crate) mod bandwidth;
pub mod message;
pub(crate) mod permissions;
pub(crate) mod reply_cache;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun::attributes::{
    AttrType, ATTR_EVEN_PORT, ATTR_FINGERPRINT, ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_RESERVATION_TOKEN,
};
use stun::message::{
    Message, CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND,
};
use stun::xoraddr::XorMappedAddress;
use turn::proto::channum::{ChannelNumber, MAX_CHANNEL_NUMBER, MIN_CHANNEL_NUMBER};
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::rsrvtoken::ReservationToken;
use turn::proto::PROTO_UDP;

use crate::config::{DefaultFamily, Family, TurnConfig};
use crate::events::{Transport, Usage};
use crate::nonce::NonceKey;
use crate::peer_policy::{normalise, PeerPolicy};
use crate::stats::Stats;
use allocation::{grant_lifetime, Allocation};
use auth::Authed;
use bandwidth::TokenBucket;
use message::{classify, decode, error, peer_addresses, seal, success, Kind, CHANNEL_DATA_HEADER};
use reply_cache::ReplyCache;

/// A client's transport association with the server: client address, server address, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

/// The current time, passed into every call.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time for lifetimes and rate limits.
    pub instant: Instant,
    /// Wall-clock time for REST credential expiry, nonces and event timestamps.
    pub wall: SystemTime,
}

impl Now {
    /// Reads both clocks (for IO shells; the core never calls this).
    #[allow(clippy::disallowed_methods)] // the one place the relay reads the clocks
    pub fn system() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Unix seconds of `wall`.
    pub fn unix(&self) -> u64 {
        self.wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Both clocks advanced by `d`.
    #[cfg(test)]
    pub fn after(&self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            wall: self.wall + d,
        }
    }
}

/// Identifies an allocation across the core/shell boundary (the relay task holds one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllocRef {
    pub tuple: FiveTuple,
    pub id: u64,
}

/// Which relay port an Allocate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    Any,
    /// EVEN-PORT. With `reserve_next` (the R bit) the binder picks an even port whose port + 1
    /// is free as well, binds both, and holds port + 1 until the core redeems it
    /// ([`PortChoice::Exact`]) or reports it free ([`CoreEvent::Unreserved`]).
    Even {
        reserve_next: bool,
    },
    /// The port reserved by an earlier EVEN-PORT (RESERVATION-TOKEN): the binder takes the
    /// socket it has held for it since.
    Exact(u16),
}

/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): an IPv6 relayed address besides the IPv4 one.
pub const ATTR_ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);
/// ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of a dual allocation is missing.
pub const ATTR_ADDRESS_ERROR_CODE: AttrType = AttrType(0x8001);

/// Binds relay sockets for new allocations (the IO shell; a fake in tests).
pub trait RelayBinder<R> {
    /// Binds a relay socket of `family` for `alloc` and returns its local address and handle.
    fn bind(
        &mut self,
        alloc: AllocRef,
        family: Family,
        port: PortChoice,
    ) -> std::io::Result<(SocketAddr, R)>;
}

/// How long a port reserved by EVEN-PORT (R bit) is held for its RESERVATION-TOKEN.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A reserved relay port (RFC 8656 §7.2), redeemed by a later Allocate with the token.
#[derive(Debug, Clone, Copy)]
struct Reservation {
    family: Family,
    port: u16,
    expires: Instant,
}

/// The relay families one Allocate gets: the primary one, and for a dual allocation the
/// additional one or why it cannot be had (family and error code).
#[derive(Debug, Clone, Copy)]
struct Families {
    primary: Family,
    additional: Option<Result<Family, (Family, u16)>>,
}

/// Where the bytes to relay to a peer are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A range of the buffer passed to [`Core::handle_client`] (ChannelData: no copy).
    Input(Range<usize>),
    /// Owned bytes (the DATA of a Send indication).
    Owned(Vec<u8>),
}

/// What to do after a client datagram or frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOutput<R> {
    Nothing,
    /// Send these bytes back to the client on the same 5-tuple.
    Reply(Vec<u8>),
    /// Send the payload from relay socket `relay` to `peer`.
    Relay {
        relay: R,
        peer: SocketAddr,
        payload: Payload,
    },
}

/// What to do with a datagram that arrived on an allocation's relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutput {
    /// The allocation is gone: stop the relay task.
    Gone,
    /// No permission (or over the bandwidth cap): drop silently.
    Drop,
    /// Send it to the client as ChannelData on this channel.
    Channel(u16),
    /// Send it to the client in a Data indication.
    Indication,
}

/// Who an allocation belongs to, for usage events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocInfo {
    pub user: String,
    pub username: String,
    pub client: SocketAddr,
    pub relay: SocketAddr,
    pub transport: Transport,
    pub opened_at: SystemTime,
}

/// Lifecycle changes the shell must act on.
#[derive(Debug)]
pub enum CoreEvent<R> {
    Opened(AllocInfo),
    /// The allocation ended (expiry, Refresh 0, connection close, shutdown): stop `relay` (and
    /// `second`, the other family's of a dual allocation).
    Closed {
        info: AllocInfo,
        usage: Usage,
        relay: R,
        second: Option<R>,
        at: SystemTime,
    },
    /// The port + 1 that an EVEN-PORT allocation reserved is no longer reserved (its token
    /// expired unredeemed, came too late, or the server shuts down): release what holds it. A
    /// redeemed reservation raises none, since its Allocate's `Exact` bind takes the port.
    Unreserved {
        family: Family,
        port: u16,
    },
}

/// Entries held by the core, for the "unauthenticated traffic allocates nothing" guarantee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
    pub users: usize,
    pub cached_replies: usize,
    pub relay_addresses: usize,
    pub reservations: usize,
}

impl StateSize {
    /// All entries added up.
    pub fn total(&self) -> usize {
        self.allocations
            + self.permissions
            + self.channels
            + self.users
            + self.cached_replies
            + self.relay_addresses
            + self.reservations
    }
}

/// The part of [`TurnConfig`] the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub realm: String,
    pub secrets: Vec<Vec<u8>>,
    pub policy: PeerPolicy,
    pub user_quota: u32,
    pub total_quota: u32,
    pub max_bitrate_bps: Option<u64>,
    /// The relay families offered, each with the IP advertised instead of the relay socket's
    /// (NAT), if any.
    pub relays: Vec<(Family, Option<IpAddr>)>,
    pub default_family: DefaultFamily,
}

impl CoreConfig {
    pub fn from_turn_config(c: &TurnConfig) -> Self {
        Self {
            realm: c.realm.clone(),
            secrets: c.secrets.clone(),
            policy: PeerPolicy::new(c.allow_peers.clone())
                .with_exact(c.allow_peer_addrs.iter().copied()),
            user_quota: c.user_quota,
            total_quota: c.total_quota,
            max_bitrate_bps: c.max_bitrate_bps,
            relays: c.relays.iter().map(|r| (r.family(), r.external)).collect(),
            default_family: c.default_family,
        }
    }

    /// Whether relays of `family` are offered, and the IP they are advertised on (NAT).
    fn relay(&self, family: Family) -> Option<Option<IpAddr>> {
        self.relays
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, ext)| *ext)
    }

    /// The family of an allocation from `client` that names none.
    fn default_family_for(&self, client: IpAddr) -> Family {
        let wanted = match self.default_family {
            DefaultFamily::Ipv4 => Family::V4,
            DefaultFamily::Ipv6 => Family::V6,
            DefaultFamily::SameAsClient => Family::of(client),
        };
        match (self.relay(wanted), self.relays.first()) {
            (None, Some((only, _))) => *only,
            _ => wanted,
        }
    }
}

/// The TURN server state machine. `R` is the relay socket handle.
#[derive(Debug)]
pub struct Core<R> {
    cfg: CoreConfig,
    nonce: NonceKey,
    stats: Arc<Stats>,
    allocations: HashMap<FiveTuple, Allocation<R>>,
    /// Advertised relayed address → owner; also "the server's own relay addresses".
    relay_index: HashMap<SocketAddr, FiveTuple>,
    /// Live allocations per user id (entries removed at zero).
    users: HashMap<String, u32>,
    replies: ReplyCache,
    /// RESERVATION-TOKEN → reserved port (at most one per allocation, 30 s).
    reservations: HashMap<[u8; 8], Reservation>,
    next_id: u64,
    events: Vec<CoreEvent<R>>,
}

impl<R: Clone> Core<R> {
    pub fn new(cfg: CoreConfig, nonce: NonceKey, stats: Arc<Stats>) -> Self {
        Self {
            cfg,
            nonce,
            stats,
            allocations: HashMap::new(),
            relay_index: HashMap::new(),
            users: HashMap::new(),
            replies: ReplyCache::default(),
            reservations: HashMap::new(),
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Handles one datagram (UDP) or one frame (TCP/TLS) from a client.
    pub fn handle_client(
        &mut self,
        tuple: FiveTuple,
        buf: &[u8],
        now: Now,
        binder: &mut dyn RelayBinder<R>,
    ) -> ClientOutput<R> {
        match classify(buf) {
            Kind::ChannelData(channel, len) => self.channel_data(tuple, buf, channel, len, now),
            Kind::Stun(total) if total <= buf.len() => match decode(&buf[..total]) {
                Some(m) => self.stun(tuple, m, now, binder),
                None => self.bad(),
            },
            _ => self.bad(),
        }
    }

    /// Decides what to do with `len` bytes that `peer` sent to the relay socket of `alloc`.
    pub fn handle_peer(
        &mut self,
        alloc: AllocRef,
        peer: SocketAddr,
        len: usize,
        now: Instant,
    ) -> PeerOutput {
        let Some(a) = self.allocations.get_mut(&alloc.tuple) else {
            return PeerOutput::Gone;
        };
        if a.id != alloc.id {
            return PeerOutput::Gone;
        }
        if a.expires <= now {
            // Past its lifetime: relays nothing, though the next sweep has yet to remove it.
            Stats::add(&self.stats.dropped_packets, 1);
            return PeerOutput::Drop;
        }
        let peer = SocketAddr::new(normalise(peer.ip()), peer.port());
        if !a.permissions.allows(peer.ip(), now) {
            Stats::add(&self.stats.dropped_packets, 1);
            return PeerOutput::Drop;
        }
        // Permissions are per IP, but one installed because of an exact allowed address (or
        // our own relayed address) must not let other ports of that private IP reach the
        // client: the source must pass the policy on its full address too.
        if !reachable(&self.cfg.policy, &self.relay_index, peer) {
            Stats::add(&self.stats.denied_peers, 1);
            return PeerOutput::Drop;
        }
        if let Some(limit) = a.limit_from_peer.as_mut() {
            if !limit.take(len, now) {
                Stats::add(&self.stats.dropped_packets, 1);
                return PeerOutput::Drop;
            }
        }
        a.usage.bytes_from_peer += len as u64;
        a.usage.packets_from_peer += 1;
        Stats::add(&self.stats.bytes_from_peer, len as u64);
        Stats::add(&self.stats.packets_from_peer, 1);
        match a.channels.number(peer, now) {
            Some(n) => PeerOutput::Channel(n),
            None => PeerOutput::Indication,
        }
    }

    /// Drops expired allocations, permissions, channels and cached replies.
    pub fn sweep(&mut self, now: Now) {
        self.remove_expired_allocations(now);
        for a in self.allocations.values_mut() {
            a.permissions.sweep(now.instant);
            a.channels.sweep(now.instant);
        }
        self.replies.sweep(now.instant);
        let events = &mut self.events;
        self.reservations.retain(|_, r| {
            let keep = r.expires > now.instant;
            if !keep {
                events.push(CoreEvent::Unreserved {
                    family: r.family,
                    port: r.port,
                });
            }
            keep
        });
    }

    /// The error a new allocation for `user` gets from the quotas: 486 over the user's, 508 over
    /// the server's.
    fn quota_refusal(&self, user: &str) -> Option<u16> {
        if self.users.get(user).copied().unwrap_or(0) >= self.cfg.user_quota {
            Some(486)
        } else if self.allocations.len() >= self.cfg.total_quota as usize {
            Some(508)
        } else {
            None
        }
    }

    /// Removes every allocation past its lifetime.
    fn remove_expired_allocations(&mut self, now: Now) {
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now.instant)
            .map(|(t, _)| *t)
            .collect();
        for tuple in expired {
            self.remove(tuple, now);
        }
    }

    /// Removes the allocation on `tuple` if it is past its lifetime, so no request or packet
    /// sees an allocation the next sweep would remove (the sweep runs only now and then).
    fn expire_if_due(&mut self, tuple: FiveTuple, now: Now) {
        if self
            .allocations
            .get(&tuple)
            .is_some_and(|a| a.expires <= now.instant)
        {
            self.remove(tuple, now);
        }
    }

    /// A stream transport closed: its allocation (if any) ends now (RFC 8656 §3.1).
    pub fn close_tuple(&mut self, tuple: FiveTuple, now: Now) {
        self.remove(tuple, now);
    }

    /// Ends every allocation and reservation (shutdown).
    pub fn close_all(&mut self, now: Now) {
        let all: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in all {
            self.remove(tuple, now);
        }
        for (_, r) in self.reservations.drain() {
            self.events.push(CoreEvent::Unreserved {
                family: r.family,
                port: r.port,
            });
        }
    }

    /// Replaces the TURN REST secrets (rotation on a config reload): the first signs, all
    /// verify, from the next request on. Allocations already made keep their key.
    pub fn set_secrets(&mut self, secrets: Vec<Vec<u8>>) {
        self.cfg.secrets = secrets;
    }

    /// Replaces the peer policy (a reloaded allow-list); permissions already installed stay
    /// until they expire, but every datagram is checked against the new policy.
    pub fn set_policy(&mut self, policy: PeerPolicy) {
        self.cfg.policy = policy;
    }

    /// Lifecycle events since the last call.
    pub fn drain_events(&mut self) -> Vec<CoreEvent<R>> {
        std::mem::take(&mut self.events)
    }

    /// Whether there are events to drain (cheap check for the hot path).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Every allocation alive now with its usage so far.
    pub fn live_allocations(&self) -> Vec<crate::events::LiveAllocation> {
        self.allocations
            .iter()
            .map(|(tuple, a)| crate::events::LiveAllocation {
                user: a.user.clone(),
                username: a.username.clone(),
                client: tuple.client,
                relay: a.relay_addr,
                transport: tuple.transport,
                opened_at: a.opened_at,
                usage: a.usage,
            })
            .collect()
    }

    /// What the core currently holds.
    pub fn state_size(&self) -> StateSize {
        StateSize {
            allocations: self.allocations.len(),
            permissions: self.allocations.values().map(|a| a.permissions.len()).sum(),
            channels: self.allocations.values().map(|a| a.channels.len()).sum(),
            users: self.users.len(),
            cached_replies: self.replies.len(),
            relay_addresses: self.relay_index.len(),
            reservations: self.reservations.len(),
        }
    }

    /// The relay handle of the allocation on `tuple`, if any.
    pub fn relay_of(&self, tuple: &FiveTuple) -> Option<(&R, SocketAddr)> {
        self.allocations
            .get(tuple)
            .map(|a| (&a.relay, a.relay_addr))
    }

    fn bad(&self) -> ClientOutput<R> {
        Stats::add(&self.stats.bad_packets, 1);
        ClientOutput::Nothing
    }

    fn dropped(&self) -> ClientOutput<R> {
        Stats::add(&self.stats.dropped_packets, 1);
        ClientOutput::Nothing
    }

    /// Whether a client may reach `peer` (full address): the policy, or one of our own relayed
    /// addresses.
    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        reachable(&self.cfg.policy, &self.relay_index, peer)
    }

    fn channel_data(
        &mut self,
        tuple: FiveTuple,
        buf: &[u8],
        channel: u16,
        len: usize,
        now: Now,
    ) -> ClientOutput<R> {
        if CHANNEL_DATA_HEADER + len > buf.len() {
            return self.bad();
        }
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return self.dropped();
        };
        if a.expires <= now.instant {
            self.remove(tuple, now);
            return self.dropped();
        }
        let Some(peer) = a.channels.peer(channel, now.instant) else {
            return self.dropped();
        };
        if !a.permissions.allows(peer.ip(), now.instant) {
            return self.dropped();
        }
        if let Some(limit) = a.limit_to_peer.as_mut() {
            if !limit.take(len, now.instant) {
                return self.dropped();
            }
        }
        a.usage.bytes_to_peer += len as u64;
        a.usage.packets_to_peer += 1;
        Stats::add(&self.stats.bytes_to_peer, len as u64);
        Stats::add(&self.stats.packets_to_peer, 1);
        ClientOutput::Relay {
            relay: a.relay_towards(peer).clone(),
            peer,
            payload: Payload::Input(CHANNEL_DATA_HEADER..CHANNEL_DATA_HEADER + len),
        }
    }

    fn stun(
        &mut self,
        tuple: FiveTuple,
        mut m: Message,
        now: Now,
        binder: &mut dyn RelayBinder<R>,
    ) -> ClientOutput<R> {
        self.expire_if_due(tuple, now);
        let method = m.typ.method;
        let class = m.typ.class;
        if class == CLASS_INDICATION {
            if method == METHOD_SEND {
                return self.send_indication(tuple, &m, now);
            }
            return ClientOutput::Nothing; // e.g. Binding indication keepalive
        }
        if class != CLASS_REQUEST {
            return self.bad();
        }
        let tid = m.transaction_id.0;
        if let Some(reply) = self.replies.get(&tuple, &tid) {
            return ClientOutput::Reply(reply.clone());
        }
        let fp = m.contains(ATTR_FINGERPRINT);
        let unknown = message::unknown_required(&m);
        if !unknown.is_empty() {
            return ClientOutput::Reply(seal(message::unknown_attributes(&m, unknown), None, fp));
        }
        if method == METHOD_BINDING {
            let mut r = success(&m);
            message::add(
                &mut r,
                &XorMappedAddress {
                    ip: tuple.client.ip(),
                    port: tuple.client.port(),
                },
            );
            return ClientOutput::Reply(seal(r, None, fp));
        }
        if ![
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&method)
        {
            return ClientOutput::Reply(seal(error(&m, 400), None, fp));
        }
        let authed = match self.authenticate(&tuple, &mut m, now) {
            Ok(a) => a,
            Err(reply) => return ClientOutput::Reply(reply),
        };
        if method == METHOD_ALLOCATE {
            if let Some(a) = self.allocations.get(&tuple) {
                if a.allocate_tid == tid {
                    return ClientOutput::Reply(a.allocate_reply.clone());
                }
            }
        }
        let (reply, created) = match method {
            METHOD_ALLOCATE => self.allocate(tuple, &m, &authed, now, binder),
            METHOD_REFRESH => (self.refresh(tuple, &m, now), false),
            METHOD_CREATE_PERMISSION => (self.create_permission(tuple, &m, now), false),
            _ => (self.channel_bind(tuple, &m, now), false),
        };
        let bytes = seal(reply, Some(&authed.key), fp);
        if created {
            if let Some(a) = self.allocations.get_mut(&tuple) {
                a.allocate_reply = bytes.clone();
            }
        }
        self.replies.insert(tuple, tid, bytes.clone(), now.instant);
        ClientOutput::Reply(bytes)
    }

    fn allocate(
        &mut self,
        tuple: FiveTuple,
        m: &Message,
        authed: &Authed,
        now: Now,
        binder: &mut dyn RelayBinder<R>,
    ) -> (Message, bool) {
        if self.allocations.contains_key(&tuple) {
            return (error(m, 437), false);
        }
        let Some(transport) = message::get::<RequestedTransport>(m) else {
            return (error(m, 400), false);
        };
        if transport.protocol != PROTO_UDP {
            return (error(m, 442), false);
        }
        let token = if m.contains(ATTR_RESERVATION_TOKEN) {
            // Both at once is malformed (RFC 8656 §7.2).
            if m.contains(ATTR_EVEN_PORT) {
                return (error(m, 400), false);
            }
            match message::get::<ReservationToken>(m).and_then(|t| <[u8; 8]>::try_from(t.0).ok()) {
                Some(t) => Some(t),
                None => return (error(m, 400), false),
            }
        } else {
            None
        };
        let mut family = match self.relay_families(tuple, m, token.is_some()) {
            Ok(f) => f,
            Err(code) => return (error(m, code), false),
        };
        let mut choice = PortChoice::Any;
        if m.contains(ATTR_EVEN_PORT) {
            match m.get(ATTR_EVEN_PORT) {
                Ok(v) if v.len() == 1 => {
                    choice = PortChoice::Even {
                        reserve_next: v[0] & 0x80 != 0,
                    }
                }
                _ => return (error(m, 400), false),
            }
        }
        if self.quota_refusal(&authed.user).is_some() {
            // Allocations past their lifetime do not count, swept or not.
            self.remove_expired_allocations(now);
        }
        if let Some(code) = self.quota_refusal(&authed.user) {
            Stats::add(&self.stats.quota_rejections, 1);
            return (error(m, code), false);
        }
        if let Some(t) = token {
            match self.reservations.remove(&t) {
                Some(r) if r.expires > now.instant => {
                    choice = PortChoice::Exact(r.port);
                    family.primary = r.family;
                }
                Some(r) => {
                    self.events.push(CoreEvent::Unreserved {
                        family: r.family,
                        port: r.port,
                    });
                    return (error(m, 508), false);
                }
                None => return (error(m, 508), false),
            }
        }
        let lifetime = grant_lifetime(message::get::<Lifetime>(m).map(|l| l.0));
        let id = self.next_id;
        let alloc = AllocRef { tuple, id };
        let (bound, relay) = match binder.bind(alloc, family.primary, choice) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "no relay port available");
                return (error(m, 508), false);
            }
        };
        self.next_id += 1;
        let relay_addr = self.advertised(family.primary, bound);
        let mut r = success(m);
        message::add(
            &mut r,
            &RelayedAddress {
                ip: relay_addr.ip(),
                port: relay_addr.port(),
            },
        );
        // The other family of a dual allocation: its relayed address, or why there is none.
        let mut second = None;
        match family.additional {
            Some(Ok(f)) => match binder.bind(alloc, f, PortChoice::Any) {
                Ok((bound, relay)) => {
                    let addr = self.advertised(f, bound);
                    message::add(
                        &mut r,
                        &RelayedAddress {
                            ip: addr.ip(),
                            port: addr.port(),
                        },
                    );
                    second = Some(allocation::Relayed { relay, addr });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no relay port available for the additional family");
                    r.add(ATTR_ADDRESS_ERROR_CODE, &message::address_error(f, 508));
                }
            },
            Some(Err((f, code))) => {
                r.add(ATTR_ADDRESS_ERROR_CODE, &message::address_error(f, code))
            }
            None => {}
        }
        message::add(&mut r, &Lifetime(lifetime));
        message::add(
            &mut r,
            &XorMappedAddress {
                ip: tuple.client.ip(),
                port: tuple.client.port(),
            },
        );
        if choice == (PortChoice::Even { reserve_next: true }) {
            if let Some(port) = bound.port().checked_add(1) {
                let t: [u8; 8] = rand::random();
                let earlier = self.reservations.insert(
                    t,
                    Reservation {
                        family: family.primary,
                        port,
                        expires: now.instant + RESERVATION_LIFETIME,
                    },
                );
                // A token drawn twice (one in 2^64): the port it held is free again.
                if let Some(r) = earlier {
                    self.events.push(CoreEvent::Unreserved {
                        family: r.family,
                        port: r.port,
                    });
                }
                message::add(&mut r, &ReservationToken(t.to_vec()));
            }
        }
        let limit = self
            .cfg
            .max_bitrate_bps
            .map(|bps| TokenBucket::new(bps, now.instant));
        self.allocations.insert(
            tuple,
            Allocation {
                id,
                relay,
                relay_addr,
                second: None,
                user: authed.user.clone(),
                username: authed.username.clone(),
                key: authed.key,
                expires: now.instant + lifetime,
                opened_at: now.wall,
                allocate_tid: m.transaction_id.0,
                allocate_reply: Vec::new(),
                permissions: Default::default(),
                channels: Default::default(),
                usage: Usage::default(),
                limit_to_peer: limit.clone(),
                limit_from_peer: limit,
            },
        );
        self.relay_index.insert(relay_addr, tuple);
        if let Some(second) = second {
            self.relay_index.insert(second.addr, tuple);
            if let Some(a) = self.allocations.get_mut(&tuple) {
                a.second = Some(second);
            }
        }
        *self.users.entry(authed.user.clone()).or_insert(0) += 1;
        Stats::add(&self.stats.allocations_active, 1);
        Stats::add(&self.stats.allocations_total, 1);
        self.events.push(CoreEvent::Opened(AllocInfo {
            user: authed.user.clone(),
            username: authed.username.clone(),
            client: tuple.client,
            relay: relay_addr,
            transport: tuple.transport,
            opened_at: now.wall,
        }));
        (r, true)
    }

    /// The relayed transport address to advertise for a relay socket bound at `bound`.
    fn advertised(&self, family: Family, bound: SocketAddr) -> SocketAddr {
        let ip = self.cfg.relay(family).flatten().unwrap_or(bound.ip());
        SocketAddr::new(ip, bound.port())
    }

    /// The relay families an Allocate asks for (RFC 8656 §7.2): REQUESTED-ADDRESS-FAMILY names
    /// one, ADDITIONAL-ADDRESS-FAMILY (IPv6) asks for IPv6 besides IPv4, neither gets the
    /// default. Fails with the error code to answer.
    fn relay_families(
        &self,
        tuple: FiveTuple,
        m: &Message,
        has_token: bool,
    ) -> Result<Families, u16> {
        let requested = match m.get(ATTR_REQUESTED_ADDRESS_FAMILY) {
            Ok(v) => Some(message::address_family(&v)?),
            Err(_) => None,
        };
        let additional = match m.get(ATTR_ADDITIONAL_ADDRESS_FAMILY) {
            Ok(v) => match message::address_family(&v) {
                Ok(Family::V6) => true,
                // Only IPv6 may be asked for as the additional family.
                Ok(Family::V4) | Err(_) => return Err(400),
            },
            Err(_) => false,
        };
        if additional && (requested.is_some() || has_token) {
            return Err(400);
        }
        if requested.is_some() && has_token {
            return Err(400);
        }
        let primary = match (requested, additional) {
            (Some(f), _) => f,
            (None, true) => Family::V4,
            (None, false) => self.cfg.default_family_for(tuple.client.ip()),
        };
        let additional = additional.then(|| match self.cfg.relay(Family::V6) {
            Some(_) => Ok(Family::V6),
            None => Err((Family::V6, 440)),
        });
        if self.cfg.relay(primary).is_none() {
            return Err(440);
        }
        Ok(Families {
            primary,
            additional,
        })
    }

    fn refresh(&mut self, tuple: FiveTuple, m: &Message, now: Now) -> Message {
        let requested = message::get::<Lifetime>(m).map(|l| l.0);
        if requested == Some(Duration::ZERO) {
            if !self.allocations.contains_key(&tuple) {
                return error(m, 437);
            }
            self.remove(tuple, now);
            let mut r = success(m);
            message::add(&mut r, &Lifetime(Duration::ZERO));
            return r;
        }
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return error(m, 437);
        };
        let lifetime = grant_lifetime(requested);
        a.expires = now.instant + lifetime;
        let mut r = success(m);
        message::add(&mut r, &Lifetime(lifetime));
        r
    }

    /// Peer addresses of a CreatePermission/ChannelBind, checked against the allocation's
    /// family (443) and the peer policy (403).
    fn checked_peers(&self, tuple: &FiveTuple, m: &Message) -> Result<Vec<SocketAddr>, Message> {
        let Some(a) = self.allocations.get(tuple) else {
            return Err(error(m, 437));
        };
        let peers = match peer_addresses(m) {
            Ok(p) if !p.is_empty() => p,
            _ => return Err(error(m, 400)),
        };
        for p in &peers {
            if !a.serves(Family::of(p.ip())) {
                return Err(error(m, 443));
            }
            if !self.peer_allowed(*p) {
                Stats::add(&self.stats.denied_peers, 1);
                return Err(error(m, 403));
            }
        }
        Ok(peers)
    }

    fn create_permission(&mut self, tuple: FiveTuple, m: &Message, now: Now) -> Message {
        let peers = match self.checked_peers(&tuple, m) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return error(m, 437);
        };
        let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
        if a.permissions.would_overflow(&ips) {
            a.permissions.sweep(now.instant);
            if a.permissions.would_overflow(&ips) {
                return error(m, 508);
            }
        }
        for ip in ips {
            a.permissions.install(ip, now.instant);
        }
        success(m)
    }

    fn channel_bind(&mut self, tuple: FiveTuple, m: &Message, now: Now) -> Message {
        if !self.allocations.contains_key(&tuple) {
            return error(m, 437);
        }
        let Some(ChannelNumber(number)) = message::get::<ChannelNumber>(m) else {
            return error(m, 400);
        };
        if !(MIN_CHANNEL_NUMBER..=MAX_CHANNEL_NUMBER).contains(&number) {
            return error(m, 400);
        }
        let peer = match self.checked_peers(&tuple, m) {
            Ok(p) if p.len() == 1 => p[0],
            Ok(_) => return error(m, 400),
            Err(e) => return e,
        };
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return error(m, 437);
        };
        if a.permissions.would_overflow(&[peer.ip()]) {
            return error(m, 508);
        }
        if a.channels.bind(number, peer, now.instant).is_err() {
            return error(m, 400);
        }
        a.permissions.install(peer.ip(), now.instant);
        success(m)
    }

    fn send_indication(&mut self, tuple: FiveTuple, m: &Message, now: Now) -> ClientOutput<R> {
        let peer = match peer_addresses(m) {
            Ok(p) if p.len() == 1 => p[0],
            _ => return self.bad(),
        };
        let Some(Data(data)) = message::get::<Data>(m) else {
            return self.bad();
        };
        let allowed = self.peer_allowed(peer);
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return self.dropped();
        };
        if !a.permissions.allows(peer.ip(), now.instant) {
            return self.dropped();
        }
        if !allowed {
            Stats::add(&self.stats.denied_peers, 1);
            return ClientOutput::Nothing;
        }
        if let Some(limit) = a.limit_to_peer.as_mut() {
            if !limit.take(data.len(), now.instant) {
                return self.dropped();
            }
        }
        a.usage.bytes_to_peer += data.len() as u64;
        a.usage.packets_to_peer += 1;
        Stats::add(&self.stats.bytes_to_peer, data.len() as u64);
        Stats::add(&self.stats.packets_to_peer, 1);
        ClientOutput::Relay {
            relay: a.relay_towards(peer).clone(),
            peer,
            payload: Payload::Owned(data),
        }
    }

    fn remove(&mut self, tuple: FiveTuple, now: Now) {
        let Some(a) = self.allocations.remove(&tuple) else {
            return;
        };
        self.relay_index.remove(&a.relay_addr);
        if let Some(second) = &a.second {
            self.relay_index.remove(&second.addr);
        }
        if let Some(n) = self.users.get_mut(&a.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.users.remove(&a.user);
            }
        }
        self.stats
            .allocations_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.events.push(CoreEvent::Closed {
            info: AllocInfo {
                user: a.user,
                username: a.username,
                client: tuple.client,
                relay: a.relay_addr,
                transport: tuple.transport,
                opened_at: a.opened_at,
            },
            usage: a.usage,
            relay: a.relay,
            second: a.second.map(|s| s.relay),
            at: now.wall,
        });
    }
}

/// Whether the transport address `peer` may exchange data with a client: the policy on the full
/// address (CIDRs, deny list, exact addresses), or one of the server's own relayed addresses.
/// A free function so the hot path can call it while an allocation is borrowed.
fn reachable(
    policy: &PeerPolicy,
    relay_index: &HashMap<SocketAddr, FiveTuple>,
    peer: SocketAddr,
) -> bool {
    policy.allows_addr(peer) || relay_index.contains_key(&peer)
}

#[cfg(test)]
mod tests;
