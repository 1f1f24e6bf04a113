//! The group-commit writer: one thread owns the write connection and runs every write queued
//! while the previous commit was in flight in one transaction, then answers each caller once that
//! commit is known. Beside it, a thread checkpoints the WAL so that no commit pays for it.

use std::sync::Arc;

use common::store::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::unavailable;

/// The writer never checkpoints (copying the WAL back into the database and fsyncing it would
/// stall every webhook in that commit); a thread of its own does, this often.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Most writes one transaction takes: bounds the latency of the last write in a burst.
const MAX_BATCH: usize = 512;

/// Writes waiting for the writer. Past this, callers wait (backpressure) instead of queueing
/// without bound.
const QUEUE: usize = 8192;

/// A write as the writer thread runs it: the statement runs inside the batch's transaction and
/// hands back what answers the caller once the batch's commit is known.
/// It is handed the connection, or the error that kept the batch from starting.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The handle every write goes through; the writer thread ends with the last handle.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// The checkpoint thread runs while any handle holds this.
    _alive: Arc<()>,
}

impl Writer {
    /// Starts the writer on `writer` and the checkpoints on `checkpointer`.
    pub(super) fn start(writer: Connection, checkpointer: Connection) -> Result<Self, StoreError> {
        writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(unavailable)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map(drop).map_err(unavailable)
        };
        spawn("sqlite-writer", Box::new(move || write_loop(writer, queue)))?;
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        spawn("sqlite-checkpoint", Box::new(move || checkpoint_loop(checkpointer, watch)))?;
        Ok(Writer { jobs, _alive: alive })
    }

    /// Runs `f` in the writer's next transaction and answers once that transaction is committed.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_then(f, |_| {}).await
    }

    /// [`write`](Self::write), and `on_commit` with `f`'s result once it is committed: on the
    /// writer thread, so in commit order.
    pub(super) async fn write_then<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        on_commit: impl FnOnce(&mut T) + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = conn.and_then(f);
            Box::new(move |committed| {
                let mut answer = committed.and(outcome);
                if let Ok(value) = &mut answer {
                    on_commit(value);
                }
                let _ = tx.send(answer);
            })
        });
        self.jobs.send(job).await.map_err(|_| unavailable("the store's writer has stopped"))?;
        rx.await.map_err(|_| unavailable("the store's writer has stopped"))?
    }
}

/// The writer thread: takes whatever is queued (up to `MAX_BATCH`), runs it in one transaction,
/// commits, then answers. Ends when every `SqliteStore` handle is gone.
fn write_loop(mut conn: Connection, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
        let answers: Vec<Answer>;
        let committed = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => {
                answers = batch.drain(..).map(|job| job(Ok(&tx))).collect();
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
                answers = batch.drain(..).map(|job| job(Err(e.clone()))).collect();
                Err(e)
            }
        };
        for answer in answers {
            answer(committed.clone());
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
