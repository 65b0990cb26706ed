//! What a connection on the HTTPS port speaks, from its first bytes and its TLS ClientHello:
//! TLS or plain STUN/TURN over TCP, and inside TLS, HTTP, TURN or an ACME TLS-ALPN-01
//! validation. Pure functions over bytes and ALPN lists; the listener ([`super::front`]) does
//! the IO.

/// The STUN magic cookie (RFC 5389), bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Bytes needed to tell a STUN header from anything else.
pub const STUN_PREFIX: usize = 8;

/// ALPN ids (RFC 7301 registry).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_TURN: &[u8] = b"stun.turn";
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// Too few bytes to tell yet.
    NeedMore,
    /// A TLS handshake record.
    Tls,
    /// A STUN message header (a TURN client over plain TCP).
    Stun,
    /// Anything else (plain HTTP on a TLS port, garbage).
    Other,
}

/// Classifies the bytes a client sent first on a raw TCP connection.
pub fn classify(bytes: &[u8]) -> FirstBytes {
    let Some(&first) = bytes.first() else {
        return FirstBytes::NeedMore;
    };
    // A TLS record: content type 22 (handshake), then major version 3.
    if first == 0x16 {
        return match bytes.get(1) {
            None => FirstBytes::NeedMore,
            Some(3) => FirstBytes::Tls,
            Some(_) => FirstBytes::Other,
        };
    }
    if is_stun(bytes) {
        return if bytes.len() < STUN_PREFIX {
            FirstBytes::NeedMore
        } else {
            FirstBytes::Stun
        };
    }
    FirstBytes::Other
}

/// Whether `bytes` (the start of a stream) can be, or is, a STUN header: the two top bits
/// zero and, once 8 bytes are there, the magic cookie.
fn is_stun(bytes: &[u8]) -> bool {
    if bytes.first().is_none_or(|b| b & 0xC0 != 0) {
        return false;
    }
    bytes
        .iter()
        .skip(4)
        .zip(MAGIC_COOKIE.iter())
        .all(|(b, m)| b == m)
}

/// Whether the first decrypted bytes of a TLS connection without ALPN are STUN (else HTTP).
/// `NeedMore` only while fewer than [`STUN_PREFIX`] bytes could still be STUN.
pub fn inner(bytes: &[u8]) -> FirstBytes {
    if bytes.is_empty() {
        return FirstBytes::NeedMore;
    }
    if is_stun(bytes) {
        if bytes.len() < STUN_PREFIX {
            FirstBytes::NeedMore
        } else {
            FirstBytes::Stun
        }
    } else {
        FirstBytes::Other
    }
}

/// Where a TLS connection goes, from the ALPN ids its ClientHello offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRoute {
    /// `http/1.1` or `h2` offered: the web server (HTTPS, WSS, Socket.IO).
    Http,
    /// `stun.turn` (RFC 7443) offered: the relay. coturn's clients offer it next to
    /// `http/1.1`; browsers never offer it for HTTP.
    Turn,
    /// `acme-tls/1`: an ACME server validating a TLS-ALPN-01 challenge.
    AcmeChallenge,
    /// No ALPN (coturn's clients, some WebSocket libraries): decided by the first bytes inside.
    Sniff,
}

/// Routes by ALPN. A client offering both HTTP and TURN ids gets TURN.
pub fn route<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> TlsRoute {
    let Some(ids) = alpn else {
        return TlsRoute::Sniff;
    };
    let (mut http, mut turn) = (false, false);
    for id in ids {
        if id == ALPN_ACME {
            return TlsRoute::AcmeChallenge;
        }
        http |= id == ALPN_HTTP1 || id == ALPN_H2;
        turn |= id == ALPN_TURN;
    }
    match (http, turn) {
        (_, true) => TlsRoute::Turn,
        (true, false) => TlsRoute::Http,
        (false, false) => TlsRoute::Sniff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINDING: [u8; 8] = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];

    #[test]
    fn tells_tls_stun_and_others_apart() {
        assert_eq!(classify(&[]), FirstBytes::NeedMore);
        assert_eq!(classify(&[0x16]), FirstBytes::NeedMore);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), FirstBytes::Tls);
        assert_eq!(classify(&[0x16, 0x99]), FirstBytes::Other);
        assert_eq!(classify(&BINDING), FirstBytes::Stun);
        assert_eq!(classify(&BINDING[..5]), FirstBytes::NeedMore);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), FirstBytes::Other);
        // The top bits are zero but the cookie is wrong: not STUN.
        assert_eq!(
            classify(&[0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
            FirstBytes::Other
        );
        // A ChannelData frame first (0x40..) is not a way to start a TURN session.
        assert_eq!(classify(&[0x40, 0x00, 0x00, 0x04]), FirstBytes::Other);
    }

    #[test]
    fn inside_tls_stun_goes_to_the_relay_and_the_rest_to_http() {
        assert_eq!(inner(&BINDING), FirstBytes::Stun);
        assert_eq!(inner(&BINDING[..3]), FirstBytes::NeedMore);
        assert_eq!(inner(b"GET /rtc HTTP/1.1"), FirstBytes::Other);
        assert_eq!(inner(b"P"), FirstBytes::Other);
        assert_eq!(inner(&[]), FirstBytes::NeedMore);
    }

    #[test]
    fn routes_by_alpn() {
        let r = |ids: &[&[u8]]| route(Some(ids.iter().copied()));
        assert_eq!(route(None::<std::iter::Empty<&[u8]>>), TlsRoute::Sniff);
        assert_eq!(r(&[ALPN_H2, ALPN_HTTP1]), TlsRoute::Http);
        assert_eq!(r(&[ALPN_HTTP1]), TlsRoute::Http);
        assert_eq!(r(&[ALPN_TURN]), TlsRoute::Turn);
        assert_eq!(r(&[ALPN_TURN, ALPN_HTTP1]), TlsRoute::Turn);
        assert_eq!(r(&[ALPN_HTTP1, ALPN_TURN]), TlsRoute::Turn);
        assert_eq!(r(&[ALPN_ACME]), TlsRoute::AcmeChallenge);
        assert_eq!(r(&[b"imap"]), TlsRoute::Sniff);
    }
}
