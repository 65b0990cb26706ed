//! This host's addresses as clients should dial them: whether IPv6 is there at all, the local
//! address of each family's default route, and which address a listener of one family is
//! advertised on (the TURN relays' and the SFU's rules are the same).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use signalbox_turn::config::Family;

/// The local address of `family`'s default route. A UDP `connect` sends no packet; it only asks
/// the kernel for the route.
pub fn default_route_ip(family: Family) -> Option<IpAddr> {
    let (local, remote): (SocketAddr, SocketAddr) = match family {
        Family::V4 => (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            (Ipv4Addr::new(198, 51, 100, 1), 9).into(),
        ),
        Family::V6 => (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
        ),
    };
    let socket = UdpSocket::bind(local).ok()?;
    socket.connect(remote).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Whether this host can bind IPv6 sockets at all (a kernel booted with IPv6 disabled cannot).
pub fn ipv6_available() -> bool {
    UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// `public_host` when it is an IP literal (`[…]` allowed).
pub fn public_ip(public_host: Option<&str>) -> Option<IpAddr> {
    public_host.and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
}

/// The address a listener of `family` bound at `bind` is advertised on:
/// * a configured external address of that family (a server behind 1:1 NAT);
/// * the bound address, when concrete (e.g. 127.0.0.1 or ::1 in tests);
/// * `public_host`, when it is an IP of that family;
/// * otherwise the local address of that family's default route (`route`). Without one, IPv4
///   falls back to loopback (this machine only, with a warning naming `what`) and IPv6 gets
///   `None`: nothing of that family is advertised.
pub fn advertised(
    family: Family,
    bind: IpAddr,
    externals: &[IpAddr],
    public_ip: Option<IpAddr>,
    route: &dyn Fn(Family) -> Option<IpAddr>,
    what: &str,
) -> Option<IpAddr> {
    let of_family = |ip: &IpAddr| Family::of(*ip) == family;
    if let Some(ip) = externals.iter().copied().find(of_family) {
        return Some(ip);
    }
    if !bind.is_unspecified() {
        return Some(bind);
    }
    if let Some(ip) = public_ip.filter(of_family).or_else(|| route(family)) {
        return Some(ip);
    }
    match family {
        Family::V4 => {
            tracing::warn!(
                "no default route: {what} advertised on 127.0.0.1 (this machine only); set its \
                 external IP or --public-host for other hosts"
            );
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        Family::V6 => {
            tracing::info!("no IPv6 default route: {what} offered over IPv4 only");
            None
        }
    }
}
