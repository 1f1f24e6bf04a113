//! Every write the local store makes, as the writer thread runs it inside its batch's
//! transaction, and how each one's caller is answered once that commit is known.

use common::event::{Provider, RefundEvent, Status};
use common::held::{HeldDelivery, HeldStatus};
use common::store::{Advance, Hold, Put, StoreError, Told, advances};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::unavailable;
use crate::outbox::{Handover, Pending};

/// Where a write's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write waiting for the writer thread.
pub(super) enum Write {
    /// A new event (`json` is the whole event); a duplicate is answered with what is stored.
    Event {
        event: RefundEvent,
        json: String,
        reply: Reply<Put>,
    },
    /// Moves the object's aggregate to `event` if it advances it.
    Advance {
        event: RefundEvent,
        reply: Reply<Advance>,
    },
    /// A held delivery (`headers` as JSON); held again, it is answered with its status.
    Hold {
        held: HeldDelivery,
        headers: String,
        reply: Reply<Hold>,
    },
    ResolveHeld {
        provider: Provider,
        held_id: String,
        resolution: String,
        reply: Reply<()>,
    },
    /// An event's JSON, by its idempotency key, and a held delivery's body and query: erasure.
    RewriteEvent {
        key: String,
        json: String,
        reply: Reply<()>,
    },
    RewriteHeld {
        provider: Provider,
        held_id: String,
        body: Vec<u8>,
        query: Option<String>,
        reply: Reply<()>,
    },
    SaveCheckpoint {
        provider: Provider,
        json: String,
        reply: Reply<()>,
    },
    /// Takes events (by [`Pending::seq`]) out of the outbox.
    MarkNotified {
        seqs: Vec<i64>,
        reply: Reply<()>,
    },
    /// Records that the internal audience was told of these held deliveries.
    MarkHeldTold {
        held: Vec<(Provider, String)>,
        reply: Reply<()>,
    },
    /// A statement of a test's own (one that fails, say).
    #[cfg(test)]
    Sql {
        sql: &'static str,
        reply: Reply<()>,
    },
}

/// A write's result, kept until its batch's commit is known.
pub(super) enum Outcome {
    /// A stored event's place in the outbox comes with it, for the handover.
    Event(Result<(Put, Option<Box<Pending>>), StoreError>, Reply<Put>),
    Advance(Result<Advance, StoreError>, Reply<Advance>),
    Hold(Result<Hold, StoreError>, Reply<Hold>),
    Done(Result<(), StoreError>, Reply<()>),
}

impl Write {
    /// Runs the write on `conn`, or takes the error that kept its batch from starting.
    pub(super) fn run(self, conn: Result<&Connection, StoreError>) -> Outcome {
        match self {
            Write::Event { event, json, reply } => {
                Outcome::Event(conn.and_then(|c| insert_event(c, event, &json)), reply)
            }
            Write::Advance { event, reply } => Outcome::Advance(conn.and_then(|c| advance(c, &event)), reply),
            Write::Hold { held, headers, reply } => Outcome::Hold(conn.and_then(|c| hold(c, &held, &headers)), reply),
            Write::ResolveHeld { provider, held_id, resolution, reply } => Outcome::Done(
                conn.and_then(|c| {
                    c.execute(
                        "UPDATE held SET status = 'resolved', resolution = ?3 WHERE provider = ?1 AND held_id = ?2",
                        params![provider.as_str(), held_id, resolution],
                    )
                    .map(drop)
                    .map_err(unavailable)
                }),
                reply,
            ),
            Write::RewriteEvent { key, json, reply } => Outcome::Done(
                conn.and_then(|c| {
                    c.execute("UPDATE events SET event_json = ?2 WHERE idempotency_key = ?1", params![key, json])
                        .map(drop)
                        .map_err(unavailable)
                }),
                reply,
            ),
            Write::RewriteHeld { provider, held_id, body, query, reply } => Outcome::Done(
                conn.and_then(|c| {
                    c.execute(
                        "UPDATE held SET body = ?3, query = ?4 WHERE provider = ?1 AND held_id = ?2",
                        params![provider.as_str(), held_id, body, query],
                    )
                    .map(drop)
                    .map_err(unavailable)
                }),
                reply,
            ),
            Write::SaveCheckpoint { provider, json, reply } => Outcome::Done(
                conn.and_then(|c| {
                    c.execute(
                        "INSERT INTO checkpoints (provider, checkpoint) VALUES (?1, ?2) \
                         ON CONFLICT (provider) DO UPDATE SET checkpoint = excluded.checkpoint",
                        params![provider.as_str(), json],
                    )
                    .map(drop)
                    .map_err(unavailable)
                }),
                reply,
            ),
            Write::MarkNotified { seqs, reply } => Outcome::Done(
                conn.and_then(|c| {
                    let mut stmt = c.prepare_cached("DELETE FROM outbox WHERE seq = ?1").map_err(unavailable)?;
                    seqs.iter().try_for_each(|seq| stmt.execute(params![seq]).map(drop).map_err(unavailable))
                }),
                reply,
            ),
            Write::MarkHeldTold { held, reply } => Outcome::Done(
                conn.and_then(|c| {
                    let mut stmt = c
                        .prepare_cached("UPDATE held SET told = 1 WHERE provider = ?1 AND held_id = ?2")
                        .map_err(unavailable)?;
                    held.iter()
                        .try_for_each(|(p, id)| stmt.execute(params![p.as_str(), id]).map(drop).map_err(unavailable))
                }),
                reply,
            ),
            #[cfg(test)]
            Write::Sql { sql, reply } => {
                Outcome::Done(conn.and_then(|c| c.execute(sql, []).map(drop).map_err(unavailable)), reply)
            }
        }
    }
}

