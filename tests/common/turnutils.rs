//! coturn's test tools as independent TURN clients: `turnutils_peer` (a UDP echo peer) and
//! `turnutils_uclient` (allocates, permits, sends and counts what comes back).

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn tool(name: &str) -> String {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run scripts/install-test-deps (Debian package coturn)"
    );
    name.to_string()
}

pub struct Peer {
    child: Child,
    pub port: u16,
}

impl Peer {
    pub fn start() -> Peer {
        Peer::start_on("127.0.0.1")
    }

    /// An echo peer on `ip` (`127.0.0.1` or `::1`).
    pub fn start_on(ip: &str) -> Peer {
        let port = UdpSocket::bind((ip, 0))
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(tool("turnutils_peer"))
            .args(["-p", &port.to_string(), "-L", ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer");
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

pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)? + key.len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// Runs one uclient session with explicit credentials; returns (sent, received) messages.
pub async fn uclient(
    port: u16,
    peer: u16,
    username: &str,
    password: &str,
    messages: u32,
) -> (u64, u64, String) {
    uclient_at(
        "127.0.0.1",
        port,
        "127.0.0.1",
        peer,
        &[],
        username,
        password,
        messages,
    )
    .await
}

/// [`uclient`] against the server at `server_ip`, to the peer at `peer_ip`, with extra flags
/// (`-x`: an IPv6 relayed address; `-t`: TCP).
#[allow(clippy::too_many_arguments)]
pub async fn uclient_at(
    server_ip: &str,
    port: u16,
    peer_ip: &str,
    peer: u16,
    flags: &[&str],
    username: &str,
    password: &str,
    messages: u32,
) -> (u64, u64, String) {
    let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    args.extend(
        [
            "-u",
            username,
            "-w",
            password,
            "-p",
            &port.to_string(),
            "-e",
            peer_ip,
            "-r",
            &peer.to_string(),
            "-m",
            "1",
            "-n",
            &messages.to_string(),
            "-l",
            "200",
            "-z",
            "5",
            server_ip,
        ]
        .map(String::from),
    );
    let bin = tool("turnutils_uclient");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("60")
            .arg(bin)
            .args(&args)
            .output()
            .expect("uclient runs")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = number_after(&text, "tot_send_msgs=").unwrap_or(0);
    let received = number_after(&text, "tot_recv_msgs=").unwrap_or(0);
    (sent, received, text)
}
