//! Which peer addresses a client may reach through the relay.
//!
//! Denied by default: every special-purpose range (IANA IPv4/IPv6 special-purpose registries:
//! loopback, private, link-local, CGNAT, multicast, documentation, benchmarking, reserved,
//! unspecified, 6to4/Teredo/NAT64 wrappers). IPv4-mapped IPv6 addresses are judged as the IPv4
//! address they carry. An operator allow-list of CIDRs wins over the deny list, for every port
//! of the addresses it covers; a list of exact transport addresses (IP and port, e.g. the
//! server's own SFU) wins for that one port only. The server's own relayed addresses are allowed
//! by the core (it knows them), not here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The deny-by-default peer filter with an operator allow-list.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    /// Exact transport addresses, IPs normalised.
    exact: Vec<SocketAddr>,
}

impl PeerPolicy {
    /// A policy that also allows the given CIDRs.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow,
            exact: Vec::new(),
        }
    }

    /// This policy, also allowing exactly the transport addresses `addrs` (that IP *and* port
    /// only) even when their IP lies in a denied range. IPv4-mapped IPv6 entries are normalised
    /// like peers are.
    pub fn with_exact(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        for a in addrs {
            let a = SocketAddr::new(normalise(a.ip()), a.port());
            if !self.exact.contains(&a) {
                self.exact.push(a);
            }
        }
        self
    }

    /// The exact transport addresses this policy allows (normalised).
    pub fn exact(&self) -> &[SocketAddr] {
        &self.exact
    }

    /// Whether every port of `ip` may be reached: the CIDR allow-list or the deny list decide.
    /// Exact addresses do not count here (they allow one port); decisions on a peer transport
    /// address go through [`PeerPolicy::allows_addr`].
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !is_special(ip)
    }

    /// Whether a client may create a permission for, bind a channel to, send to, or receive
    /// from the transport address `peer`: [`PeerPolicy::allows`] on its IP, or `peer` is one of
    /// the exact addresses (normalised IP and port compared; IPv6 flow info and scope are not).
    pub fn allows_addr(&self, peer: SocketAddr) -> bool {
        self.allows(peer.ip()) || self.is_exact(peer)
    }

    /// Whether `peer` is one of the exact addresses.
    fn is_exact(&self, peer: SocketAddr) -> bool {
        if self.exact.is_empty() {
            return false;
        }
        let ip = normalise(peer.ip());
        self.exact
            .iter()
            .any(|a| a.ip() == ip && a.port() == peer.port())
    }
}

/// Maps IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to plain IPv4; leaves everything else alone.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` (already normalised) lies in a range no relay should reach by default.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_special_v4(v4),
        IpAddr::V6(v6) => is_special_v6(v6),
    }
}

