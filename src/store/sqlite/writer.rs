//! The group-commit writer: one thread owns the write connection and runs every write queued
//! while the previous commit was in flight in one transaction, then answers each caller once that
//! commit is known. Beside it, a thread checkpoints the WAL so that no commit pays for it.

use std::sync::Arc;

use common::store::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::unavailable;
use super::writes::{Outcome, Reply, Write};
use crate::outbox::Handover;

/// The writer never checkpoints (copying the WAL back into the database and fsyncing it would
/// stall every webhook in that commit); a thread of its own does, this often.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Most writes one transaction takes: bounds the latency of the last write in a burst.
const MAX_BATCH: usize = 512;

/// Writes waiting for the writer. Past this, callers wait (backpressure) instead of queueing
/// without bound.
const QUEUE: usize = 8192;

/// The handle every write goes through; the writer thread ends with the last handle.
#[derive(Clone)]
pub(super) struct Writer {
    writes: mpsc::Sender<Write>,
    /// The checkpoint thread runs while any handle holds this.
    _alive: Arc<()>,
}

impl Writer {
    /// Starts the writer on `writer` and the checkpoints on `checkpointer`; each event it
    /// stores goes to `handover` once committed.
    pub(super) fn start(writer: Connection, checkpointer: Connection, handover: Handover) -> Result<Self, StoreError> {
        writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(unavailable)?;
        let (writes, queue) = mpsc::channel(QUEUE);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map(drop).map_err(unavailable)
        };
        spawn("sqlite-writer", Box::new(move || write_loop(writer, queue, handover)))?;
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        spawn("sqlite-checkpoint", Box::new(move || checkpoint_loop(checkpointer, watch)))?;
        Ok(Writer { writes, _alive: alive })
    }

    /// Queues the write that `write` makes with its reply, and answers once the transaction it
    /// ran in is committed (or has failed).
    pub(super) async fn ask<T>(&self, write: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        let stopped = || unavailable("the store's writer has stopped");
        let (reply, answer) = oneshot::channel();
        self.writes.send(write(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer thread: takes whatever is queued (up to `MAX_BATCH`), runs it in one transaction,
/// commits, then answers. Ends when every `SqliteStore` handle is gone.
fn write_loop(mut conn: Connection, mut queue: mpsc::Receiver<Write>, handover: Handover) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
        let outcomes: Vec<Outcome>;
        let committed = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => {
                outcomes = batch.drain(..).map(|write| write.run(Ok(&tx))).collect();
                // Some errors (a full disk, an I/O error) roll the whole transaction back; then
                // nothing in the batch was stored and every caller must hear so.
                if tx.is_autocommit() {
                    Err(unavailable("the transaction was rolled back"))
                } else {
                    tx.commit().map_err(unavailable)
                }
            }
            Err(e) => {
                let e = unavailable(e);
                outcomes = batch.drain(..).map(|write| write.run(Err(e.clone()))).collect();
                Err(e)
            }
        };
        for outcome in outcomes {
            outcome.answer(committed.clone(), &handover);
        }
    }
}

/// Copies committed WAL pages back into the database beside the writer (`PASSIVE` never blocks
/// it), so the WAL stays short without a commit paying for it. Ends with the last store handle.
fn checkpoint_loop(conn: Connection, alive: std::sync::Weak<()>) {
    while alive.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
        }
    }
}
