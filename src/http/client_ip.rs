//! Who the client is, network-wise: the TCP peer, or, when the peer is a trusted reverse proxy,
//! the right-most address in `X-Forwarded-For` that is not itself a trusted proxy. Used to key
//! per-client limits (login attempts), so that clients behind nginx or Caddy are not one client.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address for rate limiting.
/// An IPv4 client of a dual-stack listener shows up as `::ffff:a.b.c.d`; it is taken as the
/// IPv4 address it is, so `127.0.0.0/8` in `trusted` still matches a local proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // A malformed entry: stop trusting the chain here.
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn ipv4_mapped_peers_of_a_dual_stack_listener_are_ipv4() {
        let peer: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        let h = headers(&["198.51.100.1"]);
        assert_eq!(
            client_ip(peer, &h, &nets(&["127.0.0.0/8"])),
            "198.51.100.1".parse::<IpAddr>().expect("ip"),
            "a local proxy on a dual-stack listener is still trusted"
        );
        let peer: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &[]),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn untrusted_peers_are_taken_as_they_are() {
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        let h = headers(&["198.51.100.1"]);
        assert_eq!(
            client_ip(peer, &h, &nets(&["127.0.0.0/8"])),
            peer,
            "a client cannot claim an address"
        );
    }

    #[test]
    fn trusted_proxies_forward_the_right_most_untrusted_address() {
        let proxy: IpAddr = "127.0.0.1".parse().expect("ip");
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(client_ip(proxy, &headers(&["not-an-ip"]), &trusted), proxy);
        assert_eq!(
            client_ip(proxy, &headers(&["198.51.100.7"]), &[]),
            proxy,
            "nothing trusted"
        );
    }
}
