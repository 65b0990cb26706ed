//! Internals opened up for the fuzz targets (`fuzz/`) and the property tests (`tests/props.rs`),
//! behind the cargo feature `testing` (off in the signalbox binary): the sans-IO core, the
//! datagram classifier and STUN decoder, the stream framing, and a small STUN request builder
//! that signs like a TURN client, so callers need no webrtc-rs type. Not a stable API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stun::agent::TransactionId;
use stun::attributes::{AttrType, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FingerprintAttr;
use stun::integrity::MessageIntegrity;
use stun::message::{Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqfamily::RequestedAddressFamily;
use turn::proto::reqtrans::RequestedTransport;

use crate::core::message;
pub use crate::core::message::{classify, Kind, CHANNEL_DATA_HEADER};
pub use crate::core::{
    AllocRef, ClientOutput, Core, CoreConfig, CoreEvent, FiveTuple, Now, Payload, PeerOutput,
    PortChoice, RelayBinder, StateSize,
};
pub use crate::io::framing::{next_frame, Frame, Next};
use crate::nonce::NonceKey;
use crate::stats::Stats;

/// A core with its own fresh counters.
pub fn new_core<R: Clone>(cfg: CoreConfig, nonce: NonceKey) -> Core<R> {
    Core::new(cfg, nonce, Arc::new(Stats::default()))
}

/// Decodes `buf` as exactly one STUN message and, when it decodes, reads every attribute the
/// core reads from a request, the way the core reads it. Returns whether it decoded.
pub fn decode_and_read(buf: &[u8]) -> bool {
    let Some(m) = message::decode(buf) else {
        return false;
    };
    let _ = message::unknown_required(&m);
    let _ = message::peer_addresses(&m);
    for attr in [ATTR_USERNAME, ATTR_REALM, ATTR_NONCE] {
        let _ = message::text(&m, attr);
    }
    let _ = message::get::<Lifetime>(&m);
    let _ = message::get::<ChannelNumber>(&m);
    let _ = message::get::<Data>(&m);
    let _ = message::get::<RequestedTransport>(&m);
    let _ = message::get::<RequestedAddressFamily>(&m);
    let _ = message::get::<turn::proto::rsrvtoken::ReservationToken>(&m);
    let _ = m.get(stun::attributes::ATTR_EVEN_PORT);
    true
}

/// STUN method numbers (RFC 8489 / RFC 8656).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// An attribute to put in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// REQUESTED-TRANSPORT with this protocol number (17 = UDP).
    RequestedTransport(u8),
    /// XOR-PEER-ADDRESS.
    XorPeer(SocketAddr),
    /// CHANNEL-NUMBER.
    Channel(u16),
    /// DATA.
    Data(Vec<u8>),
    /// Any attribute type with any value (cut to [`RAW_MAX`] bytes).
    Raw(u16, Vec<u8>),
}

/// Longest value [`Attr::Raw`] keeps.
pub const RAW_MAX: usize = 1024;

/// Long-term credentials to sign a request with.
#[derive(Debug, Clone)]
pub struct Signer<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
}

