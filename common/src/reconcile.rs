//! Reconciliation: what a provider's API knows, stored as if its webhook had come.
//!
//! A sweep lists a window of a provider's refunds page by page. Each one goes through the
//! provider's own normalization ([`Receiver::read`], proof `fetched`) to the event and key its
//! webhook would have given; the page's events are looked up in one batch
//! ([`EventStore::existing`]), and only those the store does not have are written, through the
//! same conditional write as a delivery: a refund the webhooks missed is stored (and told, by the
//! outbox) once, a known one writes nothing, and a webhook racing the sweep stores one event.
//! What cannot be read is held, as a delivery would be.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Fetched, ProviderApi, Window};
use crate::event::{Proof, Provider};
use crate::held::{HeldDelivery, HoldCode, HoldReason};
use crate::receive::{Reading, ReceiveError, Receiver};
use crate::store::{Checkpoint, EventStore, Put, StoreError, UnderWay};
use crate::timestamp::Timestamp;
use crate::verify::Verified;

/// The longest a sweep waits, in all, on a provider's 429s before it leaves the rest to the next.
pub const WAIT_BUDGET: Duration = Duration::from_secs(30);
/// A 429 without `Retry-After` waits this long.
const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// What one sweep of one provider came to: `reconciled P: N listed, M missed, K known, H held,
/// F failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub provider: Provider,
    pub listed: usize,
    /// Stored by the sweep: the provider knows them, no webhook brought them.
    pub missed: usize,
    pub known: usize,
    pub held: usize,
    /// Questions the API did not answer (after its 429s, within [`WAIT_BUDGET`]): asked again
    /// next run.
    pub failed: usize,
}

impl Tally {
    pub fn new(provider: Provider) -> Self {
        Tally { provider, listed: 0, missed: 0, known: 0, held: 0, failed: 0 }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reconciled {}: {} listed, {} missed, {} known, {} held, {} failed",
            self.provider, self.listed, self.missed, self.known, self.held, self.failed
        )
    }
}

/// Where a sweep stopped when its time ran out: the page to ask for next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub provider: Provider,
    pub cursor: Option<String>,
}

/// One sweep's result: its tally, a line per object that changed (or would), and where to go on.
#[derive(Debug)]
pub struct Swept {
    pub tally: Tally,
    pub lines: Vec<String>,
    pub resume: Option<Resume>,
}

