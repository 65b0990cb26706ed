//! A Redis server of the test's own: Debian's `redis-server` on 127.0.0.1 on a free port, no
//! persistence, its working directory a temp dir. Stopped by PID on drop; `stop` and
//! `start_again` take it down and up on the same port (an outage). Waits have fixed deadlines
//! and say what they awaited.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/bin/redis-server";

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Redis {
    /// Starts a server; panics (naming the step) if it does not answer PING within 30 s.
    pub fn start() -> Redis {
        assert!(
            std::path::Path::new(BIN).is_file(),
            "{BIN} is missing: run scripts/install-test-deps (Debian package redis-server)"
        );
        let mut redis = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir for redis"),
            child: None,
        };
        redis.start_again();
        redis
    }

    /// The URL for `--redis-url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port; waits until it answers PING.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis already runs");
        let child = Command::new(BIN)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ping() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    fn ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Kills the server (SIGKILL, by PID): an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
