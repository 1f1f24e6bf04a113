//! The product's store: one DynamoDB table.
//!
//! Item layout: see [`common::store::layout`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use common::event::{EventKind, Provider, RefundEvent, Status};
use common::held::{HeldDelivery, HeldStatus};
use common::store::layout::{self, AGGREGATE_SK, EVENT_SK_PREFIX, EventItem, HELD_INDEX, HELD_SK, HeldItem};
use common::store::{Advance, EventStore, HistoryEntry, Hold, ObjectRecord, Put, StoreError, newest_first};
use common::timestamp::Timestamp;

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

    fn expires_at(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        now.saturating_add(i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX))
    }

    /// The item written for `event`.
    pub fn to_item(&self, event: &RefundEvent) -> Result<HashMap<String, AttributeValue>, StoreError> {
        layout::to_item(&EventItem::new(event, self.expires_at())).map_err(StoreError::Corrupt)
    }

    /// An UpdateItem of the aggregate of `event`'s object, to be given its expressions.
    fn update_aggregate(&self, event: &RefundEvent) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(layout::object_pk(event.provider, event.kind, &event.object_id)))
            .key("sk", AttributeValue::S(AGGREGATE_SK.into()))
    }

    /// One conditional PutItem (`attribute_not_exists(pk)`): `None` when written, or the item
    /// already stored under that key. The failed condition returns it, so telling a duplicate
    /// from a conflict costs no second request.
    async fn put_new(
        &self,
        item: HashMap<String, AttributeValue>,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => {
                if let SdkError::ServiceError(ctx) = &e
                    && let PutItemError::ConditionalCheckFailedException(failed) = ctx.err()
                {
                    return Ok(Some(failed.item().cloned().unwrap_or_default()));
                }
                Err(classify(&e))
            }
        }
    }

    /// Every item whose `attr` is `value`, over every page, from the table or one of its indexes.
    async fn query_all(
        &self,
        index: Option<&str>,
        attr: &str,
        value: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression("#key = :value")
                .expression_attribute_names("#key", attr)
                .expression_attribute_values(":value", AttributeValue::S(value.to_owned()))
                // Strongly consistent reads exist on the table only, not on a global index.
                .consistent_read(index.is_none())
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Every item of the table, over every page: for operators' look-ups that no key answers.
    async fn scan_all(&self, sk_prefix: Option<&str>) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut scan =
                self.client.scan().table_name(&self.table).consistent_read(true).set_exclusive_start_key(start);
            if let Some(prefix) = sk_prefix {
                scan = scan
                    .filter_expression("begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()));
            }
            let page = scan.send().await.map_err(|e| classify(&e))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// A held delivery from its item.
    pub fn held_from_item(item: &HashMap<String, AttributeValue>) -> Result<HeldDelivery, StoreError> {
        serde_dynamo::from_item::<_, HeldItem>(item.clone())
            .map_err(|e| format!("held item: {e}"))
            .and_then(HeldItem::into_held)
            .map_err(StoreError::Corrupt)
    }

    /// The canonical event from a stored item (or a stream's NEW_IMAGE of one).
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<RefundEvent, StoreError> {
        serde_dynamo::from_item::<_, EventItem>(item.clone())
            .map_err(|e| format!("event item: {e}"))
            .and_then(EventItem::into_event)
            .map_err(StoreError::Corrupt)
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
        match self.put_new(self.to_item(event)?).await? {
            None => Ok(Put::Stored),
            Some(stored) => Ok(Put::Duplicate(Box::new(Self::from_item(&stored)?))),
        }
    }

    async fn advance(&self, event: &RefundEvent) -> Result<Advance, StoreError> {
        let result = self
            .update_aggregate(event)
            .update_expression(
                "SET #status = :status, status_rank = :rank, last_event_id = :event_id, updated_at = :at, \
                 provider = :provider, kind = :kind, object_id = :object_id",
            )
            // Rank only rises; the event that last moved the object may move it again (a retry),
            // unless every audience of it was told (its told marker names it).
            .condition_expression(
                "attribute_not_exists(pk) OR status_rank < :rank OR \
                 (last_event_id = :event_id AND (attribute_not_exists(told_event_id) OR told_event_id <> :event_id))",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", AttributeValue::S(event.status.as_str().into()))
            .expression_attribute_values(":rank", AttributeValue::N(event.status.rank().to_string()))
            .expression_attribute_values(":event_id", AttributeValue::S(event.event_id.to_string()))
            .expression_attribute_values(":at", AttributeValue::S(event.received_at.to_string()))
            .expression_attribute_values(":provider", AttributeValue::S(event.provider.as_str().into()))
            .expression_attribute_values(":kind", AttributeValue::S(event.kind.as_str().into()))
            .expression_attribute_values(":object_id", AttributeValue::S(event.object_id.clone()))
            // Which of Stale and AlreadyTold a failed condition means, from the same request.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Advance::Advanced),
            Err(e) => {
                if let SdkError::ServiceError(ctx) = &e
                    && let UpdateItemError::ConditionalCheckFailedException(failed) = ctx.err()
                {
                    let told = failed.item().and_then(|i| i.get("told_event_id")).and_then(|v| v.as_s().ok());
                    return Ok(if told.is_some_and(|t| *t == event.event_id) {
                        Advance::AlreadyTold
                    } else {
                        Advance::Stale
                    });
                }
                Err(classify(&e))
            }
        }
    }

    async fn mark_told(&self, event: &RefundEvent) -> Result<(), StoreError> {
        let result = self
            .update_aggregate(event)
            .update_expression("SET told_event_id = :event_id")
            .condition_expression("last_event_id = :event_id")
            .expression_attribute_values(":event_id", AttributeValue::S(event.event_id.to_string()))
            .send()
            .await;
        match result {
            // A later event moved the object meanwhile: its own fan-out marks it.
            Err(e) if is_condition_failed(&e) => Ok(()),
            other => other.map(drop).map_err(|e| classify(&e)),
        }
    }

    async fn object(&self, provider: Provider, kind: EventKind, id: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let items = self.query_all(None, "pk", &layout::object_pk(provider, kind, id)).await?;
        let mut status = None;
        let mut events = Vec::new();
        for item in &items {
            let sk = item.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or_default();
            if sk == AGGREGATE_SK {
                status = item.get("status").and_then(|v| v.as_s().ok()).and_then(|s| s.parse::<Status>().ok());
            } else if sk.starts_with(EVENT_SK_PREFIX) {
                let e = Self::from_item(item)?;
                events.push(HistoryEntry::of(&e));
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        events.sort_by_key(|e| e.received_at);
        Ok(Some(ObjectRecord { provider, kind, id: id.to_owned(), status, events }))
    }

    async fn event(&self, event_id: &str) -> Result<Option<RefundEvent>, StoreError> {
        // The item keeps no `event_id` of its own (its keys make it): an operator's look-up by id
        // reads the table's events.
        let items = self.scan_all(Some(EVENT_SK_PREFIX)).await?;
        for item in &items {
            let event = Self::from_item(item)?;
            if event.event_id == event_id {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    async fn merchant_events(
        &self,
        merchant_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RefundEvent>, StoreError> {
        let items =
            self.query_all(Some(layout::MERCHANT_INDEX), "merchant_pk", &layout::merchant_pk(merchant_id)).await?;
        let mut events = items.iter().map(Self::from_item).collect::<Result<Vec<_>, _>>()?;
        events.retain(|e| since.is_none_or(|t| e.received_at >= t));
        events.sort_by_key(|e| e.received_at);
        Ok(events)
    }

    async fn untold(&self) -> Result<Vec<RefundEvent>, StoreError> {
        let items = self.scan_all(None).await?;
        let text =
            |item: &HashMap<String, AttributeValue>, name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let mut aggregates: HashMap<String, (Status, String, Option<String>)> = HashMap::new();
        for item in &items {
            if text(item, "sk").as_deref() == Some(AGGREGATE_SK) {
                let status = text(item, "status").and_then(|s| s.parse::<Status>().ok());
                if let (Some(pk), Some(status), Some(last)) = (text(item, "pk"), status, text(item, "last_event_id")) {
                    aggregates.insert(pk, (status, last, text(item, "told_event_id")));
                }
            }
        }
        let mut events = Vec::new();
        for item in &items {
            if !text(item, "sk").is_some_and(|sk| sk.starts_with(EVENT_SK_PREFIX)) {
                continue;
            }
            let event = Self::from_item(item)?;
            let aggregate = text(item, "pk").and_then(|pk| aggregates.get(&pk));
            if common::store::untold(aggregate.map(|(s, last, told)| (*s, last.as_str(), told.as_deref())), &event) {
                events.push(event);
            }
        }
        events.sort_by_key(|e| e.received_at);
        Ok(events)
    }

    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError> {
        let item = layout::to_item(&HeldItem::new(held, self.expires_at())).map_err(StoreError::Corrupt)?;
        match self.put_new(item).await? {
            None => Ok(Hold::Held),
            Some(stored) => {
                let status = stored.get("held_status").and_then(|v| v.as_s().ok()).and_then(|s| HeldStatus::parse(s));
                Ok(Hold::AlreadyHeld(status.unwrap_or(HeldStatus::Held)))
            }
        }
    }

    async fn held(&self, provider: Option<Provider>) -> Result<Vec<HeldDelivery>, StoreError> {
        let mut held = Vec::new();
        for item in self.query_all(Some(HELD_INDEX), "held_pk", HELD_SK).await? {
            let h = Self::held_from_item(&item)?;
            if provider.is_none_or(|p| p == h.provider) {
                held.push(h);
            }
        }
        newest_first(&mut held);
        Ok(held)
    }

    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError> {
        for provider in Provider::ALL {
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(layout::held_pk(provider, held_id)))
                .key("sk", AttributeValue::S(HELD_SK.into()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify(&e))?
                .item;
            if let Some(item) = item {
                return Self::held_from_item(&item).map(Some);
            }
        }
        Ok(None)
    }

    async fn resolve_held(&self, held: &HeldDelivery, resolution: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(layout::held_pk(held.provider, &held.held_id)))
            .key("sk", AttributeValue::S(HELD_SK.into()))
            .update_expression("SET held_status = :resolved, resolution = :resolution")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":resolved", AttributeValue::S(HeldStatus::Resolved.as_str().into()))
            .expression_attribute_values(":resolution", AttributeValue::S(resolution.to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}