/// The receiver's adapters and the store, on one deployment's configuration.
pub struct Reconciler {
    receiver: Receiver,
    store: Arc<dyn EventStore>,
    /// Waits out a 429 (replaced in tests).
    sleep: fn(Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Reconciler {
    pub fn new(receiver: Receiver, store: Arc<dyn EventStore>) -> Self {
        Reconciler { receiver, store, sleep: |d| Box::pin(tokio::time::sleep(d)) }
    }

    /// Lists `window` from `cursor` until the list ends, the API fails, or `out_of_time` says
    /// so between two pages (every run reads at least one).
    pub async fn sweep(
        &self,
        api: &dyn ProviderApi,
        window: &Window,
        mut cursor: Option<String>,
        dry_run: bool,
        out_of_time: &dyn Fn() -> bool,
    ) -> Result<Swept, ReceiveError> {
        let provider = api.provider();
        let mut swept = Swept { tally: Tally::new(provider), lines: Vec::new(), resume: None };
        let mut waited = Duration::ZERO;
        let mut pages = 0;
        loop {
            if pages > 0 && out_of_time() {
                swept.resume = Some(Resume { provider, cursor });
                return Ok(swept);
            }
            let page = match api.list(window, cursor.as_deref()).await {
                Ok(page) => page,
                Err(ApiError::RateLimited(after)) => {
                    let wait = after.unwrap_or(DEFAULT_WAIT);
                    if waited + wait <= WAIT_BUDGET {
                        waited += wait;
                        (self.sleep)(wait).await;
                        continue;
                    }
                    swept.tally.failed += 1;
                    swept
                        .lines
                        .push(format!("{provider}: still rate limited after waiting {waited:?}; the next run goes on"));
                    return Ok(swept);
                }
                Err(e) => {
                    swept.tally.failed += 1;
                    tracing::warn!(%provider, error = %e, "reconciliation: the provider's API did not answer");
                    swept.lines.push(format!("{provider}: {e}; the next run asks again"));
                    return Ok(swept);
                }
            };
            pages += 1;
            self.take(provider, page.items, dry_run, &mut swept).await?;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(swept),
            }
        }
    }

    /// One page: read each object, look the events up in one batch, write what is missing.
    async fn take(
        &self,
        provider: Provider,
        items: Vec<Fetched>,
        dry_run: bool,
        swept: &mut Swept,
    ) -> Result<(), ReceiveError> {
        let headers = json_headers();
        let verified = Verified { delivery_id: None, proof: Proof::Fetched };
        let now = Timestamp::now();
        let mut events = Vec::new();
        for item in items {
            swept.tally.listed += 1;
            match self.receiver.read(provider, &headers, None, &item.body, now, verified.clone()).await? {
                Reading::Event(event) => events.push(*event),
                Reading::Ignored(reason) => swept.lines.push(format!("{}: ignored ({reason})", item.id)),
                Reading::Unreadable(reason) => {
                    self.hold(provider, &item, &headers, &verified, &reason, dry_run, swept).await?;
                }
            }
        }
        let existing = self.store.existing(&events).await?;
        for event in events {
            if existing.contains(&event.idempotency_key) {
                swept.tally.known += 1;
                continue;
            }
            let what = format!("{} {} {} {}", event.event_id, provider, event.object_id, event.status);
            if dry_run {
                swept.tally.missed += 1;
                swept.lines.push(format!("{what}: missed; would be stored and told"));
                continue;
            }
            match self.store.put_if_absent(&event).await? {
                Put::Stored => {
                    swept.tally.missed += 1;
                    tracing::warn!(%provider, event_id = %event.event_id, "reconciliation: stored a refund no webhook brought");
                    swept.lines.push(format!("{what}: missed; stored"));
                }
                // A webhook came between the lookup and the write.
                Put::Duplicate(stored) if stored.same_content(&event) => swept.tally.known += 1,
                Put::Duplicate(_) => {
                    let item = Fetched { id: event.object_id.clone(), body: event.raw_payload.clone().into_bytes() };
                    let reason = HoldReason::bare(HoldCode::Conflict);
                    self.hold(provider, &item, &headers, &verified, &reason, dry_run, swept).await?;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn hold(
        &self,
        provider: Provider,
        item: &Fetched,
        headers: &HeaderMap,
        verified: &Verified,
        reason: &HoldReason,
        dry_run: bool,
        swept: &mut Swept,
    ) -> Result<(), StoreError> {
        swept.tally.held += 1;
        if dry_run {
            swept.lines.push(format!("{}: would be held ({reason})", item.id));
            return Ok(());
        }
        let held = HeldDelivery::new(provider, Timestamp::now(), headers, None, &item.body, verified, reason);
        self.store.hold(&held).await?;
        swept.lines.push(format!("{}: held as {} ({reason})", item.id, held.held_id));
        Ok(())
    }
}

/// How the scheduled sweeps choose their windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Each window starts this long before where the last one ended: lists are eventually
    /// consistent, and an object indexed late is not skipped.
    pub overlap: Duration,
    /// How far back the very first sweep of a provider looks (not all of its history).
    pub first_window: Duration,
    /// A window ends this long before the run: a refund younger than that may have its webhook
    /// still on the way (a provider's first retry), and would count as missed.
    pub settle: Duration,
}

impl Schedule {
    pub const DEFAULT: Schedule = Schedule {
        overlap: Duration::from_secs(3600),
        first_window: Duration::from_secs(24 * 3600),
        settle: Duration::from_secs(600),
    };
}

impl Reconciler {
    /// One scheduled sweep of `api`'s provider, from its checkpoint: the window under way if the
    /// last run stopped in one, else from where the last window ended (less the overlap) to
    /// `now` less the settling time. Done, the checkpoint moves to the window's end; stopped for time, it keeps the
    /// window and the page to go on from; failed, it stays, and the next run sweeps again.
    pub async fn scheduled(
        &self,
        api: &dyn ProviderApi,
        now: Timestamp,
        schedule: &Schedule,
        out_of_time: &dyn Fn() -> bool,
    ) -> Result<Swept, ReceiveError> {
        let provider = api.provider();
        let saved = self.store.checkpoint(provider).await?;
        let now = now.minus(schedule.settle);
        let (window, cursor) = match &saved {
            Some(Checkpoint { under_way: Some(u), .. }) => (Window { start: u.since, end: u.until }, u.cursor.clone()),
            Some(c) => (Window { start: c.through.minus(schedule.overlap), end: now.max(c.through) }, None),
            None => (Window { start: now.minus(schedule.first_window), end: now }, None),
        };
        let swept = self.sweep(api, &window, cursor, false, out_of_time).await?;
        let next = match &swept.resume {
            Some(stopped) => Checkpoint {
                provider,
                through: saved.map_or(window.start, |c| c.through),
                under_way: Some(UnderWay { since: window.start, until: window.end, cursor: stopped.cursor.clone() }),
            },
            None if swept.tally.failed == 0 => Checkpoint { provider, through: window.end, under_way: None },
            None => return Ok(swept),
        };
        self.store.save_checkpoint(&next).await?;
        Ok(swept)
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    headers
}