impl Outcome {
    /// Answers the caller with the write's result if its batch committed, else with why not. A
    /// stored event is handed to the outbox here, on the writer thread, so in commit order.
    pub(super) fn answer(self, committed: Result<(), StoreError>, handover: &Handover) {
        // A caller that stopped waiting has nothing to hear.
        fn send<T>(reply: Reply<T>, answer: Result<T, StoreError>) {
            let _ = reply.send(answer);
        }
        match self {
            Outcome::Event(result, reply) => send(
                reply,
                committed.and(result).map(|(put, stored)| {
                    if let Some(pending) = stored {
                        handover.push(*pending);
                    }
                    put
                }),
            ),
            Outcome::Advance(result, reply) => send(reply, committed.and(result)),
            Outcome::Hold(result, reply) => send(reply, committed.and(result)),
            Outcome::Done(result, reply) => send(reply, committed.and(result)),
        }
    }
}

fn insert_event(c: &Connection, e: RefundEvent, json: &str) -> Result<(Put, Option<Box<Pending>>), StoreError> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO events (idempotency_key, event_id, provider, kind, object_id, event_type, \
             status, received_at, event_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                e.idempotency_key.as_str(),
                e.event_id.as_str(),
                e.provider.as_str(),
                e.kind.as_str(),
                e.object_id,
                e.event_type,
                e.status.as_str(),
                e.received_at.to_string(),
                json
            ])
        })
        .map_err(unavailable)?;
    if inserted == 1 {
        // The trigger's insert does not change the statement's rowid.
        return Ok((Put::Stored, Some(Box::new(Pending { seq: c.last_insert_rowid(), event: e }))));
    }
    let json: String = c
        .prepare_cached("SELECT event_json FROM events WHERE idempotency_key = ?1")
        .and_then(|mut s| s.query_row(params![e.idempotency_key.as_str()], |r| r.get(0)))
        .map_err(unavailable)?;
    let stored = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((Put::Duplicate(Box::new(stored)), None))
}

/// The read and the write need no transaction of their own: the writer thread runs one write at
/// a time, inside its batch's transaction.
fn advance(tx: &Connection, e: &RefundEvent) -> Result<Advance, StoreError> {
    let current: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT status, last_event_id FROM aggregates WHERE provider = ?1 AND kind = ?2 AND object_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![e.provider.as_str(), e.kind.as_str(), e.object_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(unavailable)?;
    let current = match &current {
        Some((s, id)) => Some((s.parse::<Status>().map_err(StoreError::Corrupt)?, id.as_str())),
        None => None,
    };
    // An event out of the outbox was told in full: the outbox is the local told marker.
    if current.is_some_and(|(_, last)| last == e.event_id) {
        let pending: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox JOIN events ON events.seq = outbox.seq \
             WHERE events.idempotency_key = ?1)",
            )
            .and_then(|mut s| s.query_row(params![e.idempotency_key.as_str()], |r| r.get(0)))
            .map_err(unavailable)?;
        if !pending {
            return Ok(Advance::AlreadyTold);
        }
    }
    if !advances(current, e) {
        return Ok(Advance::Stale);
    }
    tx.prepare_cached(
        "INSERT INTO aggregates (provider, kind, object_id, status, last_event_id, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (provider, kind, object_id) DO UPDATE SET \
     status = excluded.status, last_event_id = excluded.last_event_id, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.provider.as_str(),
            e.kind.as_str(),
            e.object_id,
            e.status.as_str(),
            e.event_id.as_str(),
            e.received_at.to_string()
        ])
    })
    .map_err(unavailable)?;
    // The local outbox marks an event told as a whole, once every audience was (see `mark_told`).
    Ok(Advance::Advanced(Told::NONE))
}

fn hold(c: &Connection, h: &HeldDelivery, headers: &str) -> Result<Hold, StoreError> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO held (provider, held_id, received_at, content_type, body, reason, query, headers, \
         status, resolution, proof, delivery_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?11) \
         ON CONFLICT (provider, held_id) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                h.provider.as_str(),
                h.held_id,
                h.received_at.to_string(),
                h.content_type,
                h.body,
                h.reason,
                h.query,
                headers,
                h.status.as_str(),
                h.proof.as_str(),
                h.delivery_id
            ])
        })
        .map_err(unavailable)?;
    if inserted == 1 {
        return Ok(Hold::Held);
    }
    let status: String = c
        .query_row(
            "SELECT status FROM held WHERE provider = ?1 AND held_id = ?2",
            params![h.provider.as_str(), h.held_id],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    Ok(Hold::AlreadyHeld(HeldStatus::parse(&status).unwrap_or(HeldStatus::Held)))
}
