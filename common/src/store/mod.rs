//! Where events are kept: one conditional write per delivery, and a per-object aggregate whose
//! status only moves forward.

pub mod layout;
mod memory;
mod packed;

pub use memory::MemoryStore;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::{EventKind, Provider, RefundEvent, Status};
use crate::held::{HeldDelivery, HeldStatus};
use crate::timestamp::Timestamp;

/// The answer to the one write a webhook costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// The idempotency key was already there: a retry, a resend, a concurrent twin, or the same
    /// identity with other content. The stored event comes back from the same write, so telling
    /// them apart costs no second request.
    Duplicate(Box<RefundEvent>),
}

/// The answer to holding a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Newly held: the internal audience is to be told.
    Held,
    /// The same provider and body were held before (a retry); nothing new is written.
    AlreadyHeld(HeldStatus),
}

/// The answer to moving an object's aggregate to an event's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The event moved the object forward (or is the event that last did, seen again on a
    /// retry): its audiences are to be told.
    Advanced,
    /// The object is already at this rank or beyond: kept for audit, nobody is told.
    Stale,
    /// This event moved the object and every audience was told (see [`EventStore::mark_told`]):
    /// a record Lambda hands back because an earlier one in its batch failed. Telling again would
    /// reach payors on e-mail or SMS twice, and they cannot dedupe.
    AlreadyTold,
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
    pub event_id: crate::event::EventId,
    pub event_type: String,
    pub status: Status,
    pub received_at: Timestamp,
    /// The event's amount, or the order total where that is all the provider sends (Memberful).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<crate::event::Money>,
}

impl HistoryEntry {
    pub fn of(e: &RefundEvent) -> Self {
        HistoryEntry {
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            status: e.status,
            received_at: e.received_at,
            amount: e.amount.clone().or_else(|| e.order_total.clone()),
        }
    }
}

/// Newest first, as listings show held deliveries.
pub fn newest_first(held: &mut [HeldDelivery]) {
    held.sort_by(|a, b| b.received_at.cmp(&a.received_at).then_with(|| a.held_id.cmp(&b.held_id)));
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

    /// Records that every audience of `event` was told, so a redelivered stream record publishes
    /// nothing. Does nothing if a later event has moved the object since.
    async fn mark_told(&self, event: &RefundEvent) -> Result<(), StoreError>;

    /// The object's aggregate and event history, oldest first.
    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError>;

    /// One stored event by its id (an operator's look-up: on DynamoDB a scan).
    async fn event(&self, event_id: &str) -> Result<Option<RefundEvent>, StoreError>;

    /// A merchant's events, oldest first, received at or after `since` if given.
    /// Without their raw payloads where the store's index does not keep them.
    async fn merchant_events(
        &self,
        merchant_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RefundEvent>, StoreError>;

    /// Stored events no audience has been told of yet and that would still be told: the object
    /// has no aggregate, the event ranks above it, or the event moved it but its told marker is
    /// not set. What `redrive` hands to the fan-out after an outage.
    async fn untold(&self) -> Result<Vec<RefundEvent>, StoreError>;

    /// Keeps `held` unless the same provider and body are held already. Exactly one write.
    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError>;

    /// Held deliveries, newest first, of one provider or all.
    async fn held(&self, provider: Option<Provider>) -> Result<Vec<HeldDelivery>, StoreError>;

    /// One held delivery by its id.
    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError>;

    /// Marks a held delivery resolved, saying what reprocessing made of it.
    async fn resolve_held(&self, held: &HeldDelivery, resolution: &str) -> Result<(), StoreError>;
}

/// Whether an event still waits for its fan-out, given its object's aggregate (status, last
/// event, told event): the rule every store's [`EventStore::untold`] applies.
pub fn untold(aggregate: Option<(Status, &str, Option<&str>)>, event: &RefundEvent) -> bool {
    match aggregate {
        None => true,
        Some((status, last, told)) => {
            event.status.rank() > status.rank() || (last == event.event_id && told != Some(event.event_id.as_str()))
        }
    }
}

/// The rule every store applies in `advance`, in one place. A store that keeps a told marker
/// answers [`Advance::AlreadyTold`] before asking this.
pub fn advances(current: Option<(Status, &str)>, event: &RefundEvent) -> bool {
    match current {
        None => true,
        Some((status, last_event_id)) => event.status.rank() > status.rank() || last_event_id == event.event_id,
    }
}
