//! A PostgreSQL server of the test's own: `initdb` in a temporary directory, `postgres`
//! listening only on 127.0.0.1 on a free port with its unix socket in that directory, trust
//! authentication for the superuser `postgres`, durability off (it is thrown away). Run as
//! `nobody` through `runuser` when the tests run as root (postgres refuses root). Stopped by
//! the postmaster's PID (from `postmaster.pid`) on drop; `stop` and `start` take it down and up
//! again on the same port and data. Every wait has a fixed deadline and says what it awaited.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql` 15 puts its server binaries.
const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The user the server runs as when the tests run as root.
const RUN_AS: &str = "nobody";

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `bin` with `args`, as `nobody` when we are root.
fn command(bin: &str, args: &[&str]) -> Command {
    let path = Path::new(BIN_DIR).join(bin);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-deps (Debian package postgresql)",
        path.display()
    );
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", RUN_AS, "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args).current_dir("/");
    cmd
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Postgres {
    /// Initialises a cluster and starts it; panics (naming the step) if it is not ready in 60 s.
    pub fn start() -> Postgres {
        // As root, in /tmp: `nobody` must be able to reach the directory (TMPDIR may be
        // under a home directory it cannot enter).
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix("sbpg");
            b
        };
        let dir = if is_root() {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .expect("tempdir for postgres");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        if is_root() {
            let status = Command::new("chown")
                .args([
                    "-R",
                    &format!("{RUN_AS}:"),
                    &dir.path().display().to_string(),
                ])
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "chown of the postgres temp dir to {RUN_AS}"
            );
        }
        let data = dir.path().join("data").display().to_string();
        let out = command(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: free_port(),
            dir,
            child: None,
        };
        pg.start_again();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL for `--database-url` (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of database `name`, created first.
    pub fn fresh_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement with `psql` in database `postgres`; its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL statement with `psql` in database `db`; its unaligned output.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let psql = Path::new("/usr/lib/postgresql/15/bin/psql");
        let out = Command::new(psql)
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts the server (again) on the same port and data; waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "postgres already runs");
        let sock = self.dir.path().join("sock").display().to_string();
        let data = self.data_dir().display().to_string();
        let port = self.port.to_string();
        let child = command(
            "postgres",
            &[
                "-D",
                &data,
                "-p",
                &port,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("unix_socket_directories={sock}"),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // postmaster.pid's 8th line is `ready` once it accepts connections.
            let status = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().nth(7).map(|l| l.trim().to_string()));
            if status.as_deref() == Some("ready")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "postgres exited while starting on port {}: {exit}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} not ready within 60 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's PID, from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Fast shutdown (SIGINT to the postmaster: open connections are cut); waits up to 30 s,
    /// then kills it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    if let Some(pid) = self.postmaster_pid() {
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The port is free again once the postmaster is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "postgres on port {} still accepts connections 30 s after it was stopped",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
