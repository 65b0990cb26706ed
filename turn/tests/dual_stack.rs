//! Both address families from one running server, over real loopback sockets (`127.0.0.1` and
//! `::1`): REQUESTED-ADDRESS-FAMILY, a dual allocation (ADDITIONAL-ADDRESS-FAMILY) relaying to
//! peers of each family, and the deny list for IPv6 loopback peers (RFC 8656 §7.2).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{cred, error_code, request, start, Options, UdpClient};
use signalbox_turn::config::DefaultFamily;
use stun::attributes::*;
use stun::message::*;
use tokio::net::UdpSocket;
use turn::proto::chandata::ChannelData;
use turn::proto::channum::ChannelNumber;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

const ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);

/// An attribute written as raw bytes.
struct RawAttr(AttrType, Vec<u8>);

impl Setter for RawAttr {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

fn udp() -> RequestedTransport {
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

/// Every XOR-RELAYED-ADDRESS of a reply, in order.
fn all_relayed(r: &Message) -> Vec<SocketAddr> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&r.transaction_id.0);
    r.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_RELAYED_ADDRESS)
        .map(|a| {
            let v = &a.value;
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip: IpAddr = if v[1] == 0x01 {
                <[u8; 4]>::try_from(&v[4..8])
                    .map(|b| std::array::from_fn::<u8, 4, _>(|i| b[i] ^ key[i]))
                    .unwrap()
                    .into()
            } else {
                <[u8; 16]>::try_from(&v[4..20])
                    .map(|b| std::array::from_fn::<u8, 16, _>(|i| b[i] ^ key[i]))
                    .unwrap()
                    .into()
            };
            SocketAddr::new(ip, port)
        })
        .collect()
}

/// A UDP client of the server bound on the server address's family.
async fn client_of(server: SocketAddr) -> UdpClient {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    UdpClient {
        socket: UdpSocket::bind(local).await.unwrap(),
        server,
    }
}

async fn recv_within(socket: &UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no datagram within 5 s: waiting for {what}"))
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_allocation_relays_to_an_ipv4_and_an_ipv6_peer() {
    let s = start(Options {
        allow_loopback: true,
        dual_stack: true,
        ..Options::default()
    })
    .await;
    let server = s.server.local_addrs().udp.unwrap();
    let client = client_of(server).await;
    let c = cred("dual");
    let additional = RawAttr(ADDITIONAL_ADDRESS_FAMILY, vec![0x02, 0, 0, 0]);
    let r = client
        .authed(&c, request(METHOD_ALLOCATE, &[&udp(), &additional]))
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let relays = all_relayed(&r);
    assert_eq!(relays.len(), 2, "both relayed addresses: {relays:?}");
    assert_eq!(relays[0].ip().to_string(), "127.0.0.1");
    assert_eq!(relays[1].ip().to_string(), "::1");

    let peer4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer6 = UdpSocket::bind("[::1]:0").await.unwrap();
    let (p4, p6) = (peer4.local_addr().unwrap(), peer6.local_addr().unwrap());
    for (n, p) in [(0x4000u16, p4), (0x4001, p6)] {
        let r = client
            .authed(
                &c,
                request(METHOD_CHANNEL_BIND, &[&ChannelNumber(n), &peer_attr(p)]),
            )
            .await;
        assert_eq!(
            r.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "bind {p}: {:?}",
            error_code(&r)
        );
    }
    // Out through the relay of each peer's family, and back.
    for (n, peer, relay) in [(0x4000u16, &peer4, relays[0]), (0x4001, &peer6, relays[1])] {
        client
            .socket
            .send_to(&common::channel_data(n, b"hello"), server)
            .await
            .unwrap();
        let (got, from) = recv_within(peer, "the relayed ChannelData").await;
        assert_eq!((got.as_slice(), from), (&b"hello"[..], relay));
        peer.send_to(b"back", relay).await.unwrap();
        let (frame, _) = recv_within(&client.socket, "the peer's answer").await;
        let mut data = ChannelData {
            raw: frame,
            ..ChannelData::default()
        };
        data.decode().unwrap();
        assert_eq!((data.number.0, data.data.as_slice()), (n, &b"back"[..]));
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_loopback_peer_is_refused_without_an_allow_list_entry() {
    let s = start(Options {
        dual_stack: true,
        default_family: DefaultFamily::SameAsClient,
        ..Options::default()
    })
    .await;
    let server6 = s.server.local_addrs().udp6.expect("an IPv6 listener");
    let client = client_of(server6).await;
    let c = cred("v6");
    let r = client.authed(&c, request(METHOD_ALLOCATE, &[&udp()])).await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let relays = all_relayed(&r);
    assert_eq!(relays.len(), 1);
    assert_eq!(
        relays[0].ip().to_string(),
        "::1",
        "`keep`: an IPv6 client gets an IPv6 relay"
    );
    for p in [
        "[::1]:4000",
        "[::ffff:127.0.0.1]:4000",
        "[64:ff9b::7f00:1]:4000",
    ] {
        let p: SocketAddr = p.parse().unwrap();
        let r = client
            .authed(&c, request(METHOD_CREATE_PERMISSION, &[&peer_attr(p)]))
            .await;
        assert!(
            matches!(error_code(&r), Some(403 | 443)),
            "{p}: refused, got {:?}",
            error_code(&r)
        );
    }
    let p: SocketAddr = "[::1]:4000".parse().unwrap();
    let r = client
        .authed(&c, request(METHOD_CREATE_PERMISSION, &[&peer_attr(p)]))
        .await;
    assert_eq!(error_code(&r), Some(403), "IPv6 loopback is denied: 403");
    s.server.shutdown().await;
}
