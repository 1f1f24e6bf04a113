//! The local runner's outbox. In AWS the DynamoDB stream hands each stored event to the fan-out
//! function; here the store's `outbox` table (filled by a trigger on insert) records what is left
//! to tell, and a worker drains it.
//!
//! Reading every event back from the table would double the store's reads, so while the worker
//! is in step with the store it takes events in memory as they are committed (the
//! [`Handover`]). After a failure, an overflow of the handover, or at start, it reads the table
//! until it is empty, which puts it back in step. The table stays the record: the handover only
//! saves reading it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::event::RefundEvent;
use common::fanout::{Fanout, Outcome};
use tokio::sync::Notify;

use crate::store::SqliteStore;

/// Events the worker reads per pass, and how many objects it fans out at once.
const OUTBOX_BATCH: usize = 512;
const OUTBOX_CONCURRENCY: usize = 64;

/// Most events the handover holds; past this the worker reads the table instead.
const HANDOVER_CAPACITY: usize = 16_384;

pub struct Outbox {
    store: SqliteStore,
    fanout: Fanout,
    /// Wakes the worker when an event is stored.
    wake: Notify,
    /// `Some(seq)` while the worker is in step with the store: every event up to `seq` has been
    /// fanned out from the table, and every later one is in the handover. `None` after a failure
    /// or an overflow, and at start: read the table.
    in_step: Mutex<Option<i64>>,
}

/// A stored event not yet fanned out, with its place in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: i64,
    pub event: RefundEvent,
}

/// Events as the store commits them, in commit order, for the worker to take without reading
/// them back. The store's writer fills it; the worker empties it.
#[derive(Clone, Default)]
pub struct Handover(Arc<Mutex<Fresh>>);

#[derive(Default)]
struct Fresh {
    events: VecDeque<Pending>,
    /// Set when events were dropped for want of room: only the table has them all now.
    overflowed: bool,
}

/// What [`Handover::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Committed events, in commit order (possibly none).
    Events(Vec<Pending>),
    /// Some were dropped: read the table.
    Overflowed,
}

impl Handover {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fresh> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A committed event; dropped (and the overflow noted) when the handover is full.
    pub(crate) fn push(&self, pending: Pending) {
        let mut fresh = self.lock();
        if fresh.events.len() < HANDOVER_CAPACITY {
            fresh.events.push_back(pending);
        } else {
            fresh.overflowed = true;
        }
    }

    /// Up to `limit` events committed since the last take, oldest first; or `Overflowed` if
    /// some were dropped since [`forget`](Self::forget).
    pub fn take(&self, limit: usize) -> Taken {
        let mut fresh = self.lock();
        if fresh.overflowed {
            return Taken::Overflowed;
        }
        let n = fresh.events.len().min(limit);
        Taken::Events(fresh.events.drain(..n).collect())
    }

    /// Empties the handover (the table has what it held) and starts counting room again.
    pub fn forget(&self) {
        *self.lock() = Fresh::default();
    }

    /// As if the handover had run out of room: what it holds is dropped and it says so.
    #[cfg(test)]
    fn overflow(&self) {
        *self.lock() = Fresh { events: VecDeque::new(), overflowed: true };
    }
}

impl Outbox {
    pub fn new(store: SqliteStore, fanout: Fanout) -> Self {
        Outbox { store, fanout, wake: Notify::new(), in_step: Mutex::new(None) }
    }

    /// An event was stored: the worker drains now rather than at its next timeout.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Fans out stored events until the outbox is empty. One object's events are told in the
    /// order they were stored; different objects go concurrently, so one slow notification does
    /// not hold up the rest. An event whose fan-out fails stays pending (and so do the later
    /// events of its object) and is tried again on the next pass: nothing stored goes unnotified.
    pub async fn drain(&self) -> Result<usize, String> {
        let mut done = 0;
        while let Some(batch) = self.next_batch().await? {
            let events = batch.into_iter().map(|Pending { seq, event }| (seq, event)).collect();
            let mut failure = None;
            let mut delivered = Vec::new();
            for (seq, outcome) in self.fanout.deliver_in_object_order(events, OUTBOX_CONCURRENCY).await {
                match outcome {
                    Outcome::Delivered(_) => delivered.push(seq),
                    Outcome::Failed(e) => failure = failure.or(Some(e.to_string())),
                    Outcome::HeldBack => {}
                }
            }
            done += delivered.len();
            let marked = match delivered.is_empty() {
                true => Ok(()),
                false => self.store.mark_notified(delivered).await.map_err(|e| e.to_string()),
            };
            if let Some(e) = failure.or(marked.err()) {
                // What failed is still in the table; read it from there next time.
                *self.in_step.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(e);
            }
        }
        Ok(done)
    }

    /// The next events to fan out, or `None` when there are none: handed over in memory while in
    /// step, else read from the table until it is empty (which puts the worker back in step).
    async fn next_batch(&self) -> Result<Option<Vec<Pending>>, String> {
        let in_step = *self.in_step.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(newest_read) = in_step {
            loop {
                match self.store.handover().take(OUTBOX_BATCH) {
                    Taken::Events(events) if events.is_empty() => return Ok(None),
                    Taken::Events(events) => {
                        // Anything up to `newest_read` was read from the table (none expected).
                        let events: Vec<Pending> = events.into_iter().filter(|p| p.seq > newest_read).collect();
                        if !events.is_empty() {
                            return Ok(Some(events));
                        }
                    }
                    Taken::Overflowed => {
                        // Some events exist only in the table now: out of step until it is read
                        // empty again.
                        *self.in_step.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        break;
                    }
                }
            }
        }
        // From the table. Events committed from here on are kept in memory as well; the table
        // holds every one committed before, so dropping those is safe.
        self.store.handover().forget();
        let (pending, newest) = self.store.pending(OUTBOX_BATCH).await.map_err(|e| e.to_string())?;
        if pending.is_empty() {
            // Everything up to `newest` is told; everything after it is in memory, unless some
            // overflowed (then the next take says so, and the table is read again).
            *self.in_step.lock().unwrap_or_else(|p| p.into_inner()) = Some(newest);
            return Ok(None);
        }
        Ok(Some(pending))
    }

