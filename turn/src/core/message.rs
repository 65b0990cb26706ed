//! STUN/TURN wire helpers for the core: decoding requests with the webrtc-rs `stun` codec,
//! building responses with `stun` and `turn::proto` attribute types, and the two hot-path
//! framings (ChannelData, Data indication) written by hand so a relayed payload is never copied.

use std::net::{IpAddr, SocketAddr};

use stun::attributes::*;
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FingerprintAttr;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageClass, MessageType, Setter, CLASS_ERROR_RESPONSE,
    CLASS_SUCCESS_RESPONSE, MAGIC_COOKIE, MESSAGE_HEADER_SIZE,
};
use stun::textattrs::TextAttribute;
use stun::uattrs::UnknownAttributes;

use crate::config::Family;
use crate::peer_policy::normalise;

/// Size of the ChannelData header (channel number + length).
pub const CHANNEL_DATA_HEADER: usize = 4;

/// What the first bytes of a client datagram or frame say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message of this total length (header included).
    Stun(usize),
    /// ChannelData with this channel number and payload length.
    ChannelData(u16, usize),
    Garbage,
}

/// Classifies a buffer by its first four bytes (RFC 8656 §12: first two bits 00 = STUN,
/// 01 = ChannelData).
pub fn classify(buf: &[u8]) -> Kind {
    if buf.len() < 4 {
        return Kind::Garbage;
    }
    let first = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0 => Kind::Stun(MESSAGE_HEADER_SIZE + len),
        1 => Kind::ChannelData(first, len),
        _ => Kind::Garbage,
    }
}

/// Decodes one STUN message occupying exactly `buf`. `None` for anything malformed.
pub fn decode(buf: &[u8]) -> Option<Message> {
    if buf.len() < MESSAGE_HEADER_SIZE || buf[0] >> 6 != 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len % 4 != 0 || buf.len() < MESSAGE_HEADER_SIZE + len {
        return None;
    }
    if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
        return None;
    }
    let mut m = Message::new();
    m.raw.clear();
    m.raw.extend_from_slice(&buf[..MESSAGE_HEADER_SIZE + len]);
    m.decode().ok()?;
    if m.contains(ATTR_FINGERPRINT) && FingerprintAttr.check(&m).is_err() {
        return None;
    }
    Some(m)
}

/// Comprehension-required attributes (type < 0x8000) this server understands; any other one
/// in a request earns 420 Unknown Attribute.
const KNOWN_REQUIRED: &[AttrType] = &[
    ATTR_MAPPED_ADDRESS,
    ATTR_CHANGE_REQUEST,
    ATTR_USERNAME,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    ATTR_UNKNOWN_ATTRIBUTES,
    ATTR_CHANNEL_NUMBER,
    ATTR_LIFETIME,
    AttrType(0x0010), // BANDWIDTH (RFC 5766 drafts; ignored)
    ATTR_XOR_PEER_ADDRESS,
    ATTR_DATA,
    ATTR_REALM,
    ATTR_NONCE,
    ATTR_XOR_RELAYED_ADDRESS,
    ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_EVEN_PORT,
    ATTR_REQUESTED_TRANSPORT,
    ATTR_DONT_FRAGMENT,
    ATTR_XORMAPPED_ADDRESS,
    ATTR_RESERVATION_TOKEN,
    ATTR_PRIORITY,
    ATTR_USE_CANDIDATE,
    ATTR_PADDING,
    ATTR_RESPONSE_PORT,
];

/// Comprehension-required attributes of `m` that this server does not understand.
pub fn unknown_required(m: &Message) -> Vec<AttrType> {
    m.attributes
        .0
        .iter()
        .map(|a| a.typ)
        .filter(|t| t.value() < 0x8000 && !KNOWN_REQUIRED.contains(t))
        .collect()
}

/// A text attribute's value, if present and valid UTF-8 within the RFC's length limits.
pub fn text(m: &Message, attr: AttrType) -> Option<String> {
    TextAttribute::get_from_as(m, attr).ok().map(|t| t.text)
}

/// Reads an attribute with a `turn::proto` / `stun` getter.
pub fn get<G: Getter + Default>(m: &Message) -> Option<G> {
    let mut g = G::default();
    g.get_from(m).ok().map(|()| g)
}

/// Every XOR-PEER-ADDRESS in `m` (CreatePermission may carry several), IPv4-mapped addresses
/// normalised. `Err(())` when one is malformed.
pub fn peer_addresses(m: &Message) -> Result<Vec<SocketAddr>, ()> {
    let mut out = Vec::new();
    for a in m
        .attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
    {
        out.push(decode_xor_address(&a.value, &m.transaction_id.0)?);
    }
    Ok(out)
}

fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Result<SocketAddr, ()> {
    if v.len() < 4 {
        return Err(());
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v[4 + i] ^ cookie[i];
            }
            IpAddr::from(o)
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                let x = if i < 4 { cookie[i] } else { tid[i - 4] };
                *b = v[4 + i] ^ x;
            }
            IpAddr::from(o)
        }
        _ => return Err(()),
    };
    Ok(SocketAddr::new(normalise(ip), port))
}

/// Starts a response to `req` of the given class (same method and transaction id).
pub fn response(req: &Message, class: MessageClass) -> Message {
    let mut m = Message::new();
    m.set_type(MessageType::new(req.typ.method, class));
    m.transaction_id = req.transaction_id;
    m.write_header();
    m
}

/// Starts a success response to `req`.
pub fn success(req: &Message) -> Message {
    response(req, CLASS_SUCCESS_RESPONSE)
}

/// Starts an error response with ERROR-CODE `code` and its standard reason phrase.
pub fn error(req: &Message, code: u16) -> Message {
    let mut m = response(req, CLASS_ERROR_RESPONSE);
    add(
        &mut m,
        &ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason(code).as_bytes().to_vec(),
        },
    );
    m
}

/// An error response carrying UNKNOWN-ATTRIBUTES.
pub fn unknown_attributes(req: &Message, unknown: Vec<AttrType>) -> Message {
    let mut m = error(req, 420);
    add(&mut m, &UnknownAttributes(unknown));
    m
}

/// Adds an attribute. The setters used here fail only on oversize values, which we never build.
pub fn add(m: &mut Message, attr: &dyn Setter) {
    if let Err(e) = attr.add_to(m) {
        tracing::debug!(error = %e, "cannot encode STUN attribute");
    }
}

/// The family in a REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY value: 400 when
/// malformed, 440 for a family that does not exist.
pub fn address_family(v: &[u8]) -> Result<Family, u16> {
    match v {
        [0x01, _, _, _] => Ok(Family::V4),
        [0x02, _, _, _] => Ok(Family::V6),
        [_, _, _, _] => Err(440),
        _ => Err(400),
    }
}

/// The value of an ADDRESS-ERROR-CODE attribute (RFC 8656 §18.12): family, class and number
/// of `code`, and its reason phrase.
pub fn address_error(family: Family, code: u16) -> Vec<u8> {
    let mut v = vec![
        match family {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        },
        0,
        // The 13 reserved bits, then the 3-bit class; the number in the last byte.
        ((code / 100) & 0x07) as u8,
        (code % 100) as u8,
    ];
    v.extend_from_slice(reason(code).as_bytes());
    v
}

/// Adds a text attribute.
pub fn add_text(m: &mut Message, attr: AttrType, value: &str) {
    add(m, &TextAttribute::new(attr, value.to_owned()));
}

/// Seals a message: MESSAGE-INTEGRITY with `key` when given, FINGERPRINT when asked.
pub fn seal(mut m: Message, key: Option<&[u8; 16]>, fingerprint: bool) -> Vec<u8> {
    if let Some(key) = key {
        add(&mut m, &MessageIntegrity(key.to_vec()));
    }
    if fingerprint {
        add(&mut m, &FingerprintAttr);
    }
    m.raw
}

