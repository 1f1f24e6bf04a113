//! Where events are kept: one conditional write per delivery, and a per-object aggregate whose
//! status only moves forward.

#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod layout;
mod memory;

pub use memory::MemoryStore;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::{EventKind, Provider, RefundEvent, Status};

/// The answer to the one write a webhook costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// The idempotency key was already there: a retry, a resend or a concurrent twin.
    Duplicate,
}

/// The answer to moving an object's aggregate to an event's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The event moved the object forward (or is the event that last did, seen again on a
    /// retry): its audiences are to be told.
    Advanced,
    /// The object is already at this rank or beyond: kept for audit, nobody is told.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the request; the provider should retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store asked us to slow down; the provider should retry.
    #[error("store throttled: {0}")]
    Throttled(String),
    /// What the store holds could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// One event in an object's history, as `GET /refunds/...` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub event_id: String,
    pub event_type: String,
    pub status: Status,
    pub received_at: String,
}

/// One refund (or payment) and what has happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRecord {
    pub provider: Provider,
    pub kind: EventKind,
    pub id: String,
    /// The highest-ranked status reached, once the fan-out has advanced the aggregate.
    pub status: Option<Status>,
    pub events: Vec<HistoryEntry>,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores `event` unless its idempotency key is already stored. Exactly one write.
    async fn put_if_absent(&self, event: &RefundEvent) -> Result<Put, StoreError>;

    /// Moves the event's object to the event's status if that ranks higher than where the
    /// object is. Seeing the same event again answers `Advanced`, so a retried fan-out can finish
    /// the notifications it started.
    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError>;

    /// The object's aggregate and event history, oldest first.
    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError>;
}

/// The rule every store applies in `advance`, in one place.
pub fn advances(current: Option<(Status, &str)>, event: &RefundEvent) -> bool {
    match current {
        None => true,
        Some((status, last_event_id)) => event.status.rank() > status.rank() || last_event_id == event.event_id,
    }
}
