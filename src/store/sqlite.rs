//! SQLite behind the `EventStore` port. The primary key on the idempotency key is the dedup;
//! `notified` makes the table the local runner's outbox, as the DynamoDB stream is in AWS.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::event::{EventKind, Provider, RefundEvent, Status};
use common::store::{Advance, EventStore, HistoryEntry, ObjectRecord, Put, StoreError, advances};
use rusqlite::{Connection, OptionalExtension, params};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
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
    event_json      TEXT NOT NULL,
    notified        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_object ON events (provider, kind, object_id);
CREATE INDEX IF NOT EXISTS events_pending ON events (notified, seq);
CREATE TABLE IF NOT EXISTS aggregates (
    provider      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    status        TEXT NOT NULL,
    last_event_id TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (provider, kind, object_id)
);
";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(unavailable)?
    }

    /// Stored events not yet fanned out, oldest first (the outbox).
    pub async fn pending(&self, limit: usize) -> Result<Vec<RefundEvent>, StoreError> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT event_json FROM events WHERE notified = 0 ORDER BY seq LIMIT ?1")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![limit as i64], |r| r.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.iter().map(|j| serde_json::from_str(j).map_err(|e| StoreError::Corrupt(e.to_string()))).collect()
        })
        .await
    }

    pub async fn mark_notified(&self, event_id: &str) -> Result<(), StoreError> {
        let id = event_id.to_owned();
        self.with(move |c| {
            c.execute("UPDATE events SET notified = 1 WHERE event_id = ?1", params![id]).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    /// Number of stored events, for tests and the start-up line.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn put_if_absent(&self, event: &RefundEvent) -> Result<Put, StoreError> {
        let e = event.clone();
        let json = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO events (idempotency_key, event_id, provider, kind, object_id, event_type, status, \
                     received_at, event_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        e.idempotency_key,
                        e.event_id,
                        e.provider.as_str(),
                        e.kind.as_str(),
                        e.object_id,
                        e.event_type,
                        e.status.as_str(),
                        e.received_at,
                        json
                    ])
                })
                .map_err(unavailable)?;
            Ok(if inserted == 1 { Put::Stored } else { Put::Duplicate })
        })
        .await
    }

    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError> {
        let e = event.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let current: Option<(String, String)> = tx
                .query_row(
                    "SELECT status, last_event_id FROM aggregates WHERE provider = ?1 AND kind = ?2 AND object_id = ?3",
                    params![e.provider.as_str(), e.kind.as_str(), e.object_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let current = match &current {
                Some((s, id)) => Some((s.parse::<Status>().map_err(StoreError::Corrupt)?, id.as_str())),
                None => None,
            };
            if !advances(current, &e) {
                return Ok(Advance::Stale);
            }
            tx.execute(
                "INSERT INTO aggregates (provider, kind, object_id, status, last_event_id, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (provider, kind, object_id) DO UPDATE SET \
                 status = excluded.status, last_event_id = excluded.last_event_id, updated_at = excluded.updated_at",
                params![
                    e.provider.as_str(),
                    e.kind.as_str(),
                    e.object_id,
                    e.status.as_str(),
                    e.event_id,
                    e.received_at
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Advance::Advanced)
        })
        .await
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT event_id, event_type, status, received_at FROM events \
                     WHERE provider = ?1 AND kind = ?2 AND object_id = ?3 ORDER BY seq",
                )
                .map_err(unavailable)?;
            let events = stmt
                .query_map(params![provider.as_str(), kind.as_str(), id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
                })
                .map_err(unavailable)?
                .map(|row| {
                    let (event_id, event_type, status, received_at) = row.map_err(unavailable)?;
                    Ok(HistoryEntry {
                        event_id,
                        event_type,
                        status: status.parse().map_err(StoreError::Corrupt)?,
                        received_at,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            if events.is_empty() {
                return Ok(None);
            }
            let status = c
                .query_row(
                    "SELECT status FROM aggregates WHERE provider = ?1 AND kind = ?2 AND object_id = ?3",
                    params![provider.as_str(), kind.as_str(), id],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(unavailable)?
                .map(|s| s.parse::<Status>().map_err(StoreError::Corrupt))
                .transpose()?;
            Ok(Some(ObjectRecord { provider, kind, id, status, events }))
        })
        .await
    }
}
