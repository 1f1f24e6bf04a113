//! SQLite behind the `EventStore` port. The primary key on the idempotency key is the dedup;
//! the `outbox` table (filled by a trigger on insert) is the local runner's outbox, as the
//! DynamoDB stream is in AWS.
//!
//! Writes are durable before they are answered (`synchronous = FULL`: the commit is fsynced), and
//! they are group-committed: one writer thread owns the write connection and runs every write
//! queued while the previous commit was in flight in one transaction. Under load many webhooks
//! share one fsync; alone, a webhook waits for just its own. Reads use their own connection (WAL
//! lets them run beside the writer).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::event::{EventKind, IdempotencyKey, Proof, Provider, RefundEvent, Status};
use common::held::{HeldDelivery, HeldEntry, HeldStatus};
use common::store::{
    Advance, Checkpoint, EventStore, HistoryEntry, Hold, ObjectRecord, Page, Put, Record, StoreError, Told,
    page_of_held,
};
use common::timestamp::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

mod schema;
mod writer;
mod writes;

use crate::outbox::{Handover, Pending};
use schema::{CONNECTION, migrate};
use writer::Writer;
use writes::Write;

#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: Arc<Mutex<Connection>>,
    handover: Handover,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connect = || {
            let c = Connection::open(path)?;
            c.execute_batch(CONNECTION)?;
            Ok::<_, rusqlite::Error>(c)
        };
        let mut writer = connect().map_err(unavailable)?;
        migrate(&mut writer).map_err(unavailable)?;
        let (reader, checkpointer) = (connect().map_err(unavailable)?, connect().map_err(unavailable)?);
        let handover = Handover::default();
        let writer = Writer::start(writer, checkpointer, handover.clone())?;
        Ok(SqliteStore { writer, reader: Arc::new(Mutex::new(reader)), handover })
    }

    /// Runs `f` on the read connection off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(unavailable)?
    }

    /// Writes the write-ahead log into the database and empties it: after `erase`, so the log
    /// keeps no earlier copy of what was erased.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).map_err(unavailable).and_then(
                |busy| match busy {
                    0 => Ok(()),
                    _ => Err(StoreError::Unavailable("the write-ahead log is in use; run erase again".into())),
                },
            )
        })
        .await
    }

    /// Stored events not yet fanned out, oldest first (the outbox), and the highest `seq` stored
    /// when they were read: everything up to it is in the answer, unless the `limit` cut it off
    /// or it was already fanned out.
    pub async fn pending(&self, limit: usize) -> Result<(Vec<Pending>, i64), StoreError> {
        self.read(move |c| {
            // One snapshot for both reads.
            let tx = c.unchecked_transaction().map_err(unavailable)?;
            let newest: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0)).map_err(unavailable)?;
            let mut stmt = tx
                .prepare_cached(
                    "SELECT events.seq, event_json FROM outbox JOIN events ON events.seq = outbox.seq \
                     ORDER BY outbox.seq LIMIT ?1",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let pending = rows
                .into_iter()
                .map(|(seq, json)| {
                    let event = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Ok(Pending { seq, event })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((pending, newest))
        })
        .await
    }

    /// Where the events this store commits are handed to the outbox, in commit order.
    pub fn handover(&self) -> &Handover {
        &self.handover
    }

    /// Takes events (by `Pending::seq`) out of the outbox, all in one write.
    pub async fn mark_notified(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.writer.ask(|reply| Write::MarkNotified { seqs, reply }).await
    }

    /// Held deliveries the internal audience has not been told of yet, oldest first.
    pub async fn untold_held(&self, limit: usize) -> Result<Vec<HeldDelivery>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {HELD_COLUMNS} FROM held WHERE told = 0 ORDER BY received_at LIMIT ?1"
                ))
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![limit as i64], held_row).map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    /// Records that the internal audience was told of these held deliveries.
    pub async fn mark_held_told(&self, held: Vec<(Provider, String)>) -> Result<(), StoreError> {
        self.writer.ask(|reply| Write::MarkHeldTold { held, reply }).await
    }

    /// Number of stored events, for tests and the start-up line.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(unavailable)
        })
        .await
    }
}

const HELD_COLUMNS: &str = "provider, held_id, received_at, content_type, body, reason, query, headers, status, resolution, proof, delivery_id";