/// A request (`indication` false) or an indication with transaction id `tid` and `attrs`;
/// signed with MESSAGE-INTEGRITY when `signer` is given; FINGERPRINT last. `method` is the
/// message type with its class bits ignored, which for the methods in [`method`] (all below
/// 0x10) is the method number itself.
pub fn request(
    method: u16,
    indication: bool,
    tid: [u8; 12],
    attrs: &[Attr],
    signer: Option<&Signer<'_>>,
) -> Vec<u8> {
    let mut m = Message::new();
    let mut typ = MessageType::default();
    // Method bits as given, class bits: request (00) or indication (01, the 0x0010 bit).
    typ.read_value((method & 0x3EEF) | if indication { 0x0010 } else { 0 });
    m.set_type(typ);
    m.transaction_id = TransactionId(tid);
    m.write_header();
    for a in attrs {
        let set: Box<dyn Setter> = match a {
            Attr::Lifetime(s) => Box::new(Lifetime(Duration::from_secs(u64::from(*s)))),
            Attr::RequestedTransport(p) => Box::new(RequestedTransport {
                protocol: turn::proto::Protocol(*p),
            }),
            Attr::XorPeer(p) => Box::new(PeerAddress {
                ip: p.ip(),
                port: p.port(),
            }),
            Attr::Channel(n) => Box::new(ChannelNumber(*n)),
            Attr::Data(d) => Box::new(Data(d.clone())),
            Attr::Raw(t, v) => {
                m.add(AttrType(*t), &v[..v.len().min(RAW_MAX)]);
                continue;
            }
        };
        message::add(&mut m, set.as_ref());
    }
    if let Some(s) = signer {
        message::add_text(&mut m, ATTR_USERNAME, s.username);
        message::add_text(&mut m, ATTR_REALM, s.realm);
        message::add_text(&mut m, ATTR_NONCE, s.nonce);
        message::add(
            &mut m,
            &MessageIntegrity::new_long_term_integrity(
                s.username.to_owned(),
                s.realm.to_owned(),
                s.password.to_owned(),
            ),
        );
    }
    message::add(&mut m, &FingerprintAttr);
    m.raw
}

/// A ChannelData message (unpadded, as over UDP).
pub fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHANNEL_DATA_HEADER + payload.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(
        &u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// What a server answer says, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The transaction id it answers.
    pub tid: [u8; 12],
    pub success: bool,
    /// ERROR-CODE of an error response.
    pub code: Option<u16>,
    pub lifetime: Option<u32>,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub nonce: Option<String>,
}

/// Reads a server answer; `None` when it is not a STUN response.
pub fn read_answer(bytes: &[u8]) -> Option<Answer> {
    let m = message::decode(bytes)?;
    let class = m.typ.class;
    if class != CLASS_SUCCESS_RESPONSE && class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let code = message::get::<ErrorCodeAttribute>(&m).map(|e| e.code.0);
    let lifetime = message::get::<Lifetime>(&m).and_then(|l| u32::try_from(l.0.as_secs()).ok());
    let relayed = message::get::<RelayedAddress>(&m).map(|a| SocketAddr::new(a.ip, a.port));
    let mapped = message::get::<XorMappedAddress>(&m).map(|a| SocketAddr::new(a.ip, a.port));
    let nonce = TextAttribute::get_from_as(&m, ATTR_NONCE)
        .ok()
        .map(|t| t.text);
    Some(Answer {
        tid: m.transaction_id.0,
        success: class == CLASS_SUCCESS_RESPONSE,
        code,
        lifetime,
        relayed,
        mapped,
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_requests_decode_and_answers_read_back() {
        let peer: SocketAddr = "8.8.8.8:9".parse().expect("addr");
        let raw = request(
            method::CREATE_PERMISSION,
            false,
            [1; 12],
            &[Attr::XorPeer(peer), Attr::Raw(0x8123, vec![1, 2, 3])],
            Some(&Signer {
                username: "1:u",
                password: "p",
                realm: "r",
                nonce: "n",
            }),
        );
        assert_eq!(classify(&raw), Kind::Stun(raw.len()));
        assert!(decode_and_read(&raw));
        let m = message::decode(&raw).expect("decodes");
        assert_eq!(message::peer_addresses(&m), Ok(vec![peer]));
        assert_eq!(m.typ.method, stun::message::METHOD_CREATE_PERMISSION);
        assert_eq!(read_answer(&raw), None, "a request is not an answer");

        let ans = message::seal(message::error(&m, 438), None, true);
        let a = read_answer(&ans).expect("answer");
        assert_eq!((a.success, a.code, a.tid), (false, Some(438), [1; 12]));
    }

    #[test]
    fn indications_and_channel_data_are_framed() {
        let raw = request(method::SEND, true, [2; 12], &[Attr::Data(vec![7; 5])], None);
        let m = message::decode(&raw).expect("decodes");
        assert_eq!(m.typ.class, stun::message::CLASS_INDICATION);
        assert_eq!(
            channel_data(0x4001, b"abc"),
            vec![0x40, 0x01, 0, 3, b'a', b'b', b'c']
        );
    }
}
