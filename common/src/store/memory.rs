//! An in-memory store for unit tests and in-process handler tests.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Advance, Checkpoint, EventStore, HistoryEntry, Hold, ObjectRecord, Page, Put, Record, StoreError, Told, advances,
    page_of_held,
};
use crate::event::{EventId, EventKind, IdempotencyKey, Provider, RefundEvent, Status};
use crate::held::{HeldDelivery, HeldEntry, HeldStatus};
use crate::timestamp::Timestamp;

#[derive(Default)]
struct State {
    events: Vec<RefundEvent>,
    keys: HashMap<IdempotencyKey, usize>,
    aggregates: HashMap<String, (Status, EventId)>,
    /// Per object, the event whose every audience was told.
    told: HashMap<String, EventId>,
    /// Per object, the audiences told of its last event so far.
    told_to: HashMap<String, (EventId, Told)>,
    held: Vec<HeldDelivery>,
    checkpoints: HashMap<Provider, Checkpoint>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// When set, every call fails as an unreachable store would.
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every stored event, in the order stored.
    pub fn events(&self) -> Vec<RefundEvent> {
        self.lock().events.clone()
    }

    /// Every held delivery, in the order held.
    pub fn held_items(&self) -> Vec<HeldDelivery> {
        self.lock().held.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another test thread panicked; the data is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Unavailable("memory store set to fail".into()))
        } else {
            Ok(())
        }
    }
}

