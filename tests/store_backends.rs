//! The store through the real server on both backends: every scenario here runs once on SQLite
//! (`data_dir`) and once on a PostgreSQL instance of its own (`--database-url`), and must give
//! the same answers: the REST call lifecycle and history, rooms, accounts and login, analytics,
//! and the webhook outbox. On PostgreSQL also: many concurrent accepts and rejects of one
//! ringing call through two servers sharing the database have exactly one winner, and with
//! PostgreSQL stopped mid-run REST answers 503 with a JSON error, writes nothing, and works
//! again once it is back.

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
    let login = |password: &'static str| {
        let anon = s.anonymous();
        async move {
            anon.post(
                "/api/auth/login",
                json!({"username": "carol", "password": password}),
            )
            .await
        }
    };
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
    let admin = s.admin();
    let list = eventually("both deliveries delivered", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move {
            let body = admin
                .get("/api/admin/webhooks/deliveries")
                .await
                .expect(200);
            let d = body["deliveries"].as_array().cloned().unwrap_or_default();
            (d.len() == 2 && d.iter().all(|x| x["status"] == "delivered")).then_some(d)
        }
    })
    .await;
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

    // A ringing call: the sweeper's query, the live views, the counts.
    let ringing = uuid::Uuid::new_v4().to_string();
    store
        .create_call(new(&ringing, now + 50))
        .await
        .expect("ringing");
    assert_eq!(
        store.ringing_calls_before(now + 49).await.expect("sweep"),
        Vec::<String>::new()
    );
    assert_eq!(
        store.ringing_calls_before(now + 50).await.expect("sweep"),
        vec![ringing.clone()]
    );
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