/// Whether MESSAGE-INTEGRITY of `m` verifies with `key`.
pub fn integrity_ok(m: &mut Message, key: &[u8; 16]) -> bool {
    MessageIntegrity(key.to_vec()).check(m).is_ok()
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// Length of the Data indication header written before a payload from a peer of this family:
/// STUN header + XOR-PEER-ADDRESS TLV + DATA TLV header.
pub fn data_indication_header_len(peer_is_v6: bool) -> usize {
    MESSAGE_HEADER_SIZE + 4 + if peer_is_v6 { 20 } else { 8 } + 4
}

/// Writes a Data indication around a payload that already sits at
/// `buf[header_len..header_len + len]` (`header_len` from [`data_indication_header_len`]),
/// padding it to 4 bytes. Returns the total message length.
pub fn write_data_indication(
    buf: &mut [u8],
    peer: SocketAddr,
    len: usize,
    tid: [u8; 12],
) -> Option<usize> {
    let is_v6 = peer.is_ipv6();
    let h = data_indication_header_len(is_v6);
    let padded = len.div_ceil(4) * 4;
    let total = h + padded;
    if buf.len() < total {
        return None;
    }
    buf[h + len..total].fill(0);
    let body = u16::try_from(total - MESSAGE_HEADER_SIZE).ok()?;
    // Header: Data indication (method 0x007, class indication) = 0x0017.
    buf[0..2].copy_from_slice(&0x0017u16.to_be_bytes());
    buf[2..4].copy_from_slice(&body.to_be_bytes());
    buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf[8..20].copy_from_slice(&tid);
    let addr_len: u16 = if is_v6 { 20 } else { 8 };
    buf[20..22].copy_from_slice(&ATTR_XOR_PEER_ADDRESS.value().to_be_bytes());
    buf[22..24].copy_from_slice(&addr_len.to_be_bytes());
    buf[24] = 0;
    buf[25] = if is_v6 { 0x02 } else { 0x01 };
    let xport = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    buf[26..28].copy_from_slice(&xport.to_be_bytes());
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match peer.ip() {
        IpAddr::V4(ip) => {
            for (i, b) in ip.octets().iter().enumerate() {
                buf[28 + i] = b ^ cookie[i];
            }
        }
        IpAddr::V6(ip) => {
            for (i, b) in ip.octets().iter().enumerate() {
                let x = if i < 4 { cookie[i] } else { tid[i - 4] };
                buf[28 + i] = b ^ x;
            }
        }
    }
    let d = h - 4;
    buf[d..d + 2].copy_from_slice(&ATTR_DATA.value().to_be_bytes());
    buf[d + 2..d + 4].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    Some(total)
}

/// Writes the ChannelData header before a payload at `buf[4..4 + len]`; pads to 4 bytes when
/// `pad` (required over TCP/TLS). Returns the frame length.
pub fn write_channel_data(buf: &mut [u8], channel: u16, len: usize, pad: bool) -> Option<usize> {
    let total = if pad {
        CHANNEL_DATA_HEADER + len.div_ceil(4) * 4
    } else {
        CHANNEL_DATA_HEADER + len
    };
    if buf.len() < total {
        return None;
    }
    buf[0..2].copy_from_slice(&channel.to_be_bytes());
    buf[2..4].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    buf[CHANNEL_DATA_HEADER + len..total].fill(0);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn::proto::data::Data;
    use turn::proto::peeraddr::PeerAddress;

    #[test]
    fn data_indication_decodes_with_the_stun_codec() {
        for peer in ["8.8.8.8:4000", "[2001:4860::1]:5"] {
            let peer: SocketAddr = peer.parse().expect("addr");
            let payload = b"hello, peer!!";
            let h = data_indication_header_len(peer.is_ipv6());
            let mut buf = vec![0xAA; 2048];
            buf[h..h + payload.len()].copy_from_slice(payload);
            let n = write_data_indication(&mut buf, peer, payload.len(), [3; 12]).expect("fits");
            assert_eq!(n % 4, 0);
            let m = decode(&buf[..n]).expect("valid STUN");
            assert_eq!(m.typ.method, stun::message::METHOD_DATA);
            let got: PeerAddress = get(&m).expect("peer");
            assert_eq!(SocketAddr::new(got.ip, got.port), peer);
            let data: Data = get(&m).expect("data");
            assert_eq!(data.0, payload);
        }
    }

    #[test]
    fn channel_data_framing_pads_only_when_asked() {
        let mut buf = [0xFFu8; 16];
        assert_eq!(write_channel_data(&mut buf, 0x4001, 5, false), Some(9));
        assert_eq!(&buf[..4], &[0x40, 0x01, 0, 5]);
        assert_eq!(write_channel_data(&mut buf, 0x4001, 5, true), Some(12));
        assert_eq!(&buf[9..12], &[0, 0, 0]);
        assert_eq!(classify(&buf), Kind::ChannelData(0x4001, 5));
        assert_eq!(classify(&[0xC0, 0, 0, 0]), Kind::Garbage);
        assert_eq!(classify(&[0, 1, 0, 8]), Kind::Stun(28));
        assert_eq!(classify(&[0, 1]), Kind::Garbage);
    }

    #[test]
    fn malformed_stun_is_refused() {
        assert!(decode(&[0u8; 10]).is_none());
        let mut m = Message::new();
        m.set_type(stun::message::BINDING_REQUEST);
        m.write_header();
        let mut raw = m.raw.clone();
        assert!(decode(&raw).is_some());
        raw[4] ^= 1; // bad cookie
        assert!(decode(&raw).is_none());
        let mut raw = m.raw.clone();
        raw[3] = 4; // claims an attribute that is not there
        assert!(decode(&raw).is_none());
    }
}
