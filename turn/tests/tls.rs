//! TURN over TLS (`turns:`) and TCP: an allocation over a TLS connection to the real server
//! (self-signed certificate from rcgen), relaying both ways, and the allocation freed when the
//! connection closes; a TCP client that reads late still gets every frame, and an idle one
//! without an allocation is closed.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{channel_data, cred, error_code, read_frame, request, start, stream_authed, Options};
use rustls_pki_types::{CertificateDer, ServerName};
use signalbox_turn::TurnServer;
use stun::message::*;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use turn::proto::channum::ChannelNumber;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

/// Allocates, binds a channel to a loopback UDP peer, relays both ways, closes, and checks
/// the allocation is gone.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(server: &TurnServer, mut s: S) {
    let c = cred("streamer");
    let r = stream_authed(
        &mut s,
        &c,
        request(
            METHOD_ALLOCATE,
            &[&RequestedTransport {
                protocol: PROTO_UDP,
            }],
        ),
    )
    .await;
    assert_eq!(
        r.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "allocate: {:?}",
        error_code(&r)
    );
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&r).unwrap();
    let relay_addr = SocketAddr::new(relayed.ip, relayed.port);
    assert_eq!(server.state_size().allocations, 1);

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let bind = request(
        METHOD_CHANNEL_BIND,
        &[
            &ChannelNumber(0x4000),
            &PeerAddress {
                ip: peer_addr.ip(),
                port: peer_addr.port(),
            },
        ],
    );
    let r = stream_authed(&mut s, &c, bind).await;
    assert_eq!(
        r.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "bind: {:?}",
        error_code(&r)
    );

    s.write_all(&channel_data(0x4000, b"over the stream"))
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("peer receives")
        .unwrap();
    assert_eq!(&buf[..n], b"over the stream");
    assert_eq!(from, relay_addr);
    peer.send_to(b"back!", relay_addr).await.unwrap();
    let frame = read_frame(&mut s).await;
    assert_eq!(frame, channel_data(0x4000, b"back!")[..9].to_vec());

    drop(s);
    for _ in 0..100 {
        if server.state_size().allocations == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("allocation not freed when its connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_allocates_relays_and_frees_on_close() {
    let dir = common::scratch_dir("tls");
    let (cert, key, der) = common::self_signed(&dir);
    let s = start(Options {
        allow_loopback: true,
        tls: Some((cert, key)),
        ..Options::default()
    })
    .await;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der)).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(s.server.local_addrs().tls.unwrap())
        .await
        .unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the TURN server");
    session(&s.server, tls).await;
    let events = s.server.stats();
    assert_eq!(events.allocations_total, 1);
    s.server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tcp_allocates_relays_and_frees_on_close() {
    let s = start(Options {
        allow_loopback: true,
        ..Options::default()
    })
    .await;
    let tcp = TcpStream::connect(s.server.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    session(&s.server, tcp).await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_stream_closes_it_and_is_counted() {
    let s = start(Options::default()).await;
    let mut tcp = TcpStream::connect(s.server.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    // First two bits 11: neither STUN (00) nor ChannelData (01).
    tcp.write_all(b"\xff\xfe not turn at all").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await
    .expect("server closes the connection")
    .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(s.server.stats().bad_packets, 1);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_that_reads_late_gets_every_frame_in_order() {
    let s = start(Options {
        allow_loopback: true,
        ..Options::default()
    })
    .await;
    // A small receive window, so the server's writes to the connection back up and it has to
    // wait until the socket is writable again.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let mut tcp = socket
        .connect(s.server.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    let c = cred("late-reader");
    let r = stream_authed(
        &mut tcp,
        &c,
        request(
            METHOD_ALLOCATE,
            &[&RequestedTransport {
                protocol: PROTO_UDP,
            }],
        ),
    )
    .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&r).unwrap();
    let relay_addr = SocketAddr::new(relayed.ip, relayed.port);
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let bind = request(
        METHOD_CHANNEL_BIND,
        &[
            &ChannelNumber(0x4000),
            &PeerAddress {
                ip: peer_addr.ip(),
                port: peer_addr.port(),
            },
        ],
    );
    let r = stream_authed(&mut tcp, &c, bind).await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    // 6 MB while the client reads nothing (paced so the relay socket's queue never overflows):
    // more than the kernel buffers for the connection with default tcp_wmem (so the server
    // waits for EPOLLOUT), less than it queues for a client.
    const N: u32 = 6000;
    let mut payload = vec![0u8; 1001];
    for k in 0..N {
        payload[..4].copy_from_slice(&k.to_be_bytes());
        payload[4..].fill(k as u8);
        peer.send_to(&payload, relay_addr).await.unwrap();
        if k % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in 0..N {
        let frame = read_frame(&mut tcp).await;
        assert_eq!(frame.len(), 4 + 1001, "frame {k}");
        assert_eq!(&frame[..2], &[0x40, 0x00]);
        assert_eq!(
            u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
            k
        );
        assert!(frame[8..].iter().all(|&b| b == k as u8), "frame {k} intact");
    }
    assert_eq!(s.server.stats().dropped_packets, 0);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_connection_without_an_allocation_is_closed() {
    let s = start(Options {
        stream_idle_timeout: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    let addr = s.server.local_addrs().tcp.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut allocated = TcpStream::connect(addr).await.unwrap();
    let r = stream_authed(
        &mut allocated,
        &cred("keeps"),
        request(
            METHOD_ALLOCATE,
            &[&RequestedTransport {
                protocol: PROTO_UDP,
            }],
        ),
    )
    .await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("the idle connection is closed within 5 s")
    .unwrap_or(0);
    assert_eq!(n, 0);
    // The one with an allocation stays open past the timeout.
    let open = tokio::time::timeout(
        Duration::from_millis(1500),
        tokio::io::AsyncReadExt::read(&mut allocated, &mut buf),
    )
    .await;
    assert!(
        open.is_err(),
        "the allocated connection stays open: {open:?}"
    );
    assert_eq!(s.server.state_size().allocations, 1);
    s.server.shutdown().await;
}
