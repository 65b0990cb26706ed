//! Versioned schema migrations, embedded in the binary and applied in order at start-up.
//! `PRAGMA user_version` records how many have run; each runs in its own transaction.

use rusqlite::Connection;

use crate::error::Error;

/// Migration N (1-based) is `MIGRATIONS[N-1]`. Append only: never edit a released entry.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    display_name  TEXT,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE rooms (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    owner_id         TEXT NOT NULL,
    max_participants INTEGER NOT NULL,
    is_private       INTEGER NOT NULL,
    call_id          TEXT,
    created_at       INTEGER NOT NULL
);
CREATE INDEX rooms_owner ON rooms(owner_id);

CREATE TABLE room_members (
    room_id   TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    invited   INTEGER NOT NULL DEFAULT 0,
    peer_id   TEXT UNIQUE,
    joined_at INTEGER,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE calls (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('direct', 'room')),
    call_type   TEXT NOT NULL CHECK (call_type IN ('audio', 'video')),
    caller_id   TEXT NOT NULL,
    callee_id   TEXT,
    room_id     TEXT,
    room_name   TEXT,
    status      TEXT NOT NULL
                CHECK (status IN ('ringing', 'active', 'ended', 'rejected', 'missed', 'cancelled')),
    end_reason  TEXT,
    created_at  INTEGER NOT NULL,
    answered_at INTEGER,
    ended_at    INTEGER
);
CREATE INDEX calls_created ON calls(created_at);
CREATE INDEX calls_status ON calls(status);

CREATE TABLE call_participants (
    call_id   TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    role      TEXT NOT NULL CHECK (role IN ('caller', 'callee', 'member')),
    joined_at INTEGER,
    left_at   INTEGER,
    audio     INTEGER NOT NULL DEFAULT 1,
    video     INTEGER NOT NULL DEFAULT 1,
    screen    INTEGER NOT NULL DEFAULT 0,
    camera    TEXT,
    PRIMARY KEY (call_id, user_id)
);
CREATE INDEX call_participants_user ON call_participants(user_id);

CREATE TABLE call_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    user_id TEXT,
    kind    TEXT NOT NULL,
    data    TEXT
);
CREATE INDEX call_events_call ON call_events(call_id, id);

CREATE TABLE call_reports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id      TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    at           INTEGER NOT NULL,
    rtt_ms       REAL,
    jitter_ms    REAL,
    packet_loss  REAL,
    bitrate_kbps REAL,
    raw          TEXT NOT NULL
);
CREATE INDEX call_reports_call ON call_reports(call_id);

CREATE TABLE relay_usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT NOT NULL,
    username          TEXT NOT NULL,
    transport         TEXT NOT NULL,
    client_addr       TEXT NOT NULL,
    relay_addr        TEXT NOT NULL,
    opened_at         INTEGER NOT NULL,
    closed_at         INTEGER,
    bytes_to_peer     INTEGER NOT NULL DEFAULT 0,
    bytes_from_peer   INTEGER NOT NULL DEFAULT 0,
    packets_to_peer   INTEGER NOT NULL DEFAULT 0,
    packets_from_peer INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX relay_usage_user ON relay_usage(user_id, opened_at);
"#,
    // 2: rooms choose their topology (mesh, SFU, or mesh until enough people join).
    r#"
ALTER TABLE rooms ADD COLUMN mode TEXT NOT NULL DEFAULT 'auto';
"#,
    // 3: what the SFU measured on each participant's tracks (one row per track, updated).
    r#"
CREATE TABLE sfu_tracks (
    call_id           TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    peer_id           TEXT NOT NULL,
    mid               TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    kind              TEXT NOT NULL,
    direction         TEXT NOT NULL,
    bytes             INTEGER NOT NULL,
    packets           INTEGER NOT NULL,
    loss              REAL,
    rtt_ms            REAL,
    nacks             INTEGER NOT NULL,
    keyframe_requests INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (call_id, peer_id, mid)
);
"#,
    // 4: what each SFU subscriber was sent over time (layer per track, estimate, freezes).
    r#"
CREATE TABLE sfu_quality (
    call_id       TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    peer_id       TEXT NOT NULL,
    at            INTEGER NOT NULL,
    estimate_kbps REAL,
    freezes       INTEGER NOT NULL,
    layers        TEXT NOT NULL
);
CREATE INDEX sfu_quality_by_call ON sfu_quality (call_id, peer_id, at);
"#,
    // 5: the webhook outbox: the configured receivers, and one row per event and receiver,
    // written in the transaction of the change that caused the event (see store/webhooks.rs).
    r#"
CREATE TABLE webhook_endpoints (
    url TEXT PRIMARY KEY
);

CREATE TABLE webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    ordering_key    TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_status     INTEGER,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    next_attempt_at INTEGER,
    claimed_until   INTEGER
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (status, url, ordering_key, seq);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
"#,
];

/// Brings the schema up to date. Refuses a database written by a newer signalbox.
pub fn apply(conn: &mut Connection) -> Result<usize, Error> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(Error::Internal(format!(
            "the database has schema version {current} but this signalbox knows only {known}: \
             it was written by a newer release"
        )));
    }
    let mut applied = 0;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_refuses_newer_schema() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(apply(&mut conn).expect("first"), MIGRATIONS.len());
        assert_eq!(apply(&mut conn).expect("second"), 0);
        conn.pragma_update(None, "user_version", 99).expect("bump");
        assert!(apply(&mut conn).is_err());
    }
}