/// A `held` row, selected as [`HELD_COLUMNS`].
fn held_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<HeldDelivery, StoreError>> {
    let provider: String = r.get(0)?;
    let headers: String = r.get(7)?;
    let status: String = r.get(8)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("held row: {what}"));
    Ok((|| {
        let headers: Vec<(String, String)> = serde_json::from_str(&headers).map_err(|_| corrupt("headers"))?;
        Ok(HeldDelivery {
            provider: provider.parse().map_err(|_| corrupt("provider"))?,
            held_id: r.get(1).map_err(unavailable)?,
            received_at: r.get::<_, String>(2).map_err(unavailable)?.parse().map_err(|_| corrupt("received_at"))?,
            content_type: r.get(3).map_err(unavailable)?,
            body: r.get(4).map_err(unavailable)?,
            reason: r.get(5).map_err(unavailable)?,
            query: r.get(6).map_err(unavailable)?,
            headers,
            status: HeldStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            resolution: r.get(9).map_err(unavailable)?,
            // NULL in rows held before the proof was kept: the provider's weakest.
            proof: match r.get::<_, Option<String>>(10).map_err(unavailable)? {
                Some(proof) => Proof::parse(&proof).ok_or_else(|| corrupt("proof"))?,
                None => provider.parse::<Provider>().map_err(|_| corrupt("provider"))?.proof(),
            },
            delivery_id: r.get(11).map_err(unavailable)?,
        })
    })())
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn put_if_absent(&self, event: &RefundEvent) -> Result<Put, StoreError> {
        let json = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.writer.ask(|reply| Write::Event { event: event.clone(), json, reply }).await
    }

    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError> {
        self.writer.ask(|reply| Write::Advance { event: event.clone(), reply }).await
    }

    /// The local runner's outbox is its told marker: an event leaves the `outbox` table once every
    /// audience was told (`advance` then answers `AlreadyTold`). It keeps no marker per audience:
    /// its notifier appends to a local file, and a retry after a failure part-way re-tells the
    /// audiences before it (docs/reliability.md).
    async fn mark_told(&self, _event: &RefundEvent, _told: Told, _all: bool) -> Result<(), StoreError> {
        Ok(())
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT event_json FROM events \
                     WHERE idempotency_key >= ?1 AND idempotency_key < ?2 AND kind = ?3 AND object_id = ?4 \
                     ORDER BY seq",
                )
                .map_err(unavailable)?;
            // One range of the unique index holds the object's events.
            let from = IdempotencyKey::prefix(provider, &id);
            // The prefix ends in `#`; `$` is the next character, so [from, until) is the prefix.
            let until = format!("{}$", &from[..from.len() - 1]);
            let events = stmt
                .query_map(params![from, until, kind.as_str(), id], |r| r.get::<_, String>(0))
                .map_err(unavailable)?
                .map(|row| {
                    let json = row.map_err(unavailable)?;
                    let event: RefundEvent =
                        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Ok(HistoryEntry::of(&event))
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

    async fn object_event(
        &self,
        provider: Provider,
        kind: EventKind,
        object_id: &str,
        event_id: &str,
    ) -> Result<Option<RefundEvent>, StoreError> {
        let id = event_id.to_owned();
        let event: Option<RefundEvent> = self
            .read(move |c| {
                let json: Option<String> = c
                    .query_row("SELECT event_json FROM events WHERE event_id = ?1", params![id], |r| r.get(0))
                    .optional()
                    .map_err(unavailable)?;
                json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
            })
            .await?;
        Ok(event.filter(|e: &RefundEvent| e.provider == provider && e.kind == kind && e.object_id == object_id))
    }

    async fn merchant_events(
        &self,
        merchant_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RefundEvent>, StoreError> {
        // Stored times are all one width, so comparing their text compares the times.
        let (merchant, since) = (merchant_id.to_owned(), since.map(|t| t.to_string()).unwrap_or_default());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT event_json FROM events WHERE json_extract(event_json, '$.merchant_id') = ?1 \
                     AND received_at >= ?2 ORDER BY received_at, seq",
                )
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![merchant, since], |r| r.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|r| serde_json::from_str(&r.map_err(unavailable)?).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect()
        })
        .await
    }

    /// The outbox table is exactly the events not yet told, all on one page.
    async fn untold(&self, _after: Option<String>) -> Result<Page<RefundEvent>, StoreError> {
        let items = self.pending(usize::MAX >> 1).await?.0.into_iter().map(|p| p.event).collect();
        Ok(Page { items, next: None })
    }

    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError> {
        let headers = serde_json::to_string(&held.headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.writer.ask(|reply| Write::Hold { held: held.clone(), headers, reply }).await
    }

    async fn held(
        &self,
        provider: Option<Provider>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<HeldEntry>, StoreError> {
        let held = self
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT provider, held_id, received_at, reason, status, resolution FROM held")
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, Option<String>>(5)?,
                        ))
                    })
                    .map_err(unavailable)?;
                let corrupt = |what: &str| StoreError::Corrupt(format!("held row: {what}"));
                rows.map(|r| {
                    let (provider, held_id, received_at, reason, status, resolution) = r.map_err(unavailable)?;
                    Ok(HeldEntry {
                        provider: provider.parse().map_err(|_| corrupt("provider"))?,
                        held_id,
                        received_at: received_at.parse().map_err(|_| corrupt("received_at"))?,
                        reason,
                        status: HeldStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
                        resolution,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        Ok(page_of_held(held, provider, after.as_deref(), limit))
    }

    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError> {
        let id = held_id.to_owned();
        self.read(move |c| {
            c.query_row(&format!("SELECT {HELD_COLUMNS} FROM held WHERE held_id = ?1"), params![id], held_row)
                .optional()
                .map_err(unavailable)?
                .transpose()
        })
        .await
    }

    async fn resolve_held(&self, held: &HeldDelivery, resolution: &str) -> Result<(), StoreError> {
        let (provider, held_id, resolution) = (held.provider, held.held_id.clone(), resolution.to_owned());
        self.writer.ask(|reply| Write::ResolveHeld { provider, held_id, resolution, reply }).await
    }

    async fn checkpoint(&self, provider: Provider) -> Result<Option<Checkpoint>, StoreError> {
        self.read(move |c| {
            let json: Option<String> = c
                .query_row("SELECT checkpoint FROM checkpoints WHERE provider = ?1", params![provider.as_str()], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(unavailable)?;
            json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}"))))
                .transpose()
        })
        .await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let json = serde_json::to_string(checkpoint).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let provider = checkpoint.provider;
        self.writer.ask(|reply| Write::SaveCheckpoint { provider, json, reply }).await
    }

    async fn existing(&self, events: &[RefundEvent]) -> Result<HashSet<IdempotencyKey>, StoreError> {
        let keys: Vec<IdempotencyKey> = events.iter().map(|e| e.idempotency_key.clone()).collect();
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM events WHERE idempotency_key = ?1").map_err(unavailable)?;
            let mut found = HashSet::new();
            for key in keys {
                if stmt.exists(params![key.as_str()]).map_err(unavailable)? {
                    found.insert(key);
                }
            }
            Ok(found)
        })
        .await
    }

    /// Events by `seq`, then held deliveries by key; the cursor says which and where.
    async fn records(&self, after: Option<String>) -> Result<Page<Record>, StoreError> {
        const PAGE: i64 = 100;
        let cursor = match after.as_deref() {
            None => Cursor::Events(0),
            Some(c) => Cursor::parse(c).ok_or_else(|| StoreError::Corrupt(format!("not a records cursor: {c}")))?,
        };
        self.read(move |c| match cursor {
            Cursor::Events(after) => {
                let mut stmt = c
                    .prepare_cached("SELECT seq, event_json FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                    .map_err(unavailable)?;
                let rows: Vec<(i64, String)> = stmt
                    .query_map(params![after, PAGE], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(Iterator::collect)
                    .map_err(unavailable)?;
                let next = match rows.last() {
                    Some((seq, _)) if rows.len() as i64 == PAGE => Cursor::Events(*seq),
                    _ => Cursor::Held(String::new(), String::new()),
                };
                let items = rows
                    .into_iter()
                    .map(|(_, json)| {
                        serde_json::from_str(&json)
                            .map(|e| Record::Event(Box::new(e)))
                            .map_err(|e| StoreError::Corrupt(e.to_string()))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Page { items, next: Some(next.to_string()) })
            }
            Cursor::Held(provider, held_id) => {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {HELD_COLUMNS} FROM held WHERE (provider, held_id) > (?1, ?2) \
                         ORDER BY provider, held_id LIMIT ?3"
                    ))
                    .map_err(unavailable)?;
                let held: Vec<HeldDelivery> = stmt
                    .query_map(params![provider, held_id, PAGE], held_row)
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .map_err(unavailable)?
                    .into_iter()
                    .collect::<Result<_, _>>()?;
                let next = (held.len() as i64 == PAGE)
                    .then(|| held.last().map(|h| Cursor::Held(h.provider.to_string(), h.held_id.clone()).to_string()))
                    .flatten();
                Ok(Page { items: held.into_iter().map(|h| Record::Held(Box::new(h))).collect(), next })
            }
        })
        .await
    }

    async fn rewrite_event(&self, event: &RefundEvent) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = event.idempotency_key.as_str().to_owned();
        self.writer.ask(|reply| Write::RewriteEvent { key, json, reply }).await
    }

    async fn rewrite_held(&self, held: &HeldDelivery) -> Result<(), StoreError> {
        let (provider, held_id, body, query) =
            (held.provider, held.held_id.clone(), held.body.clone(), held.query.clone());
        self.writer.ask(|reply| Write::RewriteHeld { provider, held_id, body, query, reply }).await
    }
}

