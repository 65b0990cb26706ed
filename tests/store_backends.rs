//! The store through the real server on both backends: every scenario here runs once on SQLite
//! (`data_dir`) and once on a PostgreSQL instance of its own (`--database-url`), and must give
//! the same answers: the REST call lifecycle and history, rooms, accounts and login, analytics,
//! and the webhook outbox. On PostgreSQL also: many concurrent accepts and rejects of one
//! ringing call through two servers sharing the database have exactly one winner, two ring
//! sweepers on one database never take the same call (and pass by a call another session holds),
//! and with PostgreSQL stopped mid-run REST answers 503 with a JSON error, writes nothing, and
//! works again once it is back.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::postgres::Postgres;
use common::{eventually, Server};
use serde_json::{json, Value};

/// The database under a test: SQLite in the server's data directory, or a PostgreSQL server.
enum Backend {
    Sqlite,
    Postgres(Postgres),
}

impl Backend {
    fn postgres() -> Backend {
        Backend::Postgres(Postgres::start())
    }

    fn server(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Backend::Postgres(pg) = self {
            args.push("--database-url".into());
            args.push(pg.url());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_with(&args, env)
    }
}

/// Each scenario as `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::postgres()).await
            }
        }
    )*};
}

on_both_backends!(
    call_lifecycle_and_history,
    rooms_join_leave_and_delete,
    accounts_and_login,
    analytics_of_a_call,
    webhook_outbox_delivers_call_events,
    store_api_outbox_media_figures_and_live_views,
    ring_sweeper_times_out_due_calls_once,
);

const JWT_SECRET: &str = "store-backends-test-jwt-secret-0123456789";

