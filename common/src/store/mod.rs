//! Where events are kept: one conditional write per delivery, and a per-object aggregate whose
//! status only moves forward.

pub mod layout;
mod memory;
mod packed;

pub use memory::MemoryStore;

use std::collections::HashSet;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::{EventKind, IdempotencyKey, Provider, RefundEvent, Status};
use crate::held::{HeldDelivery, HeldEntry, HeldStatus};
use crate::notify::Audience;
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

/// The audiences already told of the event that last moved an object: a retry publishes only to
/// the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Told(u8);

impl Told {
    pub const NONE: Told = Told(0);

    fn bit(audience: Audience) -> u8 {
        match audience {
            Audience::Internal => 1,
            Audience::Merchant => 2,
            Audience::Payor => 4,
        }
    }

    pub fn with(self, audience: Audience) -> Self {
        Told(self.0 | Self::bit(audience))
    }

    pub fn contains(self, audience: Audience) -> bool {
        self.0 & Self::bit(audience) != 0
    }

    /// `internal,payor`: how stores keep it, after the event id it belongs to.
    pub fn to_text(self) -> String {
        Audience::ALL.into_iter().filter(|a| self.contains(*a)).map(Audience::as_str).collect::<Vec<_>>().join(",")
    }

    /// The set `text` names, unknown words skipped (a newer writer's audience is not ours to tell).
    pub fn from_text(text: &str) -> Self {
        text.split(',').filter_map(|w| Audience::ALL.into_iter().find(|a| a.as_str() == w)).fold(Told::NONE, Told::with)
    }

    /// The `told_to` attribute's value: the event id, then the audiences told of it.
    pub fn record(self, event_id: &str) -> String {
        format!("{event_id}#{}", self.to_text())
    }

    /// The audiences `record` says were told of `event_id`; none when it names another event.
    pub fn of_record(record: Option<&str>, event_id: &str) -> Self {
        record
            .and_then(|r| r.strip_prefix(event_id))
            .and_then(|rest| rest.strip_prefix('#'))
            .map_or(Told::NONE, Told::from_text)
    }
}

/// The answer to moving an object's aggregate to an event's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The event moved the object forward (or is the event that last did, seen again on a
    /// retry): its audiences are to be told, but for those already told of it.
    Advanced(Told),
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
    /// The provider's new held items this minute reached the cap: a flood of distinct unreadable
    /// bodies costs bounded money. The provider should retry later.
    #[error("{provider}: {cap} new held deliveries this minute, the cap")]
    HeldCapReached { provider: Provider, cap: u32 },
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

/// One page of a listing, and where the next begins (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Where a held delivery sorts in listings, newest first: its received time, then its id. A page
/// cursor is the last position listed, and the next page begins below it.
pub fn held_position(received_at: Timestamp, held_id: &str) -> String {
    format!("{received_at}#{held_id}")
}