fn is_special_v4(ip: Ipv4Addr) -> bool {
    const DENY: &[(u32, u8)] = &[
        (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
        (0x0A00_0000, 8),  // 10.0.0.0/8 private
        (0x6440_0000, 10), // 100.64.0.0/10 CGNAT
        (0x7F00_0000, 8),  // 127.0.0.0/8 loopback
        (0xA9FE_0000, 16), // 169.254.0.0/16 link-local
        (0xAC10_0000, 12), // 172.16.0.0/12 private
        (0xC000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
        (0xC000_0200, 24), // 192.0.2.0/24 TEST-NET-1
        (0xC058_6300, 24), // 192.88.99.0/24 6to4 relay anycast
        (0xC0A8_0000, 16), // 192.168.0.0/16 private
        (0xC612_0000, 15), // 198.18.0.0/15 benchmarking
        (0xC633_6400, 24), // 198.51.100.0/24 TEST-NET-2
        (0xCB00_7100, 24), // 203.0.113.0/24 TEST-NET-3
        (0xE000_0000, 4),  // 224.0.0.0/4 multicast
        (0xF000_0000, 4),  // 240.0.0.0/4 reserved + broadcast
    ];
    let bits = u32::from(ip);
    DENY.iter()
        .any(|&(net, len)| (bits ^ net) >> (32 - u32::from(len)) == 0)
}

fn is_special_v6(ip: Ipv6Addr) -> bool {
    const DENY: &[(u128, u8)] = &[
        (0, 96),                                         // ::/96 unspecified, IPv4-compatible
        (0x0000_0000_0000_0000_0000_ffff_0000_0000, 96), // ::ffff:0:0/96 (mapped, if not normalised)
        (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // 64:ff9b::/96 NAT64
        (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // 64:ff9b:1::/48 local NAT64
        (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64 discard
        (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // 2001::/23 IETF (Teredo, ORCHID, ...)
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32 documentation
        (0x2002_0000_0000_0000_0000_0000_0000_0000, 16), // 2002::/16 6to4
        (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // 3fff::/20 documentation
        (0x5f00_0000_0000_0000_0000_0000_0000_0000, 16), // 5f00::/16 SRv6 SIDs
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7 unique local
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10 link-local
        (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10), // fec0::/10 site-local (deprecated)
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // ff00::/8 multicast
    ];
    let bits = u128::from(ip);
    if bits == 1 {
        return true; // ::1 loopback (inside ::/96 too, named for clarity)
    }
    DENY.iter()
        .any(|&(net, len)| (bits ^ net) >> (128 - u32::from(len)) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address parses")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address parses")
    }

    #[test]
    fn special_ranges_are_denied() {
        let policy = PeerPolicy::default();
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "3fff::1",
        ] {
            assert!(!policy.allows(ip(s)), "{s} must be denied");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = PeerPolicy::default();
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "2001:4860:4860::8888",
            "2606:4700::1111",
        ] {
            assert!(policy.allows(ip(s)), "{s} must be allowed");
        }
    }

    #[test]
    fn allow_list_wins_and_mapped_addresses_normalise() {
        let policy = PeerPolicy::new(vec!["127.0.0.0/8".parse().expect("cidr")]);
        assert!(policy.allows(ip("127.0.0.1")));
        assert!(policy.allows(ip("::ffff:127.0.0.2")));
        assert!(!policy.allows(ip("::1")));
        assert!(!policy.allows(ip("10.0.0.1")));
        let v6 = PeerPolicy::new(vec!["fd00::/8".parse().expect("cidr")]);
        assert!(v6.allows(ip("fd00::5")));
        assert!(!v6.allows(ip("fc00::5")));
    }

    #[test]
    fn exact_addresses_allow_one_port_only() {
        let policy = PeerPolicy::default().with_exact([addr("127.0.0.1:3479"), addr("[::1]:9")]);
        assert!(policy.allows_addr(addr("127.0.0.1:3479")));
        assert!(policy.allows_addr(addr("[::ffff:127.0.0.1]:3479")));
        assert!(!policy.allows_addr(addr("127.0.0.1:22")));
        assert!(!policy.allows_addr(addr("127.0.0.2:3479")));
        assert!(policy.allows_addr(addr("[::1]:9")));
        assert!(!policy.allows_addr(addr("[::1]:10")));
        // The IP alone is still denied: exact entries never open the whole address.
        assert!(!policy.allows(ip("127.0.0.1")));
        // Public peers stay allowed, on any port.
        assert!(policy.allows_addr(addr("8.8.8.8:22")));
    }

    #[test]
    fn mapped_exact_entries_normalise_and_combine_with_cidrs() {
        let policy = PeerPolicy::new(vec!["10.0.0.0/8".parse().expect("cidr")])
            .with_exact([addr("[::ffff:192.168.1.5]:3479"), addr("192.168.1.5:3479")]);
        assert_eq!(policy.exact(), &[addr("192.168.1.5:3479")]);
        assert!(policy.allows_addr(addr("192.168.1.5:3479")));
        assert!(policy.allows_addr(addr("[::ffff:192.168.1.5]:3479")));
        assert!(!policy.allows_addr(addr("192.168.1.5:3480")));
        assert!(
            policy.allows_addr(addr("10.1.2.3:22")),
            "CIDRs still allow every port"
        );
        assert!(!policy.allows_addr(addr("172.16.0.1:3479")));
    }
}