/// A token for `user` signed with [`JWT_SECRET`].
fn mint(user: &str) -> String {
    let tokens = signalbox::auth::Tokens::new(JWT_SECRET.as_bytes());
    let principal = signalbox::auth::Principal {
        id: user.into(),
        name: None,
        admin: false,
    };
    tokens
        .mint(&principal, signalbox::clock::now_ms() / 1000, 3600)
        .expect("mint")
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn call_lifecycle_and_history(db: Backend) {
    let s = db.server(&["--no-turn", "--no-sfu"], &[]);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    let accepted = bob
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    assert_eq!(accepted["callSession"]["status"], "active");
    let again = bob
        .put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(409);
    assert_eq!(code(&again), "already_active");
    let muted = alice
        .put(&format!("/calls/{id}/mute-audio"), json!({"mute": true}))
        .await
        .expect(200);
    assert_eq!(muted["message"], "Audio muted");
    let ended = alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    assert_eq!(ended["callSession"]["status"], "ended");
    assert_eq!(ended["callSession"]["endReason"], "hangup");
    let late = bob
        .put_empty(&format!("/calls/{id}/reject"))
        .await
        .expect(409);
    assert_eq!(code(&late), "call_ended");

    // A second call, rejected; history lists both, newest first, filtered by status.
    let second = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{second}/reject"))
        .await
        .expect(200);
    let history = bob.get("/calls/history").await.expect(200);
    assert_eq!(history["total"], 2, "{history}");
    let calls = history["calls"].as_array().expect("calls");
    assert_eq!(calls[0]["id"], second.as_str(), "{history}");
    assert_eq!(calls[1]["id"], id.as_str(), "{history}");
    let rejected = bob.get("/calls/history?status=rejected").await.expect(200);
    assert_eq!(rejected["total"], 1, "{rejected}");
    assert_eq!(
        s.client("mallory").get("/calls/history").await.expect(200)["total"],
        0
    );
    s.client("mallory")
        .get(&format!("/calls/{id}"))
        .await
        .expect_error(404, "not_found");
    let metrics = s.metrics().await;
    assert!(metrics.contains("ended"), "call counts in /metrics");
    // Database operations are timed on either backend.
    let timed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("signalbox_db_operation_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(timed >= 10.0, "db operations counted: {timed}");
}

async fn rooms_join_leave_and_delete(db: Backend) {
    let s = db.server(&["--no-turn", "--no-sfu"], &[]);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let room = alice
        .post(
            "/rooms",
            json!({"name": "Standup", "mode": "mesh", "maxParticipants": 2}),
        )
        .await
        .expect(201);
    let id = room["room"]["id"].as_str().expect("room id").to_string();
    alice
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    bob.post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(200);
    let full = s
        .client("carol")
        .post_empty(&format!("/rooms/{id}/join"))
        .await
        .expect(409);
    assert_eq!(code(&full), "room_full");
    let seen = bob.get(&format!("/rooms/{id}")).await.expect(200);
    assert_eq!(seen["room"]["participantCount"], 2, "{seen}");
    bob.post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect(200);
    let not_in = bob
        .post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect(409);
    assert_eq!(code(&not_in), "not_in_room");
    alice
        .post_empty(&format!("/rooms/{id}/leave"))
        .await
        .expect(200);
    // The room's session is a group call in history, ended by the last one out.
    let history = alice.get("/calls/history").await.expect(200);
    assert_eq!(history["total"], 1, "{history}");
    assert_eq!(history["calls"][0]["status"], "ended", "{history}");
    bob.delete(&format!("/rooms/{id}")).await.expect(403);
    alice.delete(&format!("/rooms/{id}")).await.expect(200);
    alice
        .get(&format!("/rooms/{id}"))
        .await
        .expect_error(404, "not_found");
}

async fn accounts_and_login(db: Backend) {
    let s = db.server(&["--no-turn", "--no-sfu"], &[]);
    let admin = s.admin();
    let body = json!({"username": "carol", "password": "first password", "name": "Carol"});
    admin
        .post("/api/admin/users", body.clone())
        .await
        .expect(201);
    let dup = admin.post("/api/admin/users", body).await.expect(409);
    assert_eq!(code(&dup), "user_exists");
    let login = |password: &'static str| s.login("carol", password);
    assert_eq!(
        login("first password").await.expect(200)["user"]["id"],
        "carol"
    );
    login("wrong password").await.expect(401);
    admin
        .post(
            "/api/admin/users/carol/password",
            json!({"password": "second password"}),
        )
        .await
        .expect(200);
    login("first password").await.expect(401);
    login("second password").await.expect(200);
    let list = admin.get("/api/admin/users").await.expect(200);
    assert_eq!(list["users"][0]["name"], "Carol", "{list}");
    admin.delete("/api/admin/users/carol").await.expect(200);
    admin
        .delete("/api/admin/users/carol")
        .await
        .expect_error(404, "not_found");
    login("second password").await.expect(401);
}

async fn analytics_of_a_call(db: Backend) {
    let s = db.server(&["--no-turn", "--no-sfu"], &[]);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    for (rtt, loss) in [(40.0, 0.01), (60.0, 0.03)] {
        alice
            .post(
                &format!("/calls/{id}/stats"),
                json!({"stats": {"rttMs": rtt, "packetLoss": loss, "bitrateKbps": 800}}),
            )
            .await
            .expect(202);
    }
    s.client("mallory")
        .post(
            &format!("/calls/{id}/stats"),
            json!({"stats": {"rttMs": 1}}),
        )
        .await
        .expect_error(404, "not_found");
    alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    let series = s
        .admin()
        .get(&format!("/api/admin/calls/{id}/quality"))
        .await
        .expect(200);
    let samples = series["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 2, "{series}");
    assert_eq!(samples[1]["rttMs"], 60.0, "{series}");
    let analytics = alice
        .get(&format!("/calls/{id}/analytics"))
        .await
        .expect(200);
    let text = analytics.to_string();
    assert!(
        text.contains("accepted") && text.contains("50"),
        "{analytics}"
    );
}

/// A webhook receiver that answers every request 204 and counts them.
fn receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, count)
}

async fn webhook_outbox_delivers_call_events(db: Backend) {
    let (url, received) = receiver();
    let s = db.server(
        &["--no-turn", "--no-sfu", "--webhook-url", &url],
        &[("SIGNALBOX_WEBHOOK_SECRET", "webhook-test-secret-0123456789")],
    );
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let id = alice.call("bob").await;
    bob.put_empty(&format!("/calls/{id}/accept"))
        .await
        .expect(200);
    alice
        .put_empty(&format!("/calls/{id}/hangup"))
        .await
        .expect(200);
    let list = s.delivered_webhooks(2, Duration::from_secs(20)).await;
    assert_eq!(list[0]["event"], "call.ended");
    assert_eq!(list[1]["event"], "call.started");
    assert_eq!(list[1]["lastStatus"], 204);
    assert_eq!(list[1]["attempts"], 1);
    assert!(received.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

/// Two servers on one PostgreSQL database: for each of several ringing calls, many accepts,
/// rejects and cancels at once, half through each server. Exactly one moves the call out of
/// `ringing`; the rest are refused with 409 (after an accept, one hang-up may end the call), and
/// the timeline holds exactly those transitions.
#[tokio::test]
async fn concurrent_accepts_rejects_and_cancels_across_two_nodes_have_one_winner() {
    let db = Backend::postgres();
    // Both nodes sign and check tokens with one secret, as a cluster's nodes do.
    let env = [("SIGNALBOX_JWT_SECRET", JWT_SECRET)];
    let a = db.server(&["--no-turn", "--no-sfu"], &env);
    let b = db.server(&["--no-turn", "--no-sfu"], &env);
    let alice = a.anonymous().with_token(&mint("alice"));
    let alice_on_b = b.anonymous().with_token(&mint("alice"));
    let bob_on = [
        a.anonymous().with_token(&mint("bob")),
        b.anonymous().with_token(&mint("bob")),
    ];
    let alice_on = [alice.clone(), alice_on_b.clone()];
    for round in 0..5 {
        let id = alice.call("bob").await;
        let mut tasks = Vec::new();
        for n in 0..24 {
            let (client, path) = match n % 3 {
                0 => (bob_on[n % 2].clone(), format!("/calls/{id}/accept")),
                1 => (bob_on[n % 2].clone(), format!("/calls/{id}/reject")),
                // The caller hanging up a ringing call cancels it.
                _ => (alice_on[n % 2].clone(), format!("/calls/{id}/hangup")),
            };
            tasks.push(tokio::spawn(async move {
                let reply = client.put_empty(&path).await;
                (path, reply.status.as_u16(), reply.body)
            }));
        }
        // Who moved the call out of `ringing`, and whether a hang-up then ended it.
        let (mut winners, mut hung_up) = (Vec::new(), 0);
        for t in tasks {
            let (path, status, body) = t.await.expect("task");
            match (status, body["callSession"]["status"].as_str()) {
                (200, Some("ended")) => hung_up += 1,
                (200, Some(to)) => winners.push((path, to.to_string())),
                (409, _) => assert!(
                    ["already_active", "call_ended", "call_changed"].contains(&code(&body)),
                    "round {round}: {path}: {body}"
                ),
                (other, _) => panic!("round {round}: {path} answered {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (path, to) = &winners[0];
        let expected = match path.rsplit('/').next() {
            Some("accept") => "active",
            Some("reject") => "rejected",
            _ => "cancelled",
        };
        assert_eq!(to, expected, "round {round}");
        // Only an accepted call can be hung up afterwards, and only once.
        let accepted = expected == "active";
        assert!(
            hung_up <= usize::from(accepted),
            "round {round}: {hung_up} hang-ups"
        );
        let want = if hung_up == 1 { "ended" } else { expected };
        // Both nodes read the same state.
        for client in &alice_on {
            let seen = client.get(&format!("/calls/{id}")).await.expect(200);
            assert_eq!(seen["callSession"]["status"], want, "round {round}");
        }
        let analytics = alice
            .get(&format!("/calls/{id}/analytics"))
            .await
            .expect(200);
        let transitions = analytics["analytics"]["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter(|e| e["event"] == "accepted" || e["event"] == "ended")
            .count();
        assert_eq!(transitions, 1 + hung_up, "round {round}: {analytics}");
    }
}

/// PostgreSQL stopped mid-run: REST answers 503 `unavailable` with a JSON error and writes
/// nothing; once it is back, the same requests work and only what was committed is there.
#[tokio::test]
async fn postgres_down_answers_503_and_recovers() {
    let db = Backend::postgres();
    let s = db.server(&["--no-turn", "--no-sfu"], &[]);
    let (alice, bob) = (s.client("alice"), s.client("bob"));
    let first = alice.call("bob").await;
    let Backend::Postgres(mut pg) = db else {
        unreachable!("a PostgreSQL backend")
    };
    pg.stop();
    for reply in [
        alice.get("/calls/history").await,
        alice
            .post(
                "/calls",
                json!({"callerId": "alice", "calleeId": "bob", "callType": "audio"}),
            )
            .await,
        bob.put_empty(&format!("/calls/{first}/accept")).await,
    ] {
        let message = reply.expect_error(503, "unavailable");
        assert!(message.contains("database"), "{message}");
    }
    let health = s.anonymous().get("/healthz").await.expect(503);
    assert_eq!(health["status"], "unavailable", "{health}");
    pg.start_again();
    eventually(
        "REST works again after PostgreSQL is back",
        Duration::from_secs(30),
        || {
            let alice = alice.clone();
            async move { (alice.get("/calls/history").await.status.as_u16() == 200).then_some(()) }
        },
    )
    .await;
    // The refused create and accept left nothing behind.
    let history = alice.get("/calls/history").await.expect(200);
    assert_eq!(history["total"], 1, "{history}");
    assert_eq!(history["calls"][0]["status"], "ringing", "{history}");
    bob.put_empty(&format!("/calls/{first}/accept"))
        .await
        .expect(200);
    alice.call("bob").await;
    assert_eq!(alice.get("/calls/history").await.expect(200)["total"], 2);
}

/// A PostgreSQL that takes a statement but does not finish it (here: a table locked by another
/// session) gets it cancelled by the statement timeout, and the request answers 503
/// `unavailable` instead of waiting. The URL's own `options` set a short timeout; the default
/// is 30 s.
#[tokio::test]
async fn a_statement_that_does_not_finish_answers_503() {
    let pg = Postgres::start();
    let url = pg.fresh_database("stuck");
    let url = format!("{url}?options=-c%20statement_timeout%3D500");
    let s = Server::start_with(&["--database-url", &url, "--no-turn", "--no-sfu"], &[]);
    let alice = s.client("alice");
    alice.get("/calls/history").await.expect(200);
    // Another session holds the calls table for 20 s.
    let mut holder = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-d", "stuck"])
        .args(["-p", &pg.port.to_string()])
        .args([
            "-c",
            "BEGIN; LOCK TABLE calls IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql runs");
    eventually(
        "the other session holding the calls table",
        Duration::from_secs(10),
        || {
            let held = pg.psql_in(
                "stuck",
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'calls' AND l.mode = 'AccessExclusiveLock' AND l.granted",
            );
            async move { (held == "1").then_some(()) }
        },
    )
    .await;
    let message = alice
        .get("/calls/history")
        .await
        .expect_error(503, "unavailable");
    assert!(message.contains("database"), "{message}");
    // End the other session (its server process, not only the psql client).
    pg.psql_in(
        "stuck",
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'calls' AND l.mode = 'AccessExclusiveLock'",
    );
    let _ = holder.kill();
    let _ = holder.wait();
    eventually(
        "history answers again once the lock is gone",
        Duration::from_secs(10),
        || {
            let alice = alice.clone();
            async move { (alice.get("/calls/history").await.status.as_u16() == 200).then_some(()) }
        },
    )
    .await;
}

/// PostgreSQL's migrations: the same versions as SQLite's, applied once (a second start applies
/// none), recorded in `schema_migrations`; a schema from a newer release is refused.
#[tokio::test]
async fn postgres_migrations_apply_once_and_refuse_a_newer_schema() {
    let pg = Postgres::start();
    let url = pg.fresh_database("migrations");
    signalbox::store::Store::connect_postgres(&url)
        .await
        .expect("first start migrates");
    let versions = pg.psql_in(
        "migrations",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    let known = signalbox::store::pg::migrations::known();
    let want: Vec<String> = (1..=known).map(|v| v.to_string()).collect();
    assert_eq!(versions, want.join(","));
    let store = signalbox::store::Store::connect_postgres(&url)
        .await
        .expect("second start");
    assert_eq!(store.backend_name(), "postgres");
    store.ping().await.expect("ping");
    let rows = pg.psql_in("migrations", "SELECT COUNT(*) FROM schema_migrations");
    assert_eq!(rows, known.to_string(), "nothing applied twice");
    pg.psql_in(
        "migrations",
        "INSERT INTO schema_migrations (version) VALUES (99)",
    );
    let err = match signalbox::store::Store::connect_postgres(&url).await {
        Ok(_) => panic!("a newer schema must be refused"),
        Err(e) => format!("{e:?}"),
    };
    assert!(err.contains("newer release"), "{err}");
}

impl Backend {
    /// The store itself (no server) on this backend; the temp dir holds the SQLite file.
    async fn store(&self, tmp: &std::path::Path) -> signalbox::store::Store {
        match self {
            Backend::Sqlite => signalbox::store::Store::open(tmp).expect("sqlite store"),
            Backend::Postgres(pg) => signalbox::store::Store::connect_postgres(&pg.url())
                .await
                .expect("postgres store"),
        }
    }
}

fn principal(id: &str, admin: bool) -> signalbox::auth::Principal {
    signalbox::auth::Principal {
        id: id.into(),
        name: None,
        admin,
    }
}

/// The store's methods that no REST scenario above reaches, called directly: the outbox's
/// per-key ordering, leases, retries, reload and pruning; TURN usage and the SFU's figures in a
/// call's analytics; the live views, the ring sweeper's query and an admin ending a room call.
async fn store_api_outbox_media_figures_and_live_views(db: Backend) {
    use signalbox::signaling::call::{Action, CallStatus, CallType, EndReason};
    use signalbox::store::analytics::{RelaySession, SfuQuality, SfuTrack};
    use signalbox::store::calls::NewCall;
    use signalbox::store::rooms::NewRoom;
    use signalbox::store::webhooks::Attempt;
    use signalbox::webhooks::retry::RetryPolicy;

    const A: &str = "http://127.0.0.1:1/a";
    const B: &str = "http://127.0.0.1:1/b";
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = db.store(tmp.path()).await;
    let (alice, bob) = (principal("alice", false), principal("bob", false));
    let policy = RetryPolicy {
        first: Duration::from_secs(1),
        cap: Duration::from_secs(4),
        max_age: Duration::from_secs(3600),
    };
    let now = 1_000_000_000;
    assert_eq!(
        store
            .set_webhook_endpoints(vec![A.into(), B.into()])
            .await
            .expect("endpoints"),
        0
    );
    let id = uuid::Uuid::new_v4().to_string();
    let new = |id: &str, at: i64| NewCall {
        id: id.into(),
        call_type: CallType::Video,
        caller_id: "alice".into(),
        callee_id: Some("bob".into()),
        room_name: None,
        now: at,
    };
    store.create_call(new(&id, now)).await.expect("create");
    let dup = store
        .create_call(new(&id, now))
        .await
        .expect_err("duplicate id");
    assert_eq!(dup.code(), "call_exists");
    store
        .apply_call_action(&id, Some(&bob), Action::Accept, now + 10)
        .await
        .expect("accept");
    let (ended, _) = store
        .apply_call_action(&id, Some(&alice), Action::Hangup, now + 20)
        .await
        .expect("hang up");
    assert_eq!(ended.status, CallStatus::Ended);
    assert_eq!(ended.end_reason, Some(EndReason::Hangup));

    // One claim per receiver and call: both call.started rows; the call.ended rows wait.
    let claimed = store
        .claim_webhooks(now + 30, 1000, 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert!(claimed
        .iter()
        .all(|c| c.event == "call.started" && c.attempts == 0));
    assert!(store
        .claim_webhooks(now + 31, 1000, 10)
        .await
        .expect("leased")
        .is_empty());
    let to = |url: &str| claimed.iter().find(|c| c.url == url).expect("claimed").seq;
    store
        .record_webhook_attempt(to(A), now + 40, Attempt::Delivered { status: 204 }, policy)
        .await
        .expect("delivered");
    let failed = Attempt::Failed {
        status: Some(500),
        error: "boom".into(),
    };
    store
        .record_webhook_attempt(to(B), now + 40, failed, policy)
        .await
        .expect("failed");
    // Once the leases are over: A's call.ended (its call.started is delivered) and B's
    // call.started again (retried); B's call.ended still waits behind it.
    let next = store
        .claim_webhooks(now + 2000, 1000, 10)
        .await
        .expect("claim");
    assert_eq!(next.len(), 2, "{next:?}");
    assert!(
        next.iter().any(|c| c.event == "call.ended" && c.url == A),
        "{next:?}"
    );
    assert!(
        next.iter()
            .any(|c| c.event == "call.started" && c.url == B && c.attempts == 1),
        "{next:?}"
    );
    let counts = store.webhook_counts_by_status().await.expect("counts");
    assert_eq!(
        counts,
        vec![("pending", 3), ("delivered", 1), ("failed", 0)]
    );
    let recent = store.recent_webhook_deliveries(10).await.expect("recent");
    assert_eq!(recent.len(), 4);
    assert_eq!(
        recent
            .iter()
            .find(|d| d.url == B && d.attempts == 1)
            .map(|d| d.last_status),
        Some(Some(500))
    );
    assert_eq!(
        store
            .reload_webhook_endpoints(vec![A.into()])
            .await
            .expect("reload"),
        2
    );
    assert_eq!(
        store.prune_webhooks(now + 1_000_000).await.expect("prune"),
        3
    );
    assert_eq!(
        store
            .recent_webhook_deliveries(10)
            .await
            .expect("recent")
            .len(),
        1
    );

    // TURN usage (one close without its open) and the SFU's figures show in the analytics.
    let session = |relay: &str, opened_at: i64| RelaySession {
        user_id: "alice".into(),
        username: "123:alice".into(),
        transport: "udp".into(),
        client_addr: "192.0.2.1:5000".into(),
        relay_addr: relay.into(),
        opened_at,
        ..RelaySession::default()
    };
    store
        .relay_opened(session("198.51.100.1:50000", now + 5))
        .await
        .expect("open");
    for relay in ["198.51.100.1:50000", "198.51.100.1:50001"] {
        let mut closed = session(relay, now + 8);
        closed.closed_at = Some(now + 15);
        closed.bytes_to_peer = 1000;
        store.relay_closed(closed).await.expect("close");
    }
    let track = |call: &str, bytes: u64, loss: Option<f64>| SfuTrack {
        call_id: call.into(),
        peer_id: "p1".into(),
        mid: "0".into(),
        user_id: "alice".into(),
        kind: "video".into(),
        direction: "published".into(),
        bytes,
        packets: 10,
        loss,
        rtt_ms: Some(20.0),
        nacks: 1,
        keyframe_requests: 0,
        updated_at: now + 12,
    };
    store
        .upsert_sfu_tracks(vec![track(&id, 100, Some(0.1)), track("gone", 1, None)])
        .await
        .expect("tracks");
    store
        .upsert_sfu_tracks(vec![track(&id, 200, None)])
        .await
        .expect("tracks again");
    let sample = |call: &str| SfuQuality {
        call_id: call.into(),
        peer_id: "p1".into(),
        at: now + 12,
        estimate_kbps: Some(500.0),
        freezes: 2,
        layers: "[]".into(),
    };
    store
        .insert_sfu_quality(vec![sample(&id), sample("gone")])
        .await
        .expect("quality");
    store
        .add_quality_report(&id, &alice, now + 15, json!({"rttMs": 30, "packetLoss": 2}))
        .await
        .expect("report");
    let nosy = store
        .add_quality_report(&id, &principal("mallory", false), now, json!({}))
        .await
        .expect_err("not a participant");
    assert_eq!(nosy.code(), "not_found");
    assert_eq!(
        store
            .call_quality_reports(&id, 10)
            .await
            .expect("reports")
            .len(),
        1
    );
    let a = store
        .call_analytics(&id, &alice, now + 100)
        .await
        .expect("analytics");
    assert_eq!(
        a.events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["created", "accepted", "ended"]
    );
    assert_eq!(a.quality.reports, 1);
    assert_eq!(a.quality.avg_rtt_ms, Some(30.0));
    assert_eq!(a.quality.avg_packet_loss, Some(0.02));
    assert_eq!(a.relay.len(), 2, "{:?}", a.relay);
    assert!(a
        .relay
        .iter()
        .all(|r| r.closed_at == Some(now + 15) && r.bytes_to_peer == 1000));
    assert_eq!(a.sfu.len(), 1);
    assert_eq!(
        (a.sfu[0].bytes, a.sfu[0].loss),
        (200, Some(0.1)),
        "a missing loss keeps the last one"
    );
    assert_eq!(a.sfu_quality.len(), 1);
    assert_eq!(a.sfu_quality[0].freezes, 2);

    // A ringing call: the live views, the counts (the sweeper has tests of its own below).
    let ringing = uuid::Uuid::new_v4().to_string();
    store
        .create_call(new(&ringing, now + 50))
        .await
        .expect("ringing");
    let mine = store.live_calls_for("bob").await.expect("live for bob");
    assert_eq!(
        mine.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [ringing.as_str()]
    );
    assert_eq!(mine[0].participants.len(), 2);
    let mut counts = store.call_counts_by_status().await.expect("counts");
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        vec![(CallStatus::Ended, 1), (CallStatus::Ringing, 1)]
    );
    store
        .add_user(
            signalbox::store::users::User {
                id: "alice".into(),
                name: Some("Alice".into()),
                admin: false,
                created_at: now,
            },
            "hash".into(),
        )
        .await
        .expect("user");

    // A room call, ended by an admin; the live view lists it while it runs.
    let room_id = uuid::Uuid::new_v4().to_string();
    store
        .create_room(NewRoom {
            id: room_id.clone(),
            name: "Retro".into(),
            owner_id: "alice".into(),
            max_participants: 8,
            is_private: true,
            mode: Default::default(),
            members: vec!["bob".into()],
            now,
        })
        .await
        .expect("room");
    let room_call = uuid::Uuid::new_v4().to_string();
    let joined = store
        .join_room(&room_id, &bob, "peer-bob", &room_call, now + 60)
        .await
        .expect("bob joins the private room he is invited to");
    assert!(joined.newly_joined);
    let private = store
        .join_room(
            &room_id,
            &principal("mallory", false),
            "peer-m",
            "x",
            now + 61,
        )
        .await
        .expect_err("private");
    assert_eq!(private.code(), "forbidden");
    store
        .join_room(&room_id, &alice, "peer-alice", "unused", now + 62)
        .await
        .expect("alice joins");
    let live = store.live_calls(10).await.expect("live");
    assert_eq!(live.calls.len(), 2, "the ringing call and the room call");
    assert_eq!(live.rooms.get(&room_call).map(|r| r.peers.len()), Some(2));
    assert_eq!(live.names.get("alice").map(String::as_str), Some("Alice"));
    let refused = store
        .end_room_call(&room_id, &room_call, &alice, now + 70)
        .await
        .expect_err("only admins");
    assert_eq!(refused.code(), "forbidden");
    let (room, call) = store
        .end_room_call(&room_id, &room_call, &principal("admin", true), now + 70)
        .await
        .expect("admin ends it");
    assert_eq!(room.peers.len(), 2);
    assert_eq!(call.end_reason, Some(EndReason::Admin));
    let again = store
        .end_room_call(&room_id, &room_call, &principal("admin", true), now + 71)
        .await
        .expect_err("already over");
    assert_eq!(again.code(), "call_ended");
    assert!(store
        .visible_room(&room_id, &bob)
        .await
        .expect("room stays")
        .peers
        .is_empty());
}

/// A ringing direct call from alice to bob created at `at`.
fn ringing_call(id: &str, at: i64) -> signalbox::store::calls::NewCall {
    signalbox::store::calls::NewCall {
        id: id.into(),
        call_type: signalbox::signaling::call::CallType::Audio,
        caller_id: "alice".into(),
        callee_id: Some("bob".into()),
        room_name: None,
        now: at,
    }
}

/// The ring sweeper (`expire_ringing_before`): ringing direct calls created at or before the
/// cutoff become `missed` with reason `timeout`, oldest first, at most `limit` a sweep, each
/// returned once, with the same rows, timeline and webhook events as a timeout through
/// `apply_call_action`; a newer ringing call and an active one are left alone.
async fn ring_sweeper_times_out_due_calls_once(db: Backend) {
    use signalbox::signaling::call::{Action, CallStatus, EndReason, Transition};

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = db.store(tmp.path()).await;
    store
        .set_webhook_endpoints(vec!["http://127.0.0.1:1/hooks".into()])
        .await
        .expect("endpoints");
    let (alice, bob) = (principal("alice", false), principal("bob", false));
    let now = 2_000_000_000;
    let cutoff = now + 50;
    let swept_at = now + 1000;
    let id = |n: &str| format!("{n}-{}", uuid::Uuid::new_v4());
    // Three due calls (the last one exactly at the cutoff), created out of order.
    let due = [id("due0"), id("due1"), id("due2")];
    for (call, at) in [(&due[1], now + 10), (&due[0], now), (&due[2], cutoff)] {
        store
            .create_call(ringing_call(call, at))
            .await
            .expect("due");
    }
    let newer = id("newer");
    store
        .create_call(ringing_call(&newer, cutoff + 1))
        .await
        .expect("newer");
    let active = id("active");
    store
        .create_call(ringing_call(&active, now))
        .await
        .expect("active");
    store
        .apply_call_action(&active, Some(&bob), Action::Accept, now + 5)
        .await
        .expect("accept");
    // The reference: a newer call timed out the way run_timers does it today.
    let control = id("control");
    store
        .create_call(ringing_call(&control, cutoff + 2))
        .await
        .expect("control");
    let (control_call, control_t) = store
        .apply_call_action(&control, None, Action::Timeout, swept_at)
        .await
        .expect("control times out");

    let first = store
        .expire_ringing_before(cutoff, swept_at, 2)
        .await
        .expect("first sweep");
    let second = store
        .expire_ringing_before(cutoff, swept_at, 2)
        .await
        .expect("second sweep");
    let third = store
        .expire_ringing_before(cutoff, swept_at, 2)
        .await
        .expect("third sweep");
    let ids = |batch: &[(signalbox::store::calls::CallRecord, Transition)]| {
        batch.iter().map(|(c, _)| c.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&first),
        [due[0].clone(), due[1].clone()],
        "oldest first, limit 2"
    );
    assert_eq!(
        ids(&second),
        [due[2].clone()],
        "the rest, the one at the cutoff too"
    );
    assert!(third.is_empty(), "each due call returned once: {third:?}");

    let timeout = Transition {
        to: CallStatus::Missed,
        reason: Some(EndReason::Timeout),
    };
    assert_eq!(control_t, timeout);
    for (call, t) in first.iter().chain(&second) {
        assert_eq!(*t, timeout, "{call:?}");
        assert_eq!(call.status, CallStatus::Missed, "{call:?}");
        assert_eq!(call.end_reason, Some(EndReason::Timeout), "{call:?}");
        assert_eq!(call.ended_at, Some(swept_at), "{call:?}");
        assert_eq!(
            store.call(&call.id).await.expect("stored"),
            *call,
            "returned as stored"
        );
        // Exactly what apply_call_action writes, but for the id and the creation (and so the
        // caller's join) time.
        let normal = |c: &signalbox::store::calls::CallRecord| {
            let mut c = c.clone();
            c.id = String::new();
            c.room_id = None; // a direct call's room id is its id
            c.created_at = 0;
            for p in &mut c.participants {
                p.joined_at = p.joined_at.map(|_| 0);
            }
            c
        };
        assert_eq!(normal(call), normal(&control_call));
        let timeline = |id: String| {
            let (store, alice) = (&store, &alice);
            async move {
                store
                    .call_analytics(&id, alice, swept_at)
                    .await
                    .expect("analytics")
                    .events
                    .into_iter()
                    .map(|e| (e.at, e.user_id, e.kind, e.data))
                    .skip(1) // `created`, at each call's own time
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            timeline(call.id.clone()).await,
            timeline(control.clone()).await
        );
    }
    assert_eq!(
        store.call(&newer).await.expect("newer").status,
        CallStatus::Ringing
    );
    let still_active = store.call(&active).await.expect("active");
    assert_eq!(still_active.status, CallStatus::Active);
    assert_eq!(still_active.ended_at, None);

    // One call.missed per timed-out call (three swept, the control), each once.
    let deliveries = store.recent_webhook_deliveries(50).await.expect("outbox");
    let missed: Vec<_> = deliveries
        .iter()
        .filter(|d| d.event == "call.missed")
        .collect();
    assert_eq!(missed.len(), 4, "{deliveries:?}");
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d.event == "call.started")
            .count(),
        1,
        "{deliveries:?}"
    );
}

/// Two nodes sweeping one PostgreSQL database at once (two stores, two pools): the sets they
/// time out are disjoint and together are every due call, each ended exactly once. A call whose
/// row another session holds is passed by at once (SKIP LOCKED), not waited for, and taken by a
/// later sweep once that session is gone.
#[tokio::test]
async fn postgres_concurrent_ring_sweeps_never_take_the_same_call() {
    use std::collections::BTreeSet;

    use signalbox::signaling::call::CallStatus;
    use signalbox::store::Store;

    let pg = Postgres::start();
    let url = pg.fresh_database("sweep");
    let a = Store::connect_postgres(&url).await.expect("node a");
    let b = Store::connect_postgres(&url).await.expect("node b");
    let now = 3_000_000_000;
    let window = 1000;
    let mut all_due = BTreeSet::new();
    for round in 0..5i64 {
        let base = now + round * 10_000;
        let mut due = BTreeSet::new();
        for n in 0..20 {
            let id = format!("r{round}-due{n:02}-{}", uuid::Uuid::new_v4());
            a.create_call(ringing_call(&id, base + n % 7))
                .await
                .expect("due call");
            due.insert(id);
        }
        let (on_a, on_b) = tokio::join!(
            a.expire_ringing_before(base + window, base + window, 50),
            b.expire_ringing_before(base + window, base + window, 50),
        );
        let on_a: BTreeSet<String> = on_a
            .expect("sweep on a")
            .into_iter()
            .map(|(c, _)| c.id)
            .collect();
        let on_b: BTreeSet<String> = on_b
            .expect("sweep on b")
            .into_iter()
            .map(|(c, _)| c.id)
            .collect();
        assert!(
            on_a.is_disjoint(&on_b),
            "round {round}: both took {:?}",
            on_a.intersection(&on_b).collect::<Vec<_>>()
        );
        let union: BTreeSet<String> = on_a.union(&on_b).cloned().collect();
        assert_eq!(
            union,
            due,
            "round {round}: a took {}, b took {}",
            on_a.len(),
            on_b.len()
        );
        all_due.extend(due);
    }
    // Calls not due yet (created after every cutoff above) were left ringing until now.
    for n in 0..3 {
        let id = format!("later{n}-{}", uuid::Uuid::new_v4());
        b.create_call(ringing_call(&id, now + 1_000_000 + n))
            .await
            .expect("later call");
        all_due.insert(id);
    }
    let (rest_a, rest_b) = tokio::join!(
        a.expire_ringing_before(now + 1_000_000, now + 2_000_000, 50),
        b.expire_ringing_before(now + 1_000_000, now + 2_000_000, 50),
    );
    let rest = rest_a.expect("sweep on a").len() + rest_b.expect("sweep on b").len();
    assert_eq!(rest, 1, "only the first later call is due at that cutoff");
    let last = a
        .expire_ringing_before(i64::MAX, now + 2_000_000, 50)
        .await
        .expect("last sweep");
    assert_eq!(last.len(), 2, "{last:?}");
    let ended = pg.psql_in(
        "sweep",
        "SELECT count(*), count(DISTINCT call_id) FROM call_events WHERE kind = 'ended'",
    );
    assert_eq!(ended, format!("{0}|{0}", all_due.len()), "one end per call");
    let missed = pg.psql_in(
        "sweep",
        "SELECT count(*) FROM calls WHERE status = 'missed' AND end_reason = 'timeout'",
    );
    assert_eq!(missed, all_due.len().to_string());

    // Another session holds one due call's row: a sweep passes it by without waiting.
    let held = format!("held-{}", uuid::Uuid::new_v4());
    let free = format!("free-{}", uuid::Uuid::new_v4());
    for id in [&held, &free] {
        a.create_call(ringing_call(id, now)).await.expect("call");
    }
    let mut holder = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-d", "sweep"])
        .args(["-p", &pg.port.to_string()])
        .args([
            "-c",
            &format!(
                "BEGIN; SELECT id FROM calls WHERE id = '{held}' FOR UPDATE; \
                 SELECT pg_sleep(30); COMMIT;"
            ),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql runs");
    eventually(
        "the other session holding the call's row",
        Duration::from_secs(10),
        || {
            let sleeping = pg.psql_in(
                "sweep",
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' \
                 AND wait_event = 'PgSleep'",
            );
            async move { (sleeping == "1").then_some(()) }
        },
    )
    .await;
    let started = signalbox::clock::monotonic();
    let swept = b
        .expire_ringing_before(now, now + 200_000, 50)
        .await
        .expect("sweep beside a held row");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the sweep waited for the held row: {:?}",
        started.elapsed()
    );
    assert_eq!(
        swept.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(),
        [free.as_str()]
    );
    assert_eq!(
        a.call(&held).await.expect("held").status,
        CallStatus::Ringing
    );
    pg.psql_in(
        "sweep",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let later = a
        .expire_ringing_before(now, now + 300_000, 50)
        .await
        .expect("sweep once the row is free");
    assert_eq!(
        later.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(),
        [held.as_str()]
    );
}