fn object_key(provider: Provider, kind: EventKind, id: &str) -> String {
    format!("{provider}#{}#{id}", kind.as_str())
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn put_if_absent(&self, event: &RefundEvent) -> Result<Put, StoreError> {
        self.check()?;
        let mut s = self.lock();
        if let Some(&at) = s.keys.get(&event.idempotency_key) {
            return Ok(Put::Duplicate(Box::new(s.events[at].clone())));
        }
        let at = s.events.len();
        s.keys.insert(event.idempotency_key.clone(), at);
        s.events.push(event.clone());
        Ok(Put::Stored)
    }

    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError> {
        self.check()?;
        let mut s = self.lock();
        let key = object_key(event.provider, event.kind, &event.object_id);
        if s.told.get(&key) == Some(&event.event_id) {
            return Ok(Advance::AlreadyTold);
        }
        let current = s.aggregates.get(&key).map(|(st, id)| (*st, id.as_str()));
        if advances(current, event) {
            let told = s.told_to.get(&key).filter(|(id, _)| *id == event.event_id).map_or(Told::NONE, |(_, t)| *t);
            s.aggregates.insert(key, (event.status, event.event_id.clone()));
            Ok(Advance::Advanced(told))
        } else {
            Ok(Advance::Stale)
        }
    }

    async fn mark_told(&self, event: &RefundEvent, told: Told, all: bool) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.lock();
        let key = object_key(event.provider, event.kind, &event.object_id);
        if s.aggregates.get(&key).is_some_and(|(_, last)| *last == event.event_id) {
            s.told_to.insert(key.clone(), (event.event_id.clone(), told));
            if all {
                s.told.insert(key, event.event_id.clone());
            }
        }
        Ok(())
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.check()?;
        let s = self.lock();
        let events: Vec<HistoryEntry> = s
            .events
            .iter()
            .filter(|e| e.provider == provider && e.kind == kind && e.object_id == id)
            .map(HistoryEntry::of)
            .collect();
        if events.is_empty() {
            return Ok(None);
        }
        let status = s.aggregates.get(&object_key(provider, kind, id)).map(|(st, _)| *st);
        Ok(Some(ObjectRecord { provider, kind, id: id.to_owned(), status, events }))
    }

    async fn object_event(
        &self,
        provider: Provider,
        kind: EventKind,
        object_id: &str,
        event_id: &str,
    ) -> Result<Option<RefundEvent>, StoreError> {
        self.check()?;
        let s = self.lock();
        let found = s
            .events
            .iter()
            .find(|e| e.event_id == event_id && e.provider == provider && e.kind == kind && e.object_id == object_id);
        Ok(found.cloned())
    }

    async fn merchant_events(
        &self,
        merchant_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RefundEvent>, StoreError> {
        self.check()?;
        let mut events: Vec<RefundEvent> = self
            .lock()
            .events
            .iter()
            .filter(|e| e.merchant_id.as_deref() == Some(merchant_id))
            .filter(|e| since.is_none_or(|t| e.received_at >= t))
            .cloned()
            .collect();
        events.sort_by_key(|e| e.received_at);
        Ok(events)
    }

    /// Every untold event on one page.
    async fn untold(&self, _after: Option<String>) -> Result<Page<RefundEvent>, StoreError> {
        self.check()?;
        let s = self.lock();
        let items = s
            .events
            .iter()
            .filter(|e| {
                let key = object_key(e.provider, e.kind, &e.object_id);
                let aggregate = s
                    .aggregates
                    .get(&key)
                    .map(|(st, last)| (*st, last.as_str(), s.told.get(&key).map(EventId::as_str)));
                super::untold(aggregate, e)
            })
            .cloned()
            .collect();
        Ok(Page { items, next: None })
    }

    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError> {
        self.check()?;
        let mut s = self.lock();
        if let Some(h) = s.held.iter().find(|h| h.provider == held.provider && h.held_id == held.held_id) {
            return Ok(Hold::AlreadyHeld(h.status));
        }
        s.held.push(held.clone());
        Ok(Hold::Held)
    }

    async fn held(
        &self,
        provider: Option<Provider>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<HeldEntry>, StoreError> {
        self.check()?;
        let entries = self.lock().held.iter().map(HeldDelivery::summary).collect();
        Ok(page_of_held(entries, provider, after.as_deref(), limit))
    }

    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError> {
        self.check()?;
        Ok(self.lock().held.iter().find(|h| h.held_id == held_id).cloned())
    }

    async fn resolve_held(&self, held: &HeldDelivery, resolution: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.lock();
        if let Some(h) = s.held.iter_mut().find(|h| h.provider == held.provider && h.held_id == held.held_id) {
            h.status = HeldStatus::Resolved;
            h.resolution = Some(resolution.to_owned());
        }
        Ok(())
    }

    async fn existing(&self, events: &[RefundEvent]) -> Result<HashSet<IdempotencyKey>, StoreError> {
        self.check()?;
        let s = self.lock();
        Ok(events
            .iter()
            .filter(|e| s.keys.contains_key(&e.idempotency_key))
            .map(|e| e.idempotency_key.clone())
            .collect())
    }

    async fn checkpoint(&self, provider: Provider) -> Result<Option<Checkpoint>, StoreError> {
        self.check()?;
        Ok(self.lock().checkpoints.get(&provider).cloned())
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.check()?;
        self.lock().checkpoints.insert(checkpoint.provider, checkpoint.clone());
        Ok(())
    }

    async fn records(&self, _after: Option<String>) -> Result<Page<Record>, StoreError> {
        self.check()?;
        let s = self.lock();
        let events = s.events.iter().map(|e| Record::Event(Box::new(e.clone())));
        let held = s.held.iter().map(|h| Record::Held(Box::new(h.clone())));
        Ok(Page { items: events.chain(held).collect(), next: None })
    }

    async fn rewrite_event(&self, event: &RefundEvent) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.lock();
        if let Some(&at) = s.keys.get(&event.idempotency_key) {
            let stored = &mut s.events[at];
            stored.payor = event.payor.clone();
            stored.reason = event.reason.clone();
            stored.raw_payload = event.raw_payload.clone();
        }
        Ok(())
    }

    async fn rewrite_held(&self, held: &HeldDelivery) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.lock();
        if let Some(h) = s.held.iter_mut().find(|h| h.provider == held.provider && h.held_id == held.held_id) {
            h.body = held.body.clone();
            h.query = held.query.clone();
        }
        Ok(())
    }
}