    /// Tells the internal audience of every held delivery not yet told. Each is told once: it is
    /// marked told after its notification is written.
    pub async fn tell_held(&self) -> Result<usize, String> {
        let mut told = 0;
        loop {
            let held = self.store.untold_held(OUTBOX_BATCH).await.map_err(|e| e.to_string())?;
            if held.is_empty() {
                return Ok(told);
            }
            let mut done = Vec::with_capacity(held.len());
            let mut failure = None;
            for h in &held {
                match self.fanout.tell_held(&h.notice()).await {
                    Ok(()) => done.push((h.provider, h.held_id.clone())),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            told += done.len();
            self.store.mark_held_told(done).await.map_err(|e| e.to_string())?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// The worker `serve` runs: drains the outbox whenever woken, and at least every second.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.drain().await {
                tracing::error!(error = %e, "fan-out failed; will retry");
            }
            if let Err(e) = self.tell_held().await {
                tracing::error!(error = %e, "telling held deliveries failed; will retry");
            }
            // Woken by each new event; the timeout retries failures and catches anything missed.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use common::config::{Config, Secrets};
    use common::event::{Provider, Status};
    use common::notify::{Audience, MemoryNotifier};
    use common::store::EventStore;

    use super::*;
    use crate::serve::Runner;

    fn event(n: usize) -> RefundEvent {
        // Rainforest tells every audience of a processing refund.
        crate::store::test_event(&format!("rfd_{n}"), Status::Processing)
    }

    fn runner(dir: &std::path::Path, notifier: Arc<MemoryNotifier>) -> Arc<Runner> {
        let config = Config::load(&Provider::ALL, Secrets::DevFallback, &|_| None).unwrap();
        Runner::with_notifier(&config, dir, notifier).unwrap()
    }

    /// Past its room the handover says it overflowed, until it is forgotten.
    #[test]
    fn a_full_handover_says_so_until_forgotten() {
        let handover = Handover::default();
        for n in 0..HANDOVER_CAPACITY + 1 {
            handover.push(Pending { seq: n as i64, event: event(0) });
        }
        assert_eq!(handover.lock().events.len(), HANDOVER_CAPACITY);
        assert_eq!(handover.take(10), Taken::Overflowed);
        handover.forget();
        assert_eq!(handover.take(10), Taken::Events(vec![]));
        handover.push(Pending { seq: 1, event: event(1) });
        assert_eq!(handover.take(10), Taken::Events(vec![Pending { seq: 1, event: event(1) }]));
    }

    /// Every stored event is told to each of its audiences exactly once, whether the outbox
    /// reads it from the table (at start, and after a failure) or takes it in memory (in step).
    #[tokio::test]
    async fn the_outbox_tells_each_event_once_from_the_table_or_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Arc::new(MemoryNotifier::new());
        let runner = runner(dir.path(), notifier.clone());
        let outbox = runner.outbox();
        let put = |range: std::ops::Range<usize>| {
            let runner = runner.clone();
            async move {
                for n in range {
                    assert_eq!(runner.store().put_if_absent(&event(n)).await.unwrap(), common::store::Put::Stored);
                }
            }
        };
        // Stored before the worker ran: read from the table, which puts the worker in step.
        put(0..20).await;
        assert_eq!(outbox.drain().await.unwrap(), 20);
        assert!(outbox.in_step.lock().unwrap().is_some());
        // In step: handed over in memory.
        put(20..30).await;
        assert_eq!(outbox.drain().await.unwrap(), 10);
        // A failure puts the worker out of step; the failed events are read from the table.
        notifier.set_failing(true);
        put(30..35).await;
        assert!(outbox.drain().await.is_err());
        assert!(outbox.in_step.lock().unwrap().is_none());
        notifier.set_failing(false);
        put(35..40).await;
        assert_eq!(outbox.drain().await.unwrap(), 10);
        assert_eq!(outbox.drain().await.unwrap(), 0, "nothing is told twice");

        let sent = notifier.sent();
        let pairs: HashSet<(String, Audience)> = sent.iter().map(|n| (n.event_id.clone(), n.audience)).collect();
        assert_eq!(pairs.len(), sent.len(), "an (event, audience) pair was told twice");
        assert_eq!(sent.len(), 40 * 3, "internal, merchant and payor for each of 40 events");
        assert!(runner.store().pending(100).await.unwrap().0.is_empty());
    }

    /// Events the in-memory queue had no room for are read from the table, however many passes
    /// that takes, before the worker trusts the queue again.
    #[tokio::test]
    async fn after_an_overflow_the_outbox_reads_the_table_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Arc::new(MemoryNotifier::new());
        let runner = runner(dir.path(), notifier.clone());
        let outbox = runner.outbox();
        assert_eq!(outbox.drain().await.unwrap(), 0);
        assert!(outbox.in_step.lock().unwrap().is_some());
        let n = OUTBOX_BATCH + 100;
        for i in 0..n {
            runner.store().put_if_absent(&event(i)).await.unwrap();
        }
        runner.store().handover().overflow();
        assert_eq!(outbox.drain().await.unwrap(), n, "more than one table pass");
        assert!(runner.store().pending(10).await.unwrap().0.is_empty());
        assert_eq!(notifier.sent().len(), n * 3);
    }
}