/// Where [`SqliteStore::records`] goes on: after an event's `seq`, or after a held delivery's key.
enum Cursor {
    Events(i64),
    Held(String, String),
}

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        if let Some(seq) = text.strip_prefix("events:") {
            return seq.parse().ok().map(Cursor::Events);
        }
        let (provider, held_id) = text.strip_prefix("held:")?.split_once('/')?;
        Some(Cursor::Held(provider.to_owned(), held_id.to_owned()))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cursor::Events(seq) => write!(f, "events:{seq}"),
            Cursor::Held(provider, held_id) => write!(f, "held:{provider}/{held_id}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outbox::Taken;

    /// A Rainforest refund event with a merchant and a payor's email, so every audience has
    /// something to be told.
    pub(crate) fn event(object_id: &str, status: Status) -> RefundEvent {
        let event_type = format!("refund.{status}");
        let key = IdempotencyKey::new(Provider::Rainforest, object_id, &event_type, status);
        serde_json::from_value(serde_json::json!({
            "event_id": key.event_id(),
            "idempotency_key": key,
            "provider": "rainforest",
            "kind": "refund",
            "event_type": event_type,
            "status": status.as_str(),
            "object_id": object_id,
            "merchant_id": "mid_1",
            "payor": { "email": "payor@example.com" },
            "received_at": "2026-11-25T00:00:00Z",
            "proof": "signature", // Rainforest signs its webhooks
            "raw_payload": "{}",
        }))
        .unwrap()
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("events.sqlite3")).unwrap();
        (dir, store)
    }

    /// Rows another connection sees: what a commit has put in the file.
    fn rows_on_disk(dir: &tempfile::TempDir) -> i64 {
        let c = Connection::open(dir.path().join("events.sqlite3")).unwrap();
        c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deliveries_share_commits_and_store_each_event_once() {
        let (dir, store) = open();
        let events: Vec<RefundEvent> = (0..300).map(|i| event(&format!("rfd_{i}"), Status::Succeeded)).collect();
        // Every event four times, all at once: the writer batches them into shared commits.
        let puts = (0..4).flat_map(|_| events.iter()).map(|e| {
            let (store, e) = (store.clone(), e.clone());
            tokio::spawn(async move { store.put_if_absent(&e).await })
        });
        let mut stored = 0;
        let mut duplicate = 0;
        for put in futures::future::join_all(puts).await {
            match put.unwrap().unwrap() {
                Put::Stored => stored += 1,
                Put::Duplicate(_) => duplicate += 1,
            }
        }
        assert_eq!((stored, duplicate), (300, 900));
        // Every answer came after its commit: a second connection sees all of them.
        assert_eq!(rows_on_disk(&dir), 300);
        assert_eq!(store.count().await.unwrap(), 300);
    }

    /// Stored events are handed over in commit order, duplicates never.
    #[tokio::test]
    async fn stored_events_are_handed_over_in_commit_order() {
        let (_dir, store) = open();
        let events: Vec<RefundEvent> = (0..50).map(|i| event(&format!("rfd_{i}"), Status::Created)).collect();
        let puts = events.iter().chain(&events).map(|e| {
            let (store, e) = (store.clone(), e.clone());
            tokio::spawn(async move { store.put_if_absent(&e).await })
        });
        futures::future::join_all(puts).await;
        let Taken::Events(fresh) = store.handover().take(1000) else { panic!("no overflow expected") };
        assert_eq!(fresh.len(), 50, "each event once");
        assert!(fresh.windows(2).all(|w| w[0].seq < w[1].seq), "commit order");
        let (table, _) = store.pending(1000).await.unwrap();
        assert_eq!(fresh, table, "the same events the table holds");
        assert_eq!(store.handover().take(1000), Taken::Events(vec![]));
    }

    #[tokio::test]
    async fn a_failing_write_does_not_take_its_batch_with_it() {
        let (dir, store) = open();
        let bad = store.writer.ask(|reply| Write::Sql { sql: "INSERT INTO no_such_table VALUES (1)", reply });
        let created = event("rfd_1", Status::Created);
        let good = store.put_if_absent(&created);
        let (bad, good) = tokio::join!(bad, good);
        assert!(matches!(bad, Err(StoreError::Unavailable(_))), "{bad:?}");
        assert_eq!(good.unwrap(), Put::Stored);
        assert_eq!(rows_on_disk(&dir), 1);
    }

    #[tokio::test]
    async fn the_outbox_empties_once_events_are_marked() {
        let (_dir, store) = open();
        let events: Vec<RefundEvent> = (0..5).map(|i| event(&format!("rfd_{i}"), Status::Created)).collect();
        for e in &events {
            store.put_if_absent(e).await.unwrap();
        }
        let (pending, _) = store.pending(10).await.unwrap();
        assert_eq!(
            pending.iter().map(|p| &p.event).collect::<Vec<_>>(),
            events.iter().collect::<Vec<_>>(),
            "oldest first"
        );
        store.mark_notified(pending[..3].iter().map(|p| p.seq).collect()).await.unwrap();
        let left: Vec<RefundEvent> = store.pending(10).await.unwrap().0.into_iter().map(|p| p.event).collect();
        assert_eq!(left, events[3..]);
    }

    /// A data directory in the older layout (its outbox an `events.notified` column): its
    /// unnotified events are still pending.
    #[tokio::test]
    async fn an_older_data_directory_keeps_its_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite3");
        let (told, untold) = (event("rfd_1", Status::Created), event("rfd_2", Status::Created));
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT NOT NULL UNIQUE, \
                 event_id TEXT NOT NULL, provider TEXT NOT NULL, kind TEXT NOT NULL, object_id TEXT NOT NULL, \
                 event_type TEXT NOT NULL, status TEXT NOT NULL, received_at TEXT NOT NULL, \
                 event_json TEXT NOT NULL, notified INTEGER NOT NULL DEFAULT 0); \
                 CREATE INDEX events_by_object ON events (provider, kind, object_id); \
                 CREATE INDEX events_pending ON events (notified, seq); \
                 CREATE TABLE aggregates (provider TEXT NOT NULL, kind TEXT NOT NULL, object_id TEXT NOT NULL, \
                 status TEXT NOT NULL, last_event_id TEXT NOT NULL, updated_at TEXT NOT NULL, \
                 PRIMARY KEY (provider, kind, object_id)); \
                 INSERT INTO aggregates VALUES ('rainforest', 'refund', 'rfd_1', 'created', 'evt_1', '2026-11-25T00:00:00Z');",
            )
            .unwrap();
            for (e, notified) in [(&told, 1), (&untold, 0)] {
                old.execute(
                    "INSERT INTO events (idempotency_key, event_id, provider, kind, object_id, event_type, status, \
                     received_at, event_json, notified) VALUES (?1, ?2, 'rainforest', 'refund', ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        e.idempotency_key.as_str(),
                        e.event_id.as_str(),
                        e.object_id,
                        e.event_type,
                        e.status.as_str(),
                        e.received_at.to_string(),
                        serde_json::to_string(e).unwrap(),
                        notified
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        let pending: Vec<RefundEvent> = store.pending(10).await.unwrap().0.into_iter().map(|p| p.event).collect();
        assert_eq!(pending, std::slice::from_ref(&untold));
        assert!(matches!(store.put_if_absent(&untold).await.unwrap(), Put::Duplicate(_)));
        assert_eq!(store.put_if_absent(&event("rfd_3", Status::Created)).await.unwrap(), Put::Stored);
        assert_eq!(store.pending(10).await.unwrap().0.len(), 2);
        assert_eq!(
            store.object(Provider::Rainforest, EventKind::Refund, "rfd_1").await.unwrap().unwrap().events.len(),
            1
        );
    }

    /// Rows held before the proof was kept read with the provider's weakest; rows held after
    /// keep theirs and the delivery id.
    #[tokio::test]
    async fn an_older_held_table_gains_the_proof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite3");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE held (provider TEXT NOT NULL, held_id TEXT NOT NULL, received_at TEXT NOT NULL, \
                 content_type TEXT, body BLOB NOT NULL, reason TEXT NOT NULL, query TEXT, headers TEXT NOT NULL, \
                 status TEXT NOT NULL, resolution TEXT, told INTEGER NOT NULL DEFAULT 0, \
                 PRIMARY KEY (provider, held_id)) WITHOUT ROWID; \
                 INSERT INTO held VALUES ('conscent', 'hld_old', '2026-11-25T00:00:00Z', NULL, x'7b7d', \
                 'malformed: body', NULL, '[]', 'held', NULL, 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let old = store.held_one("hld_old").await.unwrap().unwrap();
        assert_eq!((old.proof, old.delivery_id), (Proof::Token, None));
        let verified = common::verify::Verified::signed(Some("msg_1".into()));
        let reason = common::held::HoldReason::bare(common::held::HoldCode::Malformed);
        let at = Timestamp::now();
        let new = HeldDelivery::new(Provider::Rainforest, at, &http::HeaderMap::new(), None, b"[", &verified, &reason);
        store.hold(&new).await.unwrap();
        let back = store.held_one(&new.held_id).await.unwrap().unwrap();
        assert_eq!((back.proof, back.delivery_id.as_deref()), (Proof::Signature, Some("msg_1")));
        drop(store);
        SqliteStore::open(&path).expect("migrating twice is a no-op");
    }

    /// Within one second too: `since` is exact and the earlier time comes first.
    #[tokio::test]
    async fn a_merchants_events_are_in_time_order_within_a_second() {
        let (_dir, store) = open();
        let at = |id: &str, received_at: &str| RefundEvent {
            received_at: received_at.parse().unwrap(),
            ..event(id, Status::Created)
        };
        // Stored latest first, so the order they were written in cannot pass for time order.
        for e in [
            at("rfd_half", "2026-11-25T00:00:00.5Z"),
            at("rfd_whole", "2026-11-25T00:00:00Z"),
            at("rfd_before", "2026-11-24T23:59:59.9Z"),
        ] {
            assert_eq!(store.put_if_absent(&e).await.unwrap(), Put::Stored);
        }
        let since = "2026-11-25T00:00:00Z".parse().ok();
        let listed: Vec<String> =
            store.merchant_events("mid_1", since).await.unwrap().into_iter().map(|e| e.object_id).collect();
        assert_eq!(listed, ["rfd_whole", "rfd_half"]);
    }

    /// Ids that share a beginning, or differ only by an escaped character, keep their own
    /// histories when looked up through the key's range.
    #[tokio::test]
    async fn an_object_history_holds_only_its_own_events() {
        let (_dir, store) = open();
        for id in ["a", "ab", "a#b", "a%23b", "a$"] {
            for status in [Status::Created, Status::Succeeded] {
                store.put_if_absent(&event(id, status)).await.unwrap();
            }
        }
        for id in ["a", "ab", "a#b", "a%23b", "a$"] {
            let record = store.object(Provider::Rainforest, EventKind::Refund, id).await.unwrap().unwrap();
            let statuses: Vec<Status> = record.events.iter().map(|e| e.status).collect();
            assert_eq!(statuses, [Status::Created, Status::Succeeded], "{id}");
        }
        assert_eq!(store.object(Provider::Rainforest, EventKind::Refund, "b").await.unwrap(), None);
        assert_eq!(store.object(Provider::Memberful, EventKind::Refund, "a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_object_only_moves_forward() {
        let (_dir, store) = open();
        let (created, succeeded) = (event("rfd_1", Status::Created), event("rfd_1", Status::Succeeded));
        for e in [&created, &succeeded] {
            store.put_if_absent(e).await.unwrap();
        }
        assert_eq!(store.advance(&succeeded).await.unwrap(), Advance::Advanced(Told::NONE));
        assert_eq!(store.advance(&created).await.unwrap(), Advance::Stale);
        assert_eq!(
            store.advance(&succeeded).await.unwrap(),
            Advance::Advanced(Told::NONE),
            "a retry finishes its fan-out"
        );
        // Out of the outbox, it was told in full: told again, it publishes nothing.
        let seqs = store.pending(10).await.unwrap().0.into_iter().map(|p| p.seq).collect();
        store.mark_notified(seqs).await.unwrap();
        assert_eq!(store.advance(&succeeded).await.unwrap(), Advance::AlreadyTold);
    }
}
