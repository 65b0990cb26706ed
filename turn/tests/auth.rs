//! Credentials and unauthenticated load against the real server: wrong, expired and foreign
//! credentials get 401 over UDP and TCP; a rotated-out secret still works; 100,000
//! unauthenticated Allocates leave the server's state exactly as it was.
#![allow(clippy::disallowed_methods)] // tests are an edge: they read the clock
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{cred, error_code, request, sign, start, stream_authed, unix_now, Options, UdpClient};
use signalbox_turn::credentials::mint;
use stun::message::*;
use tokio::net::TcpStream;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

fn allocate_request() -> Message {
    request(
        METHOD_ALLOCATE,
        &[&RequestedTransport {
            protocol: PROTO_UDP,
        }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_expired_credentials_are_refused_with_401() {
    let s = start(Options::default()).await;
    let udp = UdpClient::new(s.server.local_addrs().udp.unwrap()).await;

    let mut wrong = cred("alice");
    wrong.password = "guess".into();
    assert_eq!(
        error_code(&udp.authed(&wrong, allocate_request()).await),
        Some(401)
    );

    let foreign = mint(b"some other farm", "alice", unix_now(), 3600);
    assert_eq!(
        error_code(&udp.authed(&foreign, allocate_request()).await),
        Some(401)
    );

    let expired = mint(common::SECRET.as_bytes(), "alice", unix_now() - 7200, 3600);
    assert_eq!(
        error_code(&udp.authed(&expired, allocate_request()).await),
        Some(401)
    );

    let mut tcp = TcpStream::connect(s.server.local_addrs().tcp.unwrap())
        .await
        .unwrap();
    assert_eq!(
        error_code(&stream_authed(&mut tcp, &expired, allocate_request()).await),
        Some(401)
    );
    assert_eq!(
        error_code(&stream_authed(&mut tcp, &wrong, allocate_request()).await),
        Some(401)
    );

    // A nonce from another client address is not accepted either.
    let other = UdpClient::new(udp.server).await;
    let challenge = other.roundtrip(&request(METHOD_ALLOCATE, &[]).raw).await;
    let good = cred("alice");
    let r = udp
        .roundtrip(&sign(
            allocate_request(),
            &good,
            &common::nonce_of(&challenge),
        ))
        .await;
    assert_eq!(error_code(&r), Some(438));

    assert_eq!(s.server.stats().auth_failures, 5);
    assert_eq!(s.server.state_size().allocations, 0);

    // The rotated-out secret (listed first) and the current one both verify.
    let old = mint(b"retired-secret", "alice", unix_now(), 3600);
    let r = udp.authed(&old, allocate_request()).await;
    assert_eq!(r.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&r));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_unauthenticated_allocates_leave_state_unchanged() {
    let s = start(Options::default()).await;
    let server = s.server.local_addrs().udp.unwrap();
    let before = s.server.state_size();
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(UdpClient::new(server).await);
    }
    let started = std::time::Instant::now();
    let mut answered = 0u64;
    let mut buf = vec![0u8; 2048];
    for _round in 0..100 {
        for c in &clients {
            for _ in 0..100 {
                c.socket
                    .send_to(&allocate_request().raw, server)
                    .await
                    .unwrap();
            }
        }
        // Collect this round's answers before the next, so no socket buffer overflows.
        for c in &clients {
            for _ in 0..100 {
                match tokio::time::timeout(Duration::from_millis(500), c.socket.recv_from(&mut buf))
                    .await
                {
                    Ok(Ok(_)) => answered += 1,
                    _ => break,
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "flood took too long"
        );
    }
    // Everything sent before this Binding has been processed once it is answered.
    let r = clients[0]
        .roundtrip(&request(METHOD_BINDING, &[]).raw)
        .await;
    assert_eq!(r.typ, BINDING_SUCCESS);
    assert!(
        answered > 50_000,
        "the server answered {answered} of 100000"
    );
    assert_eq!(s.server.state_size(), before);
    let stats = s.server.stats();
    assert_eq!(stats.allocations_total, 0);
    assert_eq!(stats.auth_failures, 0, "challenges are not failures");
    s.server.shutdown().await;
}
