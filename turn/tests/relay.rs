//! Relaying through the real server on loopback: the webrtc-rs `turn` client as an independent
//! client, and the peer policy (loopback refused by default, relayed once 127.0.0.0/8 is
//! allowed, or only to and from one exact allowed address), with usage events carrying the
//! traffic totals.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{channel_data, cred, error_code, request, start, Options, UdpClient};
use signalbox_turn::UsageEvent;
use stun::message::*;
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;
use webrtc_util::Conn;

fn allocate_request() -> Message {
    request(
        METHOD_ALLOCATE,
        &[&RequestedTransport {
            protocol: PROTO_UDP,
        }],
    )
}

fn peer_attr(p: SocketAddr) -> PeerAddress {
    PeerAddress {
        ip: p.ip(),
        port: p.port(),
    }
}

async fn recv(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_client_allocates_and_relays_to_a_udp_peer() {
    let s = start(Options {
        allow_loopback: true,
        ..Options::default()
    })
    .await;
    let server = s.server.local_addrs().udp.unwrap();
    let c = cred("webrtc-rs");
    let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: c.username.clone(),
        password: c.password.clone(),
        realm: common::REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");
    let mapped = client.send_binding_request().await.expect("binding");
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    let relay_conn = client.allocate().await.expect("allocate");
    let relay_addr = relay_conn.local_addr().expect("relayed address");
    assert_eq!(relay_addr.ip().to_string(), "127.0.0.1");

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    relay_conn
        .send_to(b"hello peer", peer_addr)
        .await
        .expect("send via relay");
    let (got, from) = recv(&peer).await.expect("peer receives the datagram");
    assert_eq!(got, b"hello peer");
    assert_eq!(from, relay_addr, "it comes from the relayed address");

    peer.send_to(b"hello client", relay_addr).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay_conn.recv_from(&mut buf))
        .await
        .expect("client receives within 5 s")
        .expect("recv");
    assert_eq!(&buf[..n], b"hello client");
    assert_eq!(from, peer_addr);

    relay_conn
        .close()
        .await
        .expect("close relay conn (Refresh 0)");
    client.close().await.expect("close client");
    let stats = s.server.stats();
    assert!(
        stats.packets_to_peer >= 1 && stats.packets_from_peer >= 1,
        "{stats:?}"
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peers_are_refused_by_default() {
    let s = start(Options::default()).await;
    let server = s.server.local_addrs().udp.unwrap();
    let c = cred("alice");
    let client = UdpClient::new(server).await;
    let r = client.authed(&c, allocate_request()).await;
    assert_eq!(
        r.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "allocate: {:?}",
        error_code(&r)
    );

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let r = client
        .authed(
            &c,
            request(METHOD_CREATE_PERMISSION, &[&peer_attr(peer_addr)]),
        )
        .await;
    assert_eq!(error_code(&r), Some(403));
    let r = client
        .authed(
            &c,
            request(
                METHOD_CHANNEL_BIND,
                &[&ChannelNumber(0x4000), &peer_attr(peer_addr)],
            ),
        )
        .await;
    assert_eq!(error_code(&r), Some(403));
    // A Send indication to it goes nowhere.
    let mut send = Message::new();
    send.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
    send.new_transaction_id().unwrap();
    send.write_header();
    peer_attr(peer_addr).add_to(&mut send).unwrap();
    Data(b"nope".to_vec()).add_to(&mut send).unwrap();
    client.socket.send_to(&send.raw, server).await.unwrap();
    assert!(
        recv(&peer).await.is_none(),
        "nothing reaches a loopback peer"
    );
    let stats = s.server.stats();
    assert_eq!(stats.denied_peers, 2);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peers_are_relayed_once_allowed_and_usage_is_reported() {
    let mut s = start(Options {
        allow_loopback: true,
        ..Options::default()
    })
    .await;
    let server = s.server.local_addrs().udp.unwrap();
    let c = cred("alice");
    let client = UdpClient::new(server).await;
    let r = client.authed(&c, allocate_request()).await;
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&r).unwrap();
    let relay_addr = SocketAddr::new(relayed.ip, relayed.port);

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let r = client
        .authed(
            &c,
            request(
                METHOD_CHANNEL_BIND,
                &[&ChannelNumber(0x4001), &peer_attr(peer_addr)],
            ),
        )
        .await;
    assert_eq!(
        r.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "bind: {:?}",
        error_code(&r)
    );

    // 1600 bytes each way, intact.
    let payload: Vec<u8> = (0..1600u32).map(|i| (i % 251) as u8).collect();
    client
        .socket
        .send_to(&channel_data(0x4001, &payload), server)
        .await
        .unwrap();
    let (got, from) = recv(&peer).await.expect("peer receives");
    assert_eq!(got, payload);
    assert_eq!(from, relay_addr);
    peer.send_to(&payload[..1000], relay_addr).await.unwrap();
    let (frame, _) = recv(&client.socket)
        .await
        .expect("client receives ChannelData");
    assert_eq!(&frame[..4], &[0x40, 0x01, 0x03, 0xE8]);
    assert_eq!(&frame[4..1004], &payload[..1000]);

    // Refresh 0 closes it and reports the totals.
    let r = client
        .authed(&c, request(METHOD_REFRESH, &[&Lifetime(Duration::ZERO)]))
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut closed = None;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), s.events.recv()).await {
        if let UsageEvent::AllocationClosed { .. } = ev {
            closed = Some(ev);
            break;
        }
    }
    match closed.expect("AllocationClosed event") {
        UsageEvent::AllocationClosed {
            user,
            relay,
            bytes_to_peer,
            bytes_from_peer,
            packets_to_peer,
            packets_from_peer,
            ..
        } => {
            assert_eq!(user, "alice");
            assert_eq!(relay, relay_addr);
            assert_eq!((bytes_to_peer, packets_to_peer), (1600, 1));
            assert_eq!((bytes_from_peer, packets_from_peer), (1000, 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.server.state_size().allocations, 0);
    s.server.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_allowed_loopback_address_is_relayed_but_not_its_neighbours() {
    // The "SFU" is allowed as an exact address; another loopback port (same IP) is not.
    let sfu = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sfu_addr = sfu.local_addr().unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let s = start(Options {
        allow_peer_addrs: vec![sfu_addr],
        ..Options::default()
    })
    .await;
    let server = s.server.local_addrs().udp.unwrap();
    let c = cred("relay-only");
    let client = UdpClient::new(server).await;
    let r = client.authed(&c, allocate_request()).await;
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&r).unwrap();
    let relay_addr = SocketAddr::new(relayed.ip, relayed.port);

    let r = client
        .authed(
            &c,
            request(
                METHOD_CHANNEL_BIND,
                &[&ChannelNumber(0x4001), &peer_attr(sfu_addr)],
            ),
        )
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let r = client
        .authed(
            &c,
            request(
                METHOD_CHANNEL_BIND,
                &[&ChannelNumber(0x4002), &peer_attr(other_addr)],
            ),
        )
        .await;
    assert_eq!(error_code(&r), Some(403));

    // Client ↔ SFU both ways.
    client
        .socket
        .send_to(&channel_data(0x4001, b"offer"), server)
        .await
        .unwrap();
    let (got, from) = recv(&sfu).await.expect("the SFU receives");
    assert_eq!((got.as_slice(), from), (&b"offer"[..], relay_addr));
    sfu.send_to(b"answer", relay_addr).await.unwrap();
    let (frame, _) = recv(&client.socket).await.expect("client receives");
    assert_eq!(frame, [&[0x40, 0x01, 0x00, 0x06][..], b"answer"].concat());

    // The permission for 127.0.0.1 exists, yet the other port is out of reach both ways.
    client
        .socket
        .send_to(&send_indication(other_addr, b"probe"), server)
        .await
        .unwrap();
    assert!(
        recv(&other).await.is_none(),
        "a Send to another port is refused"
    );
    other.send_to(b"spoof", relay_addr).await.unwrap();
    assert!(
        recv(&client.socket).await.is_none(),
        "datagrams from another port are not delivered"
    );
    assert_eq!(s.server.stats().denied_peers, 3);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_live_allocations_and_reports_them() {
    let mut s = start(Options::default()).await;
    let client = UdpClient::new(s.server.local_addrs().udp.unwrap()).await;
    let r = client.authed(&cred("bob"), allocate_request()).await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);
    assert!(matches!(
        s.events.recv().await,
        Some(UsageEvent::AllocationOpened { .. })
    ));
    s.server.shutdown().await;
    match s.events.recv().await {
        Some(UsageEvent::AllocationClosed { user, .. }) => assert_eq!(user, "bob"),
        other => panic!("expected AllocationClosed, got {other:?}"),
    }
}

async fn recv_big(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Datagrams near the UDP limit relay intact both ways, and a burst larger than one receive
/// batch (mixed sizes) arrives whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_datagrams_and_bursts_relay_intact() {
    let s = start(Options {
        allow_loopback: true,
        ..Options::default()
    })
    .await;
    let server = s.server.local_addrs().udp.unwrap();
    let c = cred("bob");
    let client = UdpClient::new(server).await;
    let r = client.authed(&c, allocate_request()).await;
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&r).unwrap();
    let relay_addr = SocketAddr::new(relayed.ip, relayed.port);
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let r = client
        .authed(
            &c,
            request(
                METHOD_CHANNEL_BIND,
                &[&ChannelNumber(0x4002), &peer_attr(peer_addr)],
            ),
        )
        .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE);

    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
    client
        .socket
        .send_to(&channel_data(0x4002, &big), server)
        .await
        .unwrap();
    assert_eq!(recv_big(&peer).await.expect("peer receives"), big);
    peer.send_to(&big, relay_addr).await.unwrap();
    let frame = recv_big(&client.socket).await.expect("client receives");
    assert_eq!(&frame[..4], &[0x40, 0x02, 0xEA, 0x60]);
    assert_eq!(&frame[4..], &big[..]);

    // 40 datagrams back to back (more than one batch), every fifth one large.
    let sizes: Vec<usize> = (0..40)
        .map(|i| if i % 5 == 0 { 8_000 + i } else { 100 + i })
        .collect();
    for (i, &n) in sizes.iter().enumerate() {
        let payload = vec![i as u8; n];
        peer.send_to(&payload, relay_addr).await.unwrap();
    }
    for (i, &n) in sizes.iter().enumerate() {
        let frame = recv_big(&client.socket)
            .await
            .expect("client receives the burst");
        let len = u16::from_be_bytes([frame[2], frame[3]]) as usize;
        assert_eq!(len, n, "datagram {i}");
        assert!(
            frame[4..4 + n].iter().all(|&b| b == i as u8),
            "datagram {i}"
        );
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_even_port_reservation_holds_port_plus_one_until_its_token_takes_it() {
    let s = start(Options::default()).await;
    let server = s.server.local_addrs().udp.unwrap();
    let c = cred("rtp");
    let (rtp, rtcp) = (UdpClient::new(server).await, UdpClient::new(server).await);
    let mut m = allocate_request();
    m.add(stun::attributes::ATTR_EVEN_PORT, &[0x80]);
    let r = rtp.authed(&c, m).await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&r).unwrap();
    assert_eq!(relayed.port % 2, 0, "EVEN-PORT");
    let mut token = turn::proto::rsrvtoken::ReservationToken::default();
    token
        .get_from(&r)
        .expect("a RESERVATION-TOKEN for the R bit");
    // Until the token is redeemed, port + 1 is held: no other socket can take it.
    let next = SocketAddr::new(relayed.ip, relayed.port + 1);
    let squatter = std::net::UdpSocket::bind(next);
    assert!(
        squatter.is_err(),
        "port + 1 of a reservation is free to others: {squatter:?}"
    );
    assert_eq!(s.server.state_size().reservations, 1);
    let mut m = allocate_request();
    token.add_to(&mut m).unwrap();
    let r = rtcp.authed(&c, m).await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let mut second = RelayedAddress::default();
    second.get_from(&r).unwrap();
    assert_eq!(SocketAddr::new(second.ip, second.port), next);
    assert_eq!(s.server.state_size().reservations, 0);
    s.server.shutdown().await;
}
