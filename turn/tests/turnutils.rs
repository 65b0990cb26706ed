//! Interop with coturn's independent clients (`turnutils_stunclient`, `turnutils_uclient`,
//! `turnutils_peer` from Debian's `coturn` package) against the real server on loopback, with
//! TURN REST credentials (`-W secret -u user`). These fail, never skip, when the tools are
//! missing: `scripts/install-test-deps` installs them.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{start, Options, SECRET};

/// Finds a coturn tool on PATH or fails the test with the fix.
fn tool(name: &str) -> String {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found on PATH: install Debian's coturn package (scripts/install-test-deps)"
    );
    name.to_owned()
}

/// A `turnutils_peer` echo peer on a free loopback port, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// An echo peer on `ip` (`127.0.0.1` or `::1`).
    fn start_on(ip: &str) -> Self {
        let port = UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(tool("turnutils_peer"))
            .args(["-p", &port.to_string(), "-L", ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer starts");
        std::thread::sleep(Duration::from_millis(300));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `turnutils_uclient` reported.
#[derive(Debug)]
struct Report {
    sent: u64,
    received: u64,
    lost: u64,
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)? + key.len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// Runs `turnutils_uclient` (bounded by `timeout 90`) and parses its totals.
async fn uclient(args: Vec<String>) -> Report {
    let bin = tool("turnutils_uclient");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("90")
            .arg(bin)
            .args(&args)
            .output()
            .expect("turnutils_uclient runs")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = (|| {
        Some(Report {
            sent: number_after(&text, "tot_send_msgs=")?,
            received: number_after(&text, "tot_recv_msgs=")?,
            lost: number_after(&text, "Total lost packets")?,
        })
    })();
    report.unwrap_or_else(|| panic!("uclient gave no totals:\n{text}"))
}

/// Common uclient arguments: REST credentials, the peer, `clients` × `messages` of `len` bytes.
fn args(
    server_port: u16,
    peer: &Peer,
    clients: u32,
    messages: u32,
    len: u32,
    extra: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    v.extend(
        [
            "-W",
            SECRET,
            "-u",
            "uclient",
            "-p",
            &server_port.to_string(),
            "-e",
            "127.0.0.1",
            "-r",
            &peer.port.to_string(),
            "-m",
            &clients.to_string(),
            "-n",
            &messages.to_string(),
            "-l",
            &len.to_string(),
            "-z",
            "5",
        ]
        .map(String::from),
    );
    v.push("127.0.0.1".into());
    v
}

fn options() -> Options {
    Options {
        allow_loopback: true,
        user_quota: Some(1000),
        ..Options::default()
    }
}

async fn assert_zero_loss(transport_flags: &[&str], len: u32) {
    let mut s = start(options()).await;
    let peer = Peer::start();
    let addrs = s.server.local_addrs();
    let port = if transport_flags.contains(&"-t") {
        addrs.tcp
    } else {
        addrs.udp
    }
    .unwrap()
    .port();
    let r = uclient(args(port, &peer, 4, 100, len, transport_flags)).await;
    assert_eq!(r.sent, 400, "{transport_flags:?}: {r:?}");
    assert_eq!(r.received, 400, "{transport_flags:?}: {r:?}");
    assert_eq!(r.lost, 0, "{transport_flags:?}: {r:?}");
    let stats = s.server.stats();
    assert!(stats.allocations_total >= 4, "{stats:?}");
    assert!(
        stats.packets_to_peer >= 400 && stats.packets_from_peer >= 400,
        "{stats:?}"
    );
    let opened = {
        let mut n = 0;
        while let Ok(ev) = s.events.try_recv() {
            if matches!(ev, signalbox_turn::UsageEvent::AllocationOpened { ref user, .. } if user == "uclient")
            {
                n += 1;
            }
        }
        n
    };
    assert!(
        opened >= 4,
        "usage events for uclient allocations: {opened}"
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stunclient_gets_its_reflexive_address() {
    let s = start(options()).await;
    let port = s.server.local_addrs().udp.unwrap().port();
    let bin = tool("turnutils_stunclient");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["20", &bin, "-p", &port.to_string(), "127.0.0.1"])
            .output()
            .expect("turnutils_stunclient runs")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_channels_1600_byte_datagrams_zero_loss() {
    assert_zero_loss(&[], 1600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_send_indications_zero_loss() {
    assert_zero_loss(&["-s"], 1200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_channels_zero_loss() {
    assert_zero_loss(&["-t"], 1200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_send_indications_zero_loss() {
    assert_zero_loss(&["-t", "-s"], 1200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tls_zero_loss() {
    let dir = common::scratch_dir("uclient-tls");
    let (cert, key, _) = common::self_signed(&dir);
    let mut opts = options();
    opts.tls = Some((cert, key));
    let s = start(opts).await;
    let peer = Peer::start();
    let port = s.server.local_addrs().tls.unwrap().port();
    let r = uclient(args(port, &peer, 2, 100, 1000, &["-t", "-S"])).await;
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "{r:?}");
    s.server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_client_to_client_through_our_own_relays_needs_no_allow_list() {
    // No allow-list: loopback peers are refused, but our own relayed addresses are allowed.
    let s = start(Options {
        user_quota: Some(1000),
        ..Options::default()
    })
    .await;
    let port = s.server.local_addrs().udp.unwrap().port();
    let args: Vec<String> = [
        "-y",
        "-W",
        SECRET,
        "-u",
        "uclient",
        "-p",
        &port.to_string(),
        "-m",
        "2",
        "-n",
        "100",
        "-l",
        "500",
        "-z",
        "5",
        "127.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    let r = uclient(args).await;
    assert_eq!((r.sent, r.received, r.lost), (400, 400, 0), "{r:?}");
    s.server.shutdown().await;
}

/// `args` for an IPv6 run: the peer on `::1` (`-e`), the server at `server_ip`, and `-x` (an
/// IPv6 relayed address requested) before `extra`.
fn args_v6(server_ip: &str, server_port: u16, peer: &Peer, extra: &[&str]) -> Vec<String> {
    let mut flags = vec!["-x"];
    flags.extend_from_slice(extra);
    let mut v = args(server_port, peer, 2, 100, 1000, &flags);
    let e = v.iter().position(|a| a == "-e").unwrap();
    v[e + 1] = "::1".into();
    *v.last_mut().unwrap() = server_ip.into();
    v
}

fn dual_stack_options() -> Options {
    Options {
        dual_stack: true,
        ..options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_ipv6_relays_to_an_ipv6_peer_zero_loss_udp_and_tcp() {
    let s = start(dual_stack_options()).await;
    let peer = Peer::start_on("::1");
    let addrs = s.server.local_addrs();
    let udp6 = addrs.udp6.expect("an IPv6 UDP listener").port();
    let tcp6 = addrs.tcp6.expect("an IPv6 TCP listener").port();
    let r = uclient(args_v6("::1", udp6, &peer, &[])).await;
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "UDP: {r:?}");
    let r = uclient(args_v6("::1", tcp6, &peer, &["-t"])).await;
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "TCP: {r:?}");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_ipv4_asking_for_ipv6_gets_an_ipv6_relay() {
    let mut s = start(dual_stack_options()).await;
    let peer = Peer::start_on("::1");
    let udp = s
        .server
        .local_addrs()
        .udp
        .expect("an IPv4 UDP listener")
        .port();
    let r = uclient(args_v6("127.0.0.1", udp, &peer, &[])).await;
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "{r:?}");
    let mut relays = Vec::new();
    while let Ok(ev) = s.events.try_recv() {
        if let signalbox_turn::UsageEvent::AllocationOpened { client, relay, .. } = ev {
            relays.push((client, relay));
        }
    }
    assert!(!relays.is_empty(), "no allocation was reported");
    for (client, relay) in relays {
        assert!(client.is_ipv4(), "the client came over IPv4: {client}");
        assert_eq!(relay.ip().to_string(), "::1", "an IPv6 relayed address");
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tls_on_ipv6_zero_loss() {
    let dir = common::scratch_dir("uclient-tls6");
    let (cert, key, _) = common::self_signed(&dir);
    let mut opts = dual_stack_options();
    opts.tls = Some((cert, key));
    let s = start(opts).await;
    let peer = Peer::start_on("::1");
    let port = s
        .server
        .local_addrs()
        .tls6
        .expect("an IPv6 TLS listener")
        .port();
    let r = uclient(args_v6("::1", port, &peer, &["-t", "-S"])).await;
    assert_eq!((r.sent, r.received, r.lost), (200, 200, 0), "{r:?}");
    s.server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
