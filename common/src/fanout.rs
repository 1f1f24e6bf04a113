//! What happens to a newly stored event: advance its object's aggregate, and if it moved the
//! object forward, tell each audience the routing table names. In AWS this runs in the fan-out
//! function on the table's stream; the local runner calls it right after the store.

use std::sync::Arc;

use crate::event::RefundEvent;
use crate::notify::{self, Notification, Notifier, NotifyError, Routing};
use crate::store::{Advance, EventStore, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The object moved; these notifications were published.
    Notified(Vec<Notification>),
    /// The object was already at this rank or beyond. Nobody wants "your refund is processing"
    /// after "your refund succeeded", so nobody is told.
    Stale,
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
}

impl Fanout {
    pub fn new(store: Arc<dyn EventStore>, notifier: Arc<dyn Notifier>, routing: Routing, platform: String) -> Self {
        Fanout { store, notifier, routing, platform }
    }

    /// Safe to call again for the same event after a failure: `advance` answers `Advanced` for
    /// the event that last moved the object, so a retry publishes what the first try did not
    /// (subscribers dedupe by `event_id`).
    pub async fn deliver(&self, event: &RefundEvent) -> Result<Delivery, FanoutError> {
        match self.store.advance(event).await? {
            Advance::Stale => {
                tracing::info!(event_id = %event.event_id, status = %event.status, "stale event: stored, not notified");
                Ok(Delivery::Stale)
            }
            Advance::Advanced => {
                let messages = notify::notifications(event, &self.routing, &self.platform);
                for n in &messages {
                    self.notifier.publish(n).await?;
                }
                tracing::info!(event_id = %event.event_id, count = messages.len(), "notified");
                Ok(Delivery::Notified(messages))
            }
        }
    }
}
