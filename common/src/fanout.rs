//! What happens to a newly stored event: advance its object's aggregate, and if it moved the
//! object forward, tell each audience the routing table names. In AWS this runs in the fan-out
//! function on the table's stream; the local runner calls it right after the store.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::event::RefundEvent;
use crate::held::HeldNotice;
use crate::metrics::{Metrics, Published};
use crate::notify::{self, Notification, Notifier, NotifyError, Routing};
use crate::store::{Advance, EventStore, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The object moved; these notifications were published.
    Notified(Vec<Notification>),
    /// The object was already at this rank or beyond. Nobody wants "your refund is processing"
    /// after "your refund succeeded", so nobody is told.
    Stale,
    /// Every audience was told on an earlier delivery of this record; nothing is published again.
    AlreadyTold,
}

/// What became of one event handed to [`Fanout::deliver_in_object_order`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(Delivery),
    Failed(FanoutError),
    /// Not tried: an earlier event of the same object failed, and a later status must not be
    /// told before it.
    HeldBack,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

#[derive(Clone)]
pub struct Fanout {
    store: Arc<dyn EventStore>,
    notifier: Arc<dyn Notifier>,
    routing: Routing,
    platform: String,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(store: Arc<dyn EventStore>, notifier: Arc<dyn Notifier>, routing: Routing, platform: String) -> Self {
        Fanout { store, notifier, routing, platform, metrics: Arc::default() }
    }

    /// Counts into `metrics` (shared with the rest of a process) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What this fan-out published, failed to publish and found stale.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Publishes `messages` in order, counting each; stops at the first failure.
    async fn publish_all(&self, messages: &[Notification]) -> Result<(), NotifyError> {
        for n in messages {
            self.publish(n).await?;
        }
        Ok(())
    }

    async fn publish(&self, n: &Notification) -> Result<(), NotifyError> {
        let published = self.notifier.publish(n).await;
        self.metrics.notification(n.audience, if published.is_ok() { Published::Yes } else { Published::Failed });
        published
    }

    /// What telling `event` would publish, to whom, under this fan-out's routing: `redrive
    /// --dry-run`'s answer. Nothing is read or written.
    pub fn would_tell(&self, event: &RefundEvent) -> Vec<Notification> {
        notify::notifications(event, &self.routing, &self.platform)
    }

    /// Safe to call again for the same event after a failure: `advance` answers `Advanced` for
    /// the event that last moved the object until it is marked told, with the audiences already
    /// told of it. Each audience is marked right after its publish, so a retry publishes only to
    /// the audiences the first try did not reach, and once all are told, nothing.
    pub async fn deliver(&self, event: &RefundEvent) -> Result<Delivery, FanoutError> {
        match self.store.advance(event).await? {
            Advance::Stale => {
                self.metrics.stale_event();
                tracing::info!(event_id = %event.event_id, status = %event.status, "stale event: stored, not notified");
                Ok(Delivery::Stale)
            }
            Advance::AlreadyTold => {
                tracing::info!(event_id = %event.event_id, "already told every audience: nothing published");
                Ok(Delivery::AlreadyTold)
            }
            Advance::Advanced(already) => {
                // In routing order, the payor last.
                let messages: Vec<Notification> = notify::notifications(event, &self.routing, &self.platform)
                    .into_iter()
                    .filter(|n| !already.contains(n.audience))
                    .collect();
                // Each audience is marked right after its publish: a failure later on (the last
                // marker included) leaves it marked, so the retry does not tell it again.
                let mut told = already;
                for n in &messages {
                    self.publish(n).await?;
                    told = told.with(n.audience);
                    self.store.mark_told(event, told, false).await?;
                }
                self.store.mark_told(event, told, true).await?;
                tracing::info!(event_id = %event.event_id, count = messages.len(), "notified");
                Ok(Delivery::Notified(messages))
            }
        }
    }

    /// Tells `event`'s audiences again, at an operator's request. Without `force` this is
    /// [`deliver`](Self::deliver): an event already told in full publishes nothing and says so,
    /// a stale one tells nobody. With `force`, every audience its status routes to is published
    /// again, whatever was told before.
    pub async fn replay(&self, event: &RefundEvent, force: bool) -> Result<Delivery, FanoutError> {
        if !force {
            return self.deliver(event).await;
        }
        let messages = notify::notifications(event, &self.routing, &self.platform);
        self.publish_all(&messages).await?;
        tracing::warn!(event_id = %event.event_id, count = messages.len(), "replayed with --force");
        Ok(Delivery::Notified(messages))
    }

    /// Tells the internal audience that a delivery was held. Once per held item: the item is
    /// written once, and the outbox (stream or table) hands it over once per write.
    pub async fn tell_held(&self, notice: &HeldNotice) -> Result<(), NotifyError> {
        self.publish(&notify::held_notification(notice)).await?;
        tracing::warn!(held_id = %notice.held_id, provider = %notice.provider, "held delivery told to internal");
        Ok(())
    }

    /// Delivers `events`: one object's in the order given, different objects up to
    /// `concurrency` at a time, so one slow object does not hold up the rest. After one of an
    /// object's events fails, its later ones are held back. The outcomes come back in the
    /// order of `events`, each with its `K` (a record's id, an outbox sequence number).
    pub async fn deliver_in_object_order<K>(
        &self,
        events: Vec<(K, RefundEvent)>,
        concurrency: usize,
    ) -> Vec<(K, Outcome)> {
        let mut chains: Vec<Vec<(usize, K, RefundEvent)>> = Vec::new();
        let mut chain_of_object: HashMap<String, usize> = HashMap::new();
        for (position, (key, event)) in events.into_iter().enumerate() {
            let chain = *chain_of_object.entry(event.object_key()).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[chain].push((position, key, event));
        }
        let mut outcomes: Vec<(usize, K, Outcome)> = futures_util::stream::iter(chains)
            .map(|chain| async move {
                let mut outcomes = Vec::with_capacity(chain.len());
                let mut failed = false;
                for (position, key, event) in chain {
                    let outcome = if failed {
                        Outcome::HeldBack
                    } else {
                        match self.deliver(&event).await {
                            Ok(delivery) => Outcome::Delivered(delivery),
                            Err(e) => {
                                failed = true;
                                Outcome::Failed(e)
                            }
                        }
                    };
                    outcomes.push((position, key, outcome));
                }
                outcomes
            })
            .buffer_unordered(concurrency)
            .concat()
            .await;
        outcomes.sort_unstable_by_key(|(position, ..)| *position);
        outcomes.into_iter().map(|(_, key, outcome)| (key, outcome)).collect()
    }
}
