//! The product's store: one DynamoDB table.
//!
//! Item layout: see [`common::store::layout`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};

use common::event::{EventKind, IdempotencyKey, Provider, RefundEvent, Status};
use common::held::{HeldDelivery, HeldEntry, HeldStatus};
use common::store::layout::{
    self, AGGREGATE_SK, CHECKPOINT_SK, EVENT_SK_PREFIX, EventItem, HELD_CAP_SK, HELD_INDEX, HELD_SHARDS, HELD_SK,
    HeldIndexItem, HeldItem, LEGACY_HELD_INDEX,
};
use common::store::{
    Advance, Checkpoint, EventStore, HistoryEntry, Hold, ObjectRecord, Page, Put, Record, StoreError, Told,
};
use common::timestamp::Timestamp;

/// Items one `untold` page scans: a page's keys and markers, never bodies, in well under a second.
const UNTOLD_SCAN_PAGE: i32 = 500;
/// Items one `records` page scans: bodies included, so fewer.
const RECORDS_SCAN_PAGE: i32 = 100;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: Duration,
    /// New held items per provider per minute, when capped (the webhook functions).
    held_cap: Option<u32>,
}

impl DynamoStore {
    /// Building the store makes no call to AWS: the SDK resolves credentials on first use.
    pub fn new(client: Client, table: impl Into<String>, retention: Duration) -> Self {
        DynamoStore { client, table: table.into(), retention, held_cap: None }
    }

    /// Caps new held items at `per_minute` per provider: past it, `hold` fails with
    /// [`StoreError::HeldCapReached`] (a 503) before anything is written.
    pub fn with_held_cap(mut self, per_minute: u32) -> Self {
        self.held_cap = Some(per_minute);
        self
    }