/// One page of `held`'s entries for a store that has them all at hand: newest first, below `after`.
pub fn page_of_held(
    mut held: Vec<HeldEntry>,
    provider: Option<Provider>,
    after: Option<&str>,
    limit: usize,
) -> Page<HeldEntry> {
    held.retain(|h| provider.is_none_or(|p| h.provider == p));
    held.retain(|h| after.is_none_or(|a| held_position(h.received_at, &h.held_id).as_str() < a));
    held.sort_by_key(|h| std::cmp::Reverse(held_position(h.received_at, &h.held_id)));
    let more = held.len() > limit;
    held.truncate(limit);
    let next = more.then(|| held.last().map(|h| held_position(h.received_at, &h.held_id))).flatten();
    Page { items: held, next }
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

    /// Records that the audiences in `told` were told of `event` (written right after each
    /// publish, so a retry tells only the others) and, with `all`, that every audience was, so a
    /// redelivered stream record publishes nothing. Does nothing if a later event has moved the
    /// object since.
    async fn mark_told(&self, event: &RefundEvent, told: Told, all: bool) -> Result<(), StoreError>;

    /// The object's aggregate and event history, oldest first.
    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError>;

    /// One stored event of one object, by its id: the object's partition, never a scan (the id
    /// is a hash, so the object is what finds it; every notification names both).
    async fn object_event(
        &self,
        provider: Provider,
        kind: EventKind,
        object_id: &str,
        event_id: &str,
    ) -> Result<Option<RefundEvent>, StoreError>;

    /// A merchant's events, oldest first, received at or after `since` if given.
    /// Without their raw payloads where the store's index does not keep them.
    async fn merchant_events(
        &self,
        merchant_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RefundEvent>, StoreError>;

    /// Stored events no audience has been told of yet and that would still be told: the object
    /// has no aggregate, the event ranks above it, or the event moved it but its told marker is
    /// not set. What `redrive` hands to the fan-out after an outage, one page at a time (`after`
    /// is the previous page's `next`); a page may hold none and still have a next.
    async fn untold(&self, after: Option<String>) -> Result<Page<RefundEvent>, StoreError>;

    /// Keeps `held` unless the same provider and body are held already. Exactly one write.
    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError>;

    /// Held deliveries without their bodies, newest first, of one provider or all: at most
    /// `limit`, below `after` (the previous page's `next`).
    async fn held(
        &self,
        provider: Option<Provider>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<HeldEntry>, StoreError>;

    /// One held delivery by its id.
    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError>;

    /// Marks a held delivery resolved, saying what reprocessing made of it.
    async fn resolve_held(&self, held: &HeldDelivery, resolution: &str) -> Result<(), StoreError>;

    /// Which of `events` are stored already (by idempotency key), in as few reads as the store
    /// allows and without writing: reconciliation asks this of a whole page before it writes.
    async fn existing(&self, events: &[RefundEvent]) -> Result<HashSet<IdempotencyKey>, StoreError>;

    /// Where `provider`'s scheduled sweeps have got to.
    async fn checkpoint(&self, provider: Provider) -> Result<Option<Checkpoint>, StoreError>;

    /// Saves a sweep's checkpoint (one a provider; the sweeps run one at a time).
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Every stored event and held delivery, a page at a time (`after` is the previous page's
    /// `next`; a page may hold none and still have a next): a scan, for the rare data-protection
    /// request (`erase`), never for a webhook.
    async fn records(&self, after: Option<String>) -> Result<Page<Record>, StoreError>;

    /// Replaces a stored event with `event`, the same event with personal data erased from its
    /// `payor`, `reason` and raw payload: the same keys and status, and nobody told again.
    async fn rewrite_event(&self, event: &RefundEvent) -> Result<(), StoreError>;

    /// Replaces a held delivery's body and query with `held`'s.
    async fn rewrite_held(&self, held: &HeldDelivery) -> Result<(), StoreError>;
}

/// Where a provider's scheduled sweeps have got to: everything created up to `through` was
/// listed, and a window whose sweep ran out of time, with the page to go on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub provider: Provider,
    pub through: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_way: Option<UnderWay>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UnderWay {
    pub since: Timestamp,
    pub until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A stored record that may carry personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Event(Box<RefundEvent>),
    Held(Box<HeldDelivery>),
}

/// Whether an event still waits for its fan-out, given its object's aggregate (status, last
/// event, told event): the rule every store's [`EventStore::untold`] applies.
pub fn untold(aggregate: Option<(Status, &str, Option<&str>)>, event: &RefundEvent) -> bool {
    is_untold(aggregate, event.status, event.event_id.as_str())
}

/// [`untold`] from an event's status and id alone, as a store's keys give them.
pub fn is_untold(aggregate: Option<(Status, &str, Option<&str>)>, status: Status, event_id: &str) -> bool {
    match aggregate {
        None => true,
        Some((current, last, told)) => status.rank() > current.rank() || (last == event_id && told != Some(event_id)),
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
