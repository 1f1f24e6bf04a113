//! Fault injection around the real ports: a store and a notifier that fail on command.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::event::{EventKind, IdempotencyKey, Provider, RefundEvent};
use common::held::{HeldDelivery, HeldEntry};
use common::notify::{Audience, Notification, Notifier, NotifyError};
use common::store::{Advance, Checkpoint, EventStore, Hold, ObjectRecord, Page, Put, Record, StoreError, Told};
use common::timestamp::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    Healthy,
    /// Every call fails as an unreachable store does.
    Unavailable,
    /// Every call is throttled.
    Throttled,
    /// The write lands, then the answer is lost (a timeout, a crash before replying).
    LoseAnswer,
}

pub struct FlakyStore<S> {
    pub inner: S,
    fault: Mutex<StoreFault>,
    pub calls: AtomicUsize,
    /// Fails the next `mark_told` that would record every audience told: the crash after the
    /// last publish and before the event's told marker.
    fail_final_mark: std::sync::atomic::AtomicBool,
}

impl<S> FlakyStore<S> {
    pub fn new(inner: S) -> Self {
        FlakyStore {
            inner,
            fault: Mutex::new(StoreFault::Healthy),
            calls: AtomicUsize::new(0),
            fail_final_mark: Default::default(),
        }
    }
    pub fn fail_next_final_mark(&self) {
        self.fail_final_mark.store(true, Ordering::SeqCst);
    }
    pub fn set(&self, fault: StoreFault) {
        *self.fault.lock().unwrap() = fault;
    }
    fn fault(&self) -> StoreFault {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.fault.lock().unwrap()
    }
}

fn injected(fault: StoreFault) -> Option<StoreError> {
    match fault {
        StoreFault::Unavailable => Some(StoreError::Unavailable("injected: connection refused".into())),
        StoreFault::Throttled => Some(StoreError::Throttled("ProvisionedThroughputExceededException".into())),
        StoreFault::Healthy | StoreFault::LoseAnswer => None,
    }
}

#[async_trait]
impl<S: EventStore> EventStore for FlakyStore<S> {
    async fn put_if_absent(&self, event: &RefundEvent) -> Result<Put, StoreError> {
        let fault = self.fault();
        if let Some(e) = injected(fault) {
            return Err(e);
        }
        let put = self.inner.put_if_absent(event).await?;
        if fault == StoreFault::LoseAnswer {
            return Err(StoreError::Unavailable("injected: timed out after the write".into()));
        }
        Ok(put)
    }

    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.advance(event).await,
        }
    }

    async fn mark_told(&self, event: &RefundEvent, told: Told, all: bool) -> Result<(), StoreError> {
        if all && self.fail_final_mark.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: lost before the told marker".into()));
        }
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.mark_told(event, told, all).await,
        }
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.object(provider, kind, id).await,
        }
    }

    async fn object_event(
        &self,
        provider: Provider,
        kind: EventKind,
        object_id: &str,
        event_id: &str,
    ) -> Result<Option<RefundEvent>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.object_event(provider, kind, object_id, event_id).await,
        }
    }

    async fn merchant_events(
        &self,
        merchant_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RefundEvent>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.merchant_events(merchant_id, since).await,
        }
    }

    async fn untold(&self, after: Option<String>) -> Result<Page<RefundEvent>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.untold(after).await,
        }
    }

    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError> {
        let fault = self.fault();
        if let Some(e) = injected(fault) {
            return Err(e);
        }
        let hold = self.inner.hold(held).await?;
        if fault == StoreFault::LoseAnswer {
            return Err(StoreError::Unavailable("injected: timed out after the write".into()));
        }
        Ok(hold)
    }

    async fn held(
        &self,
        provider: Option<Provider>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<HeldEntry>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.held(provider, after, limit).await,
        }
    }

    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.held_one(held_id).await,
        }
    }

    async fn resolve_held(&self, held: &HeldDelivery, resolution: &str) -> Result<(), StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.resolve_held(held, resolution).await,
        }
    }

    async fn existing(&self, events: &[RefundEvent]) -> Result<std::collections::HashSet<IdempotencyKey>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.existing(events).await,
        }
    }

    async fn checkpoint(&self, provider: Provider) -> Result<Option<Checkpoint>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.checkpoint(provider).await,
        }
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.save_checkpoint(checkpoint).await,
        }
    }

    async fn records(&self, after: Option<String>) -> Result<Page<Record>, StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.records(after).await,
        }
    }

    async fn rewrite_event(&self, event: &RefundEvent) -> Result<(), StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.rewrite_event(event).await,
        }
    }

    async fn rewrite_held(&self, held: &HeldDelivery) -> Result<(), StoreError> {
        match injected(self.fault()) {
            Some(e) => Err(e),
            None => self.inner.rewrite_held(held).await,
        }
    }
}

/// Publishes into memory, failing for the chosen event ids at the chosen audience (the
/// audiences before it in routing order have already been published: a partial set). With a
/// delay, each publish takes that long, and the most publishes ever in flight at once is kept.
#[derive(Default)]
pub struct FlakyNotifier {
    pub published: Mutex<Vec<Notification>>,
    failing: Mutex<HashSet<String>>,
    pub fail_at: Mutex<Option<Audience>>,
    pub delay: Mutex<Option<std::time::Duration>>,
    in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: std::sync::atomic::AtomicUsize,
}

impl FlakyNotifier {
    pub fn fail_for(&self, event_ids: impl IntoIterator<Item = impl Into<String>>, at: Audience) {
        *self.failing.lock().unwrap() = event_ids.into_iter().map(Into::into).collect();
        *self.fail_at.lock().unwrap() = Some(at);
    }
    pub fn recover(&self) {
        self.failing.lock().unwrap().clear();
    }
}

#[async_trait]
impl Notifier for FlakyNotifier {
    async fn publish(&self, n: &Notification) -> Result<(), NotifyError> {
        let fail_at = *self.fail_at.lock().unwrap();
        if fail_at == Some(n.audience) && self.failing.lock().unwrap().contains(&n.event_id) {
            return Err(NotifyError { audience: n.audience.as_str(), message: "injected: SNS unavailable".into() });
        }
        let delay = *self.delay.lock().unwrap();
        if let Some(delay) = delay {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(delay).await;
            self.in_flight.fetch_sub(1, SeqCst);
        }
        self.published.lock().unwrap().push(n.clone());
        Ok(())
    }
}
