//! The product's store: one DynamoDB table.
//!
//! Item layout: see [`super::layout`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use super::layout::{self, AGGREGATE_SK, Attr, EVENT_SK_PREFIX};
use super::{Advance, EventStore, HistoryEntry, ObjectRecord, Put, StoreError};
use crate::event::{EventKind, Provider, RefundEvent, Status};

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: Duration,
}

impl DynamoStore {
    /// Building the store makes no call to AWS: the SDK resolves credentials on first use.
    pub fn new(client: Client, table: impl Into<String>, retention: Duration) -> Self {
        DynamoStore { client, table: table.into(), retention }
    }

    /// The item written for `event`.
    pub fn to_item(&self, event: &RefundEvent) -> HashMap<String, AttributeValue> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expires_at = now.saturating_add(i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX));
        layout::event_item(event, expires_at)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Attr::S(s) => AttributeValue::S(s),
                    Attr::N(n) => AttributeValue::N(n),
                };
                (k.to_owned(), v)
            })
            .collect()
    }

    /// The canonical event from a stored item (or a stream's NEW_IMAGE of one).
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<RefundEvent, StoreError> {
        let json = item
            .get("event")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt("item has no `event` attribute".into()))?;
        let mut event: RefundEvent =
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("`event` attribute: {e}")))?;
        if let Some(raw) = item.get("raw_payload").and_then(|v| v.as_s().ok()) {
            event.raw_payload = raw.clone();
        }
        Ok(event)
    }
}

/// Throttling asks for a retry as much as an outage does; both become a 503, but they are told
/// apart in logs and metrics.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> StoreError {
    const THROTTLED: &[&str] =
        &["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"];
    match err.code() {
        Some(code) if THROTTLED.contains(&code) => StoreError::Throttled(code.to_owned()),
        _ => StoreError::Unavailable(DisplayErrorContext(err).to_string()),
    }
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn put_if_absent(&self, event: &RefundEvent) -> Result<Put, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.to_item(event)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Put::Stored),
            Err(e) if is_condition_failed(&e) => Ok(Put::Duplicate),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(layout::object_pk(event.provider, event.kind, &event.object_id)))
            .key("sk", AttributeValue::S(AGGREGATE_SK.into()))
            .update_expression(
                "SET #status = :status, status_rank = :rank, last_event_id = :event_id, updated_at = :at, \
                 provider = :provider, kind = :kind, object_id = :object_id",
            )
            // Rank only rises; the event that last moved the object may move it again (a retry).
            .condition_expression("attribute_not_exists(pk) OR status_rank < :rank OR last_event_id = :event_id")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", AttributeValue::S(event.status.as_str().into()))
            .expression_attribute_values(":rank", AttributeValue::N(event.status.rank().to_string()))
            .expression_attribute_values(":event_id", AttributeValue::S(event.event_id.clone()))
            .expression_attribute_values(":at", AttributeValue::S(event.received_at.clone()))
            .expression_attribute_values(":provider", AttributeValue::S(event.provider.as_str().into()))
            .expression_attribute_values(":kind", AttributeValue::S(event.kind.as_str().into()))
            .expression_attribute_values(":object_id", AttributeValue::S(event.object_id.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Advance::Advanced),
            Err(e) if is_condition_failed(&e) => Ok(Advance::Stale),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let pk = layout::object_pk(provider, kind, id);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        let mut status = None;
        let mut events = Vec::new();
        for item in &items {
            let sk = item.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or_default();
            if sk == AGGREGATE_SK {
                status = item.get("status").and_then(|v| v.as_s().ok()).and_then(|s| s.parse::<Status>().ok());
            } else if sk.starts_with(EVENT_SK_PREFIX) {
                let e = Self::from_item(item)?;
                events.push(HistoryEntry {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    status: e.status,
                    received_at: e.received_at,
                });
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        events.sort_by(|a, b| a.received_at.cmp(&b.received_at));
        Ok(Some(ObjectRecord { provider, kind, id: id.to_owned(), status, events }))
    }
}
