//! The local store's tables, and bringing an older data directory up to date.

use rusqlite::{Connection, TransactionBehavior};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL,
    provider        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    object_id       TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    event_json      TEXT NOT NULL
);
-- The outbox: the events not yet fanned out, by `seq`. A table of its own, so marking an event
-- notified deletes a few bytes here instead of rewriting the event's row and an index.
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY);
-- In the inserting statement itself, so an event is never stored without its outbox entry.
CREATE TRIGGER IF NOT EXISTS events_enter_outbox AFTER INSERT ON events
BEGIN
    INSERT INTO outbox (seq) VALUES (new.seq);
END;
CREATE TABLE IF NOT EXISTS aggregates (
    provider      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    status        TEXT NOT NULL,
    last_event_id TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (provider, kind, object_id)
) WITHOUT ROWID; -- one b-tree, so moving an object writes one page, not a row and an index
-- Authenticated deliveries no adapter could read, keyed by provider and body hash. `told` is
-- their outbox: the internal audience hears of each once.
CREATE TABLE IF NOT EXISTS held (
    provider     TEXT NOT NULL,
    held_id      TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    content_type TEXT,
    body         BLOB NOT NULL,
    reason       TEXT NOT NULL,
    query        TEXT,
    headers      TEXT NOT NULL,
    status       TEXT NOT NULL,
    resolution   TEXT,
    told         INTEGER NOT NULL DEFAULT 0,
    proof        TEXT, -- NULL in rows held before it was kept
    delivery_id  TEXT,
    PRIMARY KEY (provider, held_id)
) WITHOUT ROWID;
-- Where each provider's scheduled sweeps have got to (reconcile), as JSON.
CREATE TABLE IF NOT EXISTS checkpoints (
    provider   TEXT PRIMARY KEY,
    checkpoint TEXT NOT NULL
);
";

/// Brings a data directory in the older layout up to date: there the outbox is an `events.notified`
/// column (with two more indexes, for `GET /refunds` and the outbox) and the aggregates a rowid
/// table beside its key's index. Each page a commit touches is a page it writes out, and the unique
/// key alone finds an object's events too, as its range, so those indexes go. Runs after
/// [`SCHEMA`], which made the current tables beside the older aggregates (renamed `aggregates_v1`
/// first, see [`migrate`]).
pub(super) const MIGRATE_V1: &str = "
DELETE FROM outbox;
INSERT INTO outbox (seq) SELECT seq FROM events WHERE notified = 0;
DROP INDEX IF EXISTS events_by_object;
DROP INDEX IF EXISTS events_pending;
DROP INDEX IF EXISTS events_unnotified;
ALTER TABLE events DROP COLUMN notified;
INSERT INTO aggregates SELECT provider, kind, object_id, status, last_event_id, updated_at FROM aggregates_v1;
DROP TABLE aggregates_v1;
";

/// Held rows keep how their delivery was verified, for reprocessing (the older rows get NULL).
pub(super) const MIGRATE_HELD_PROOF: &str = "
ALTER TABLE held ADD COLUMN proof TEXT;
ALTER TABLE held ADD COLUMN delivery_id TEXT;
";

/// Per connection: a 200 means the event is on disk, so every commit is fsynced (in WAL mode
/// `NORMAL` would only survive a crash of this process, not of the machine). `secure_delete`
/// zeroes what a rewrite frees, so erased contact data is not left in free pages.
pub(super) const CONNECTION: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;";

/// Creates the tables, or brings an older data directory up to date, in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let v1: bool =
        tx.query_row("SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'notified'", [], |r| r.get(0))?;
    if v1 {
        // Out of the way, so SCHEMA makes the aggregates table in the current layout.
        tx.execute_batch("ALTER TABLE aggregates RENAME TO aggregates_v1")?;
    }
    tx.execute_batch(SCHEMA)?;
    if v1 {
        tx.execute_batch(MIGRATE_V1)?;
    }
    let held_without_proof: bool =
        tx.query_row("SELECT COUNT(*) = 0 FROM pragma_table_info('held') WHERE name = 'proof'", [], |r| r.get(0))?;
    if held_without_proof {
        tx.execute_batch(MIGRATE_HELD_PROOF)?;
    }
    tx.commit()
}
