//! An in-memory store for unit tests and in-process handler tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Advance, EventStore, HistoryEntry, ObjectRecord, Put, StoreError, advances};
use crate::event::{EventKind, Provider, RefundEvent, Status};

#[derive(Default)]
struct State {
    events: Vec<RefundEvent>,
    keys: HashMap<String, usize>,
    aggregates: HashMap<String, (Status, String)>,
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
        if s.keys.contains_key(&event.idempotency_key) {
            return Ok(Put::Duplicate);
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
        let current = s.aggregates.get(&key).map(|(st, id)| (*st, id.as_str()));
        if advances(current, event) {
            s.aggregates.insert(key, (event.status, event.event_id.clone()));
            Ok(Advance::Advanced)
        } else {
            Ok(Advance::Stale)
        }
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.check()?;
        let s = self.lock();
        let events: Vec<HistoryEntry> = s
            .events
            .iter()
            .filter(|e| e.provider == provider && e.kind == kind && e.object_id == id)
            .map(|e| HistoryEntry {
                event_id: e.event_id.clone(),
                event_type: e.event_type.clone(),
                status: e.status,
                received_at: e.received_at.clone(),
            })
            .collect();
        if events.is_empty() {
            return Ok(None);
        }
        let status = s.aggregates.get(&object_key(provider, kind, id)).map(|(st, _)| *st);
        Ok(Some(ObjectRecord { provider, kind, id: id.to_owned(), status, events }))
    }
}