    fn expires_at(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        now.saturating_add(i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX))
    }

    /// Counts one new held item of `provider` in this minute's counter: refused once the count
    /// is at the cap. One small UpdateItem, only for deliveries that are held.
    async fn count_held(&self, provider: Provider, cap: u32) -> Result<(), StoreError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(layout::held_cap_pk(provider, now.div_euclid(60))))
            .key("sk", AttributeValue::S(HELD_CAP_SK.into()))
            .update_expression("ADD held_count :one SET expires_at = if_not_exists(expires_at, :expires)")
            .condition_expression("attribute_not_exists(held_count) OR held_count < :cap")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()))
            .expression_attribute_values(":expires", AttributeValue::N((now + 3600).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::HeldCapReached { provider, cap }),
            Err(e) => Err(classify(&e)),
        }
    }

    /// One page of a held index partition, newest first, below `after`.
    async fn held_partition(
        &self,
        index: &str,
        key: (&str, String),
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<HeldEntry>, bool), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(if after.is_some() { "#key = :key AND held_sk < :after" } else { "#key = :key" })
            .expression_attribute_names("#key", key.0)
            .expression_attribute_values(":key", AttributeValue::S(key.1))
            // The legacy index projects whole items: ask for the listing's fields only (named
            // through placeholders, since some are DynamoDB reserved words).
            .projection_expression("#f0, #f1, #f2, #f3, #f4, #f5")
            .scan_index_forward(false)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        for (i, field) in
            ["held_id", "provider", "received_at", "reason", "held_status", "resolution"].iter().enumerate()
        {
            query = query.expression_attribute_names(format!("#f{i}"), *field);
        }
        if let Some(after) = after {
            query = query.expression_attribute_values(":after", AttributeValue::S(after.to_owned()));
        }
        let page = query.send().await.map_err(|e| classify(&e))?;
        let mut entries = Vec::new();
        for item in page.items.unwrap_or_default() {
            let entry: HeldIndexItem =
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(format!("held index item: {e}")))?;
            entries.push(entry.into_entry());
        }
        let more = entries.len() > limit || page.last_evaluated_key.is_some();
        entries.truncate(limit);
        Ok((entries, more))
    }

    /// A strongly consistent GetItem of one item, to be given a projection or sent.
    fn get(&self, pk: String, sk: &str) -> GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
    }

    /// The told markers of an object's aggregate, read only when `untold` did not meet it on
    /// the same page.
    async fn aggregate_markers(&self, pk: &str) -> Result<Option<Markers>, StoreError> {
        let item = self
            .get(pk.to_owned(), AGGREGATE_SK)
            .projection_expression("#status, last_event_id, told_event_id")
            .expression_attribute_names("#status", "status")
            .send()
            .await
            .map_err(|e| classify(&e))?
            .item;
        Ok(item.as_ref().and_then(Markers::of))
    }

    /// One event item, whole.
    async fn event_item(&self, pk: &str, sk: &str) -> Result<Option<RefundEvent>, StoreError> {
        let item = self.get(pk.to_owned(), sk).send().await.map_err(|e| classify(&e))?.item;
        item.as_ref().map(Self::from_item).transpose()
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

/// What `untold` needs of an aggregate: its status, the event that last moved it, the event
/// whose every audience was told.
struct Markers {
    status: Status,
    last_event_id: String,
    told_event_id: Option<String>,
}

impl Markers {
    fn of(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        Some(Markers {
            status: text("status")?.parse().ok()?,
            last_event_id: text("last_event_id")?,
            told_event_id: text("told_event_id"),
        })
    }
}

/// A scan cursor (`LastEvaluatedKey`: the table's `pk` and `sk`) as text, and back.
fn cursor_text(key: &HashMap<String, AttributeValue>) -> Option<String> {
    let text = |name: &str| key.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some(serde_json::json!({ "pk": text("pk")?, "sk": text("sk")? }).to_string())
}

fn cursor_key(text: &str) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let bad = || StoreError::Corrupt(format!("not a scan cursor: {}", common::echo::bounded(text)));
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let part = |name: &str| value.get(name).and_then(|v| v.as_str()).map(|s| AttributeValue::S(s.to_owned()));
    Ok(HashMap::from([("pk".to_owned(), part("pk").ok_or_else(bad)?), ("sk".to_owned(), part("sk").ok_or_else(bad)?)]))
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
            // Which of Stale and AlreadyTold a failed condition means, and which audiences a
            // retry already told, from the same request.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let record = out.attributes.as_ref().and_then(|a| a.get("told_to")).and_then(|v| v.as_s().ok());
                Ok(Advance::Advanced(Told::of_record(record.map(String::as_str), event.event_id.as_str())))
            }
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

    async fn mark_told(&self, event: &RefundEvent, told: Told, all: bool) -> Result<(), StoreError> {
        let result = self
            .update_aggregate(event)
            .update_expression(if all {
                "SET told_to = :told, told_event_id = :event_id"
            } else {
                "SET told_to = :told"
            })
            .condition_expression("last_event_id = :event_id")
            .expression_attribute_values(":event_id", AttributeValue::S(event.event_id.to_string()))
            .expression_attribute_values(":told", AttributeValue::S(told.record(event.event_id.as_str())))
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

    async fn object_event(
        &self,
        provider: Provider,
        kind: EventKind,
        object_id: &str,
        event_id: &str,
    ) -> Result<Option<RefundEvent>, StoreError> {
        // One Query of the object's partition: its aggregate and a handful of events.
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :events)")
                .expression_attribute_values(":pk", AttributeValue::S(layout::object_pk(provider, kind, object_id)))
                .expression_attribute_values(":events", AttributeValue::S(EVENT_SK_PREFIX.into()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            for item in page.items.unwrap_or_default() {
                let event = Self::from_item(&item)?;
                if event.event_id == event_id {
                    return Ok(Some(event));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(None);
            }
        }
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

    /// One Scan page of keys and markers (a projection: no event JSON, payload or held body).
    /// An event's keys say its id and status, so only the events still to tell are read whole.
    /// An aggregate sorts before its object's events (`AGG` < `EVT#`), so it is mostly on the
    /// same page; when not, its markers are read on their own.
    async fn untold(&self, after: Option<String>) -> Result<Page<RefundEvent>, StoreError> {
        let page = self
            .client
            .scan()
            .table_name(&self.table)
            .projection_expression("pk, sk, #status, last_event_id, told_event_id")
            .expression_attribute_names("#status", "status")
            .consistent_read(true)
            .limit(UNTOLD_SCAN_PAGE)
            .set_exclusive_start_key(after.as_deref().map(cursor_key).transpose()?)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let items = page.items.unwrap_or_default();
        let text = |item: &HashMap<String, AttributeValue>, name: &str| {
            item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
        };
        let mut aggregates: HashMap<String, Option<Markers>> = HashMap::new();
        for item in &items {
            if text(item, "sk") == AGGREGATE_SK {
                aggregates.insert(text(item, "pk"), Markers::of(item));
            }
        }
        let mut events = Vec::new();
        for item in &items {
            let (pk, sk) = (text(item, "pk"), text(item, "sk"));
            if !sk.starts_with(EVENT_SK_PREFIX) {
                continue;
            }
            let keys = layout::EventKeys::parse(&pk, &sk).map_err(StoreError::Corrupt)?;
            let event_id = keys.idempotency_key().event_id();
            if !aggregates.contains_key(&pk) {
                let markers = self.aggregate_markers(&pk).await?;
                aggregates.insert(pk.clone(), markers);
            }
            let aggregate = aggregates.get(&pk).and_then(Option::as_ref);
            let aggregate = aggregate.map(|m| (m.status, m.last_event_id.as_str(), m.told_event_id.as_deref()));
            if common::store::is_untold(aggregate, keys.status, event_id.as_str())
                && let Some(event) = self.event_item(&pk, &sk).await?
            {
                events.push(event);
            }
        }
        events.sort_by_key(|e| e.received_at);
        let next = page.last_evaluated_key.as_ref().and_then(cursor_text);
        Ok(Page { items: events, next })
    }

    async fn hold(&self, held: &HeldDelivery) -> Result<Hold, StoreError> {
        let item = layout::to_item(&HeldItem::new(held)).map_err(StoreError::Corrupt)?;
        // Counted before the write: a body held already still counts, so a sender retrying
        // past the cap is answered 503 as well, and retries later.
        if let Some(cap) = self.held_cap {
            self.count_held(held.provider, cap).await?;
        }
        match self.put_new(item).await? {
            None => Ok(Hold::Held),
            Some(stored) => {
                let status = stored.get("held_status").and_then(|v| v.as_s().ok()).and_then(|s| HeldStatus::parse(s));
                Ok(Hold::AlreadyHeld(status.unwrap_or(HeldStatus::Held)))
            }
        }
    }

    /// A page is each shard's newest below `after`, merged: one Query per shard (eight per
    /// provider) and one of the legacy index, each of the listing's fields only.
    async fn held(
        &self,
        provider: Option<Provider>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<HeldEntry>, StoreError> {
        let mut partitions: Vec<(&str, (&str, String))> = Vec::new();
        for p in Provider::ALL.into_iter().filter(|p| provider.is_none_or(|only| only == *p)) {
            for shard in 0..HELD_SHARDS {
                partitions.push((HELD_INDEX, ("held_shard", layout::held_shard_key(p, shard))));
            }
        }
        partitions.push((LEGACY_HELD_INDEX, ("held_pk", HELD_SK.to_owned())));
        let mut entries = Vec::new();
        let mut more = false;
        for (index, key) in partitions {
            let (mut found, more_there) = self.held_partition(index, key, after.as_deref(), limit).await?;
            found.retain(|h| provider.is_none_or(|p| h.provider == p));
            more |= more_there;
            entries.extend(found);
        }
        let mut page = common::store::page_of_held(entries, None, None, limit);
        if more && page.next.is_none() {
            page.next = page.items.last().map(|h| common::store::held_position(h.received_at, &h.held_id));
        }
        Ok(page)
    }

    async fn held_one(&self, held_id: &str) -> Result<Option<HeldDelivery>, StoreError> {
        for provider in Provider::ALL {
            let item =
                self.get(layout::held_pk(provider, held_id), HELD_SK).send().await.map_err(|e| classify(&e))?.item;
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
            // Resolved, it expires as events do; held, it never did.
            .update_expression("SET held_status = :resolved, resolution = :resolution, expires_at = :expires")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":expires", AttributeValue::N(self.expires_at().to_string()))
            .expression_attribute_values(":resolved", AttributeValue::S(HeldStatus::Resolved.as_str().into()))
            .expression_attribute_values(":resolution", AttributeValue::S(resolution.to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    async fn checkpoint(&self, provider: Provider) -> Result<Option<Checkpoint>, StoreError> {
        let item =
            self.get(layout::checkpoint_pk(provider), CHECKPOINT_SK).send().await.map_err(|e| classify(&e))?.item;
        let Some(json) = item.as_ref().and_then(|i| i.get("checkpoint")).and_then(|v| v.as_s().ok()) else {
            return Ok(None);
        };
        serde_json::from_str(json).map(Some).map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))
    }

    /// One unconditional PutItem: the reconcile function runs one sweep at a time (reserved
    /// concurrency 1), and the stream's filter leaves this item out of the fan-out.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let json = serde_json::to_string(checkpoint).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(layout::checkpoint_pk(checkpoint.provider)))
            .item("sk", AttributeValue::S(CHECKPOINT_SK.into()))
            .item("checkpoint", AttributeValue::S(json))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }

    /// `BatchGetItem` of the keys only, 100 a request (DynamoDB's most), consistent, and again
    /// for what DynamoDB leaves unprocessed: reads, never a write.
    async fn existing(&self, events: &[RefundEvent]) -> Result<HashSet<IdempotencyKey>, StoreError> {
        let mut by_key: HashMap<(String, String), IdempotencyKey> = HashMap::new();
        for e in events {
            by_key.insert(
                (layout::object_pk(e.provider, e.kind, &e.object_id), layout::event_sk(e)),
                e.idempotency_key.clone(),
            );
        }
        let keys: Vec<(String, String)> = by_key.keys().cloned().collect();
        let mut found = HashSet::new();
        for chunk in keys.chunks(100) {
            let mut ask: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|(pk, sk)| {
                    HashMap::from([
                        ("pk".to_owned(), AttributeValue::S(pk.clone())),
                        ("sk".to_owned(), AttributeValue::S(sk.clone())),
                    ])
                })
                .collect();
            let mut rounds = 0u32;
            while !ask.is_empty() {
                // What DynamoDB leaves unprocessed is asked again after a growing pause.
                if rounds == 8 {
                    return Err(StoreError::Throttled("BatchGetItem kept keys unprocessed".into()));
                }
                if rounds > 0 {
                    tokio::time::sleep(Duration::from_millis(25 << rounds)).await;
                }
                rounds += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut ask)))
                    .projection_expression("pk, sk")
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                for item in answer.responses.unwrap_or_default().remove(&self.table).unwrap_or_default() {
                    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                    if let Some(key) = by_key.get(&(text("pk"), text("sk"))) {
                        found.insert(key.clone());
                    }
                }
                if let Some(left) = answer.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    ask = left.keys;
                }
            }
        }
        Ok(found)
    }

    /// A consistent scan of event and held items, bodies included (up to DynamoDB's 1 MB a page).
    async fn records(&self, after: Option<String>) -> Result<Page<Record>, StoreError> {
        let page = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(sk, :event) OR sk = :held")
            .expression_attribute_values(":event", AttributeValue::S(EVENT_SK_PREFIX.into()))
            .expression_attribute_values(":held", AttributeValue::S(HELD_SK.into()))
            .consistent_read(true)
            .limit(RECORDS_SCAN_PAGE)
            .set_exclusive_start_key(after.as_deref().map(cursor_key).transpose()?)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let items = page
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| match item.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) {
                Some(HELD_SK) => Self::held_from_item(item).map(|h| Record::Held(Box::new(h))),
                _ => Self::from_item(item).map(|e| Record::Event(Box::new(e))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next: page.last_evaluated_key.as_ref().and_then(cursor_text) })
    }

    /// One UpdateItem of the item's `event` and raw payload (packed again), so its TTL and keys
    /// stay; the fan-out reads only INSERTs from the stream, so nobody is told again.
    async fn rewrite_event(&self, event: &RefundEvent) -> Result<(), StoreError> {
        let item = self.to_item(event)?;
        let value = |name: &str| {
            item.get(name).cloned().ok_or_else(|| StoreError::Corrupt(format!("event item without {name}")))
        };
        let (raw, gone) = if item.contains_key("raw_packed") {
            ("raw_packed", "raw_payload, raw_deflate")
        } else {
            ("raw_payload", "raw_packed, raw_deflate")
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", value("pk")?)
            .key("sk", value("sk")?)
            .update_expression(format!("SET #event = :event, {raw} = :raw REMOVE {gone}"))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#event", "event")
            .expression_attribute_values(":event", value("event")?)
            .expression_attribute_values(":raw", value(raw)?)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }

    async fn rewrite_held(&self, held: &HeldDelivery) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(layout::held_pk(held.provider, &held.held_id)))
            .key("sk", AttributeValue::S(HELD_SK.into()))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#body", "body")
            .expression_attribute_values(":body", AttributeValue::B(held.body.clone().into()));
        let update = match &held.query {
            Some(query) => update
                .update_expression("SET #body = :body, #query = :query")
                .expression_attribute_names("#query", "query")
                .expression_attribute_values(":query", AttributeValue::S(query.clone())),
            None => update.update_expression("SET #body = :body"),
        };
        update.send().await.map(drop).map_err(|e| classify(&e))
    }
}
