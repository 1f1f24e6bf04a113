//! The DynamoDB item layout, free of the SDK so the `events/` generator and the tests build
//! stream records exactly as the table holds them.
//!
//! Every item of one object shares a partition, so its history is one `Query`:
//! - event: `pk = OBJ#<provider>#<kind>#<object id>`, `sk = EVT#<event type>#<status>`. `pk + sk`
//!   is exactly the idempotency key, so the one conditional `PutItem` (`attribute_not_exists(pk)`)
//!   is the dedup. The item carries the canonical event as JSON (`event`) less what the keys
//!   say (provider, kind, object id, event type, status, and so the idempotency key and event
//!   id), the raw payload (`raw_packed`: DEFLATE primed with the provider's dictionary, or
//!   `raw_payload` as text where that would not shrink it), and `expires_at` for TTL: nothing
//!   twice, so that an event item stays within one write unit (1 KB). Items of the earlier
//!   layout (the whole event, the payload as text or `raw_deflate`) read too.
//! - aggregate: same `pk`, `sk = AGG`, holding `status`, `status_rank` and `last_event_id`;
//!   updated only when the rank rises.
//! - GSI `by_merchant`: `merchant_pk = MERCHANT#<merchant id>`, `merchant_sk = <received at>#<event id>`,
//!   projecting the keys and `event` only (not the raw payload: see template.yaml).
//! - held delivery: `pk = HELD#<provider>#<held id>`, `sk = HELD`, written with
//!   `attribute_not_exists(pk)` so the same body held twice is one item; `body` (binary, exactly
//!   as received), `reason`, `held_status`, and the sparse GSI `by_held_provider`
//!   (`held_shard = HELD#<provider>#<0-7>`, `held_sk = <received at>#<held id>`) that lists them
//!   without a scan and without their bodies. Spread over eight shards a provider, held writes
//!   are not capped by one index partition. Items held before it carry `held_pk = HELD` for the
//!   legacy index `by_held` instead. An item has no `expires_at` while it is held: it expires
//!   only once resolved.
//! - held cap: `pk = HELDCAP#<provider>#<minute>`, `sk = HELDCAP`, a counter of the minute's new
//!   held items, expiring after an hour.
//! - reconciliation checkpoint: `pk = RECON#<provider>`, `sk = RECON`, the provider's
//!   [`Checkpoint`](crate::store::Checkpoint) as JSON (`checkpoint`).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
pub use serde_dynamo::{AttributeValue, Item};
use serde_json::Value;

use crate::event::{EventKind, IdempotencyKey, Proof, Provider, RefundEvent, key_part};
use crate::held::{HeldDelivery, HeldEntry, HeldNotice, HeldStatus};
use crate::store::packed;
use crate::timestamp::Timestamp;

pub const EVENT_SK_PREFIX: &str = "EVT#";
pub const AGGREGATE_SK: &str = "AGG";
pub const HELD_SK: &str = "HELD";
pub const MERCHANT_INDEX: &str = "by_merchant";
pub const HELD_INDEX: &str = "by_held_provider";
/// The held index of items written before `by_held_provider`: one partition, `held_pk = HELD`.
pub const LEGACY_HELD_INDEX: &str = "by_held";
pub const HELD_CAP_SK: &str = "HELDCAP";
pub const CHECKPOINT_SK: &str = "RECON";

/// A provider's reconciliation checkpoint item's partition.
pub fn checkpoint_pk(provider: Provider) -> String {
    format!("RECON#{provider}")
}
/// Shards of each provider's held index partition.
pub const HELD_SHARDS: u8 = 8;

/// DynamoDB's limits, checked before the write: a write beyond them fails on every retry, so
/// such a delivery is held rather than answered 503 forever.
pub const MAX_PARTITION_KEY: usize = 2048;
pub const MAX_SORT_KEY: usize = 1024;
pub const MAX_ITEM: usize = 400 * 1024;

/// `value` (an [`EventItem`] or a [`HeldItem`]) as an item: serde_dynamo's own, or with its
/// `aws-sdk-dynamodb` feature the SDK's attribute map.
pub fn to_item<I: From<Item>>(value: &impl Serialize) -> Result<I, String> {
    serde_dynamo::to_item(value).map_err(|e| format!("item: {e}"))
}

/// `value` in DynamoDB's JSON form (`{"pk": {"S": "..."}}`), as stream records carry it.
pub fn dynamodb_json(value: &impl Serialize) -> Result<Value, String> {
    serde_json::to_value(to_item::<Item>(value)?).map_err(|e| format!("item: {e}"))
}

/// DynamoDB's size of an item: each attribute's name and value.
pub fn item_size(item: &Item) -> usize {
    fn value_size(value: &AttributeValue) -> usize {
        match value {
            AttributeValue::S(s) => s.len(),
            // A number is at most 21 bytes: about one per two digits, and one more.
            AttributeValue::N(n) => n.len().div_ceil(2) + 1,
            AttributeValue::B(b) => b.len(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
            AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
            AttributeValue::L(v) => 3 + v.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
            AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        }
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The part of `event` that would break a DynamoDB limit, or `Ok`. Every store applies these, so
/// the local runner answers as the product does.
pub fn check_limits(event: &RefundEvent) -> Result<(), &'static str> {
    let pk = object_pk(event.provider, event.kind, &event.object_id).len();
    if pk > MAX_PARTITION_KEY {
        return Err("object_id");
    }
    if event_sk(event).len() > MAX_SORT_KEY {
        return Err("event_type");
    }
    let merchant = event.merchant_id.as_ref().map_or(0, |m| MERCHANT_PK_PREFIX.len() + m.len());
    if merchant > MAX_PARTITION_KEY {
        return Err("merchant_id");
    }
    // The event copies a payload's fields a few times at most, and JSON escaping at most doubles
    // one (a form's `%01` is `\u0001`): an item far below the limit is not built to be measured.
    let bound = 2 * pk + 2 * merchant + 8 * event.raw_payload.len() + 2048;
    if bound > MAX_ITEM {
        // An item that cannot be built cannot be written either: held, like one too large.
        let size = to_item(&EventItem::new(event, i64::MAX)).map_or(usize::MAX, |item| item_size(&item));
        if size > MAX_ITEM {
            return Err("body");
        }
    }
    Ok(())
}

pub fn object_pk(provider: Provider, kind: EventKind, id: &str) -> String {
    format!("OBJ#{provider}#{}#{}", kind.as_str(), key_part(id))
}

const MERCHANT_PK_PREFIX: &str = "MERCHANT#";

/// The merchant index's partition: every event of one merchant.
pub fn merchant_pk(merchant_id: &str) -> String {
    format!("{MERCHANT_PK_PREFIX}{merchant_id}")
}

pub fn event_sk(event: &RefundEvent) -> String {
    format!("{EVENT_SK_PREFIX}{}#{}", key_part(&event.event_type), event.status)
}

/// An event's item. The raw payload is in exactly one of `raw_packed` (packed.rs: a dictionary
/// id, then DEFLATE primed with it), `raw_payload` (text, where packing would not shrink it) or,
/// in items of the earlier layout, `raw_deflate` (DEFLATE without a dictionary). The merchant
/// index's copy has the keys and `event` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventItem {
    pub pk: String,
    pub sk: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_packed: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_deflate: Option<ByteBuf>,
    #[serde(default, rename = "raw_payload", skip_serializing_if = "Option::is_none")]
    pub raw_text: Option<String>,
    /// The TTL, in unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_sk: Option<String>,
}

impl EventItem {
    /// The item written for `event`; `expires_at` is the TTL in unix seconds.
    pub fn new(event: &RefundEvent, expires_at: i64) -> Self {
        let (raw_packed, raw_text) = match packed::pack(event.provider, event.raw_payload.as_bytes()) {
            Some(packed) if packed.len() < event.raw_payload.len() => (Some(ByteBuf::from(packed)), None),
            _ => (None, Some(event.raw_payload.clone())),
        };
        let merchant = event.merchant_id.as_ref();
        EventItem {
            pk: object_pk(event.provider, event.kind, &event.object_id),
            sk: event_sk(event),
            event: event_json(event),
            raw_packed,
            raw_deflate: None,
            raw_text,
            expires_at: Some(expires_at),
            merchant_pk: merchant.map(|m| merchant_pk(m)),
            merchant_sk: merchant.map(|_| format!("{}#{}", event.received_at, event.event_id)),
        }
    }

    /// The canonical event back, its raw payload byte for byte (empty from the merchant index's
    /// copy, which does not project it).
    pub fn into_event(self) -> Result<RefundEvent, String> {
        let mut event = event_from_parts(&self.pk, &self.sk, &self.event)?;
        let (packed, deflated) =
            (self.raw_packed.as_ref().map(|b| b.as_slice()), self.raw_deflate.as_ref().map(|b| b.as_slice()));
        event.raw_payload = raw_payload(packed, deflated, self.raw_text.as_deref())?;
        Ok(event)
    }
}

/// What the keys say, and so what the item's `event` JSON leaves out.
const IN_THE_KEYS: [&str; 7] = ["event_id", "idempotency_key", "provider", "kind", "event_type", "status", "object_id"];

/// The item's `event` attribute: the canonical event less the raw payload (an attribute of its
/// own, not projected into the merchant index) and less what the keys say.
fn event_json(event: &RefundEvent) -> String {
    let canonical = RefundEvent { raw_payload: String::new(), ..event.clone() };
    let mut value = serde_json::to_value(&canonical).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for key in IN_THE_KEYS {
            map.remove(key);
        }
    }
    value.to_string()
}

/// The canonical event of an item from its keys and its `event` JSON (the raw payload is the
/// caller's to add). An item in the older layout has the whole event, key fields included, in its
/// JSON, which is then read as it is.
fn event_from_parts(pk: &str, sk: &str, json: &str) -> Result<RefundEvent, String> {
    let mut value: Value = serde_json::from_str(json).map_err(|e| format!("`event` attribute: {e}"))?;
    let map = value.as_object_mut().ok_or("`event` attribute is not an object")?;
    if !map.contains_key("provider") {
        let keys = EventKeys::parse(pk, sk)?;
        let key = keys.idempotency_key();
        map.insert("event_id".into(), key.event_id().as_str().into());
        map.insert("idempotency_key".into(), key.as_str().into());
        map.insert("provider".into(), keys.provider.as_str().into());
        map.insert("kind".into(), keys.kind.into());
        map.insert("event_type".into(), keys.event_type.into());
        map.insert("status".into(), keys.status.as_str().into());
        map.insert("object_id".into(), keys.object_id.into());
    }
    serde_json::from_value(value).map_err(|e| format!("`event` attribute: {e}"))
}

/// What an event item's keys say: its whole identity.
pub struct EventKeys {
    pub provider: Provider,
    pub kind: String,
    pub object_id: String,
    pub event_type: String,
    pub status: crate::event::Status,
}

impl EventKeys {
    pub fn parse(pk: &str, sk: &str) -> Result<Self, String> {
        let unescape = |s: &str| s.replace("%23", "#").replace("%25", "%");
        let mut parts = pk.splitn(4, '#');
        let (Some("OBJ"), Some(provider), Some(kind), Some(object_id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("`pk` is not an event's: {pk}"));
        };
        let (event_type, status) = sk
            .strip_prefix(EVENT_SK_PREFIX)
            .and_then(|rest| rest.rsplit_once('#'))
            .ok_or_else(|| format!("`sk` is not an event's: {sk}"))?;
        Ok(EventKeys {
            provider: provider.parse().map_err(|e: crate::event::UnknownProvider| e.to_string())?,
            kind: kind.to_owned(),
            object_id: unescape(object_id),
            event_type: unescape(event_type),
            status: status.parse().map_err(|_| format!("`sk` has an unknown status: {sk}"))?,
        })
    }

    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::new(self.provider, &self.object_id, &self.event_type, self.status)
    }
}

/// The raw payload back, byte for byte, from whichever of its attributes an item has.
fn raw_payload(packed: Option<&[u8]>, deflated: Option<&[u8]>, text: Option<&str>) -> Result<String, String> {
    let bytes = match (packed, deflated, text) {
        (Some(packed), _, _) => packed::unpack(packed).map_err(|e| format!("`raw_packed`: {e}"))?,
        (None, Some(deflated), _) => packed::inflate(deflated, &[]).map_err(|e| format!("`raw_deflate`: {e}"))?,
        (None, None, text) => return Ok(text.unwrap_or_default().to_owned()),
    };
    String::from_utf8(bytes).map_err(|_| "the packed raw payload is not UTF-8".into())
}

/// What a stream record's `NewImage` is, for the fan-out.
#[derive(Debug, PartialEq, Eq)]
pub enum Image {
    Event(Box<RefundEvent>),
    /// What the fan-out tells of a held item: not its body.
    Held(HeldNotice),
    /// An aggregate, or anything else the table holds that is not told.
    Other,
}

/// Reads a stream image; the error names what it could not read.
pub fn read_image(image: Item) -> Result<Image, String> {
    let sk = match image.get("sk") {
        Some(AttributeValue::S(sk)) => sk.as_str(),
        _ => return Ok(Image::Other),
    };
    if sk == HELD_SK {
        return serde_dynamo::from_item(image).map(Image::Held).map_err(|e| format!("held item: {e}"));
    }
    if !sk.starts_with(EVENT_SK_PREFIX) {
        return Ok(Image::Other);
    }
    let item: EventItem = serde_dynamo::from_item(image).map_err(|e| format!("event: {e}"))?;
    item.into_event().map(|e| Image::Event(Box::new(e))).map_err(|e| format!("event: {e}"))
}

pub fn held_pk(provider: Provider, held_id: &str) -> String {
    format!("HELD#{provider}#{held_id}")
}

/// The held index partition of a held item: its provider's, and a shard from its id's hash.
pub fn held_shard(provider: Provider, held_id: &str) -> String {
    let digit = held_id.bytes().last().map_or(0, |b| (b as char).to_digit(16).unwrap_or(u32::from(b)));
    held_shard_key(provider, (digit % u32::from(HELD_SHARDS)) as u8)
}

pub fn held_shard_key(provider: Provider, shard: u8) -> String {
    format!("HELD#{provider}#{shard}")
}

/// The counter of `provider`'s new held items in one minute (`minute` = Unix time / 60).
pub fn held_cap_pk(provider: Provider, minute: i64) -> String {
    format!("HELDCAP#{provider}#{minute}")
}

/// A held delivery's item: the body exactly as received, and the sparse index `by_held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldItem {
    pub pk: String,
    pub sk: String,
    pub held_id: String,
    pub provider: Provider,
    pub received_at: Timestamp,
    pub reason: String,
    pub held_status: HeldStatus,
    /// The kept headers as a JSON object.
    #[serde(default = "no_headers")]
    pub headers: String,
    pub body: ByteBuf,
    /// Set once it is resolved: a delivery still held never expires unseen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    // The index keys are written, never read back: an item without them still reads.
    /// The legacy index's key: read, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_shard: Option<String>,
    #[serde(default)]
    pub held_sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Absent from items held before they recorded it: [`HeldItem::into_held`] takes the
    /// provider's weakest proof then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

/// What the held index keeps of a held item: the listing's fields, never the body.
#[derive(Debug, Clone, Deserialize)]
pub struct HeldIndexItem {
    pub held_id: String,
    pub provider: Provider,
    pub received_at: Timestamp,
    pub reason: String,
    pub held_status: HeldStatus,
    #[serde(default)]
    pub resolution: Option<String>,
}

impl HeldIndexItem {
    pub fn into_entry(self) -> HeldEntry {
        HeldEntry {
            held_id: self.held_id,
            provider: self.provider,
            received_at: self.received_at,
            reason: self.reason,
            status: self.held_status,
            resolution: self.resolution,
        }
    }
}

fn no_headers() -> String {
    "{}".into()
}

impl HeldItem {
    /// The item of a newly held delivery: without `expires_at`, which resolving it sets.
    pub fn new(held: &HeldDelivery) -> Self {
        let headers: serde_json::Map<String, Value> =
            held.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        HeldItem {
            pk: held_pk(held.provider, &held.held_id),
            sk: HELD_SK.into(),
            held_id: held.held_id.clone(),
            provider: held.provider,
            received_at: held.received_at,
            reason: held.reason.clone(),
            held_status: held.status,
            headers: Value::Object(headers).to_string(),
            body: ByteBuf::from(held.body.clone()),
            expires_at: None,
            held_pk: None,
            held_shard: Some(held_shard(held.provider, &held.held_id)),
            held_sk: crate::store::held_position(held.received_at, &held.held_id),
            content_type: held.content_type.clone(),
            query: held.query.clone(),
            resolution: held.resolution.clone(),
            proof: Some(held.proof),
            delivery_id: held.delivery_id.clone(),
        }
    }

    pub fn into_held(self) -> Result<HeldDelivery, String> {
        let headers: serde_json::Map<String, Value> =
            serde_json::from_str(&self.headers).map_err(|e| format!("held item's `headers`: {e}"))?;
        Ok(HeldDelivery {
            held_id: self.held_id,
            provider: self.provider,
            received_at: self.received_at,
            content_type: self.content_type,
            body: self.body.into_vec(),
            reason: self.reason,
            query: self.query,
            headers: headers.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect(),
            status: self.held_status,
            resolution: self.resolution,
            proof: self.proof.unwrap_or(self.provider.proof()),
            delivery_id: self.delivery_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(provider: Provider, raw: &str) -> RefundEvent {
        let key = IdempotencyKey::new(provider, "o_1", "refund", crate::event::Status::Succeeded);
        serde_json::from_value(serde_json::json!({
            "event_id": key.event_id(), "idempotency_key": key, "provider": provider,
            "kind": "refund", "event_type": "refund", "status": "succeeded", "object_id": "o_1",
            "received_at": "2026-12-01T00:00:00Z", "raw_payload": raw,
        }))
        .unwrap()
    }

    #[test]
    fn a_payload_is_packed_only_when_that_is_smaller_and_comes_back_exactly() {
        let json = r#"{"event":"order.refunded","order":{"uuid":"4DACB7B0","total":9900,"currency":"USD"},"order_total":9900}"#;
        for provider in Provider::ALL {
            let item = EventItem::new(&event_of(provider, json), 1);
            assert!(item.raw_packed.is_some() && item.raw_text.is_none(), "{provider}");
            assert_eq!(item.into_event().unwrap().raw_payload, json);
        }
        // Short, unrepetitive text does not shrink: kept as text.
        let tiny = EventItem::new(&event_of(Provider::Foloosi, "q"), 1);
        assert_eq!((tiny.raw_packed.as_ref(), tiny.raw_text.as_deref()), (None, Some("q")));
        assert_eq!(tiny.into_event().unwrap().raw_payload, "q");
    }

    #[test]
    fn an_item_of_the_earlier_layout_still_reads_and_a_corrupt_one_is_an_error() {
        assert_eq!(raw_payload(None, None, Some("{\"a\":1}")).unwrap(), "{\"a\":1}");
        // `raw_deflate`: DEFLATE without a dictionary, and without an id.
        let deflated = b"\xab\x56\x4a\x54\xb2\x32\xac\x05\x00";
        assert_eq!(raw_payload(None, Some(deflated), None).unwrap(), "{\"a\":1}");
        assert!(raw_payload(None, Some(b"\xff\xff not deflate"), None).unwrap_err().contains("raw_deflate"));
        assert!(raw_payload(Some(b"\x00\xff\xff"), None, None).unwrap_err().contains("raw_packed"));
        // Packed bytes that are not UTF-8.
        let latin1 = packed::pack(Provider::Memberful, b"caf\xe9 caf\xe9 caf\xe9").unwrap();
        assert!(raw_payload(Some(&latin1), None, None).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn an_event_comes_back_from_its_keys_and_the_json_that_leaves_them_out() {
        let key = IdempotencyKey::new(Provider::Rainforest, "rfd_#1%", "refund.#x", crate::event::Status::Failed);
        let full = serde_json::json!({
            "event_id": key.event_id(), "idempotency_key": key, "provider": "rainforest",
            "kind": "refund", "event_type": "refund.#x", "status": "failed", "object_id": "rfd_#1%",
            "received_at": "2026-12-01T00:00:00Z", "reason": "card expired",
        });
        let event: RefundEvent = serde_json::from_value(full.clone()).unwrap();
        let item = EventItem::new(&event, 1);
        let json: Value = serde_json::from_str(&item.event).unwrap();
        for key in IN_THE_KEYS {
            assert!(json.get(key).is_none(), "{key} is in the keys, not in `event`");
        }
        assert_eq!(item.clone().into_event().unwrap(), event);
        // An item in the older layout: the whole event in its JSON.
        assert_eq!(event_from_parts(&item.pk, &item.sk, &full.to_string()).unwrap(), event);
        assert!(event_from_parts("HELD#x", &item.sk, &item.event).is_err());
    }

    /// The merchant index's partition key is measured as it is built: at DynamoDB's 2,048
    /// bytes it is written, one byte more and the delivery is held.
    #[test]
    fn a_merchant_key_beyond_dynamodbs_limit_is_refused_before_the_write() {
        let mut event = event_of(Provider::Rainforest, "{}");
        let room = MAX_PARTITION_KEY - merchant_pk("").len();
        event.merchant_id = Some("m".repeat(room));
        assert_eq!(merchant_pk(event.merchant_id.as_deref().unwrap()).len(), MAX_PARTITION_KEY);
        assert_eq!(check_limits(&event), Ok(()));
        event.merchant_id = Some("m".repeat(room + 1));
        assert_eq!(check_limits(&event), Err("merchant_id"));
    }

    /// Held items spread over every shard of their provider, and only theirs.
    #[test]
    fn held_items_spread_over_their_providers_shards() {
        let shards: std::collections::BTreeSet<String> = (0..200)
            .map(|i| held_shard(Provider::Webforce, &HeldDelivery::id_for(format!("{i}").as_bytes())))
            .collect();
        let all: std::collections::BTreeSet<String> =
            (0..HELD_SHARDS).map(|s| held_shard_key(Provider::Webforce, s)).collect();
        assert_eq!(shards, all);
    }

    /// The table holds items already: the attribute names and types must not move.
    #[test]
    fn the_items_on_the_wire_keep_their_names_and_types() {
        let mut event = event_of(Provider::Memberful, "{\"event\":\"order.refunded\",\"order\":{\"uuid\":\"x\"}}");
        event.merchant_id = Some("m_1".into());
        let image = dynamodb_json(&EventItem::new(&event, 42)).unwrap();
        let types: Vec<(String, String)> = image
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_object().unwrap().keys().next().unwrap().clone()))
            .collect();
        let mut types = types;
        types.sort();
        let want = [
            ("event", "S"),
            ("expires_at", "N"),
            ("merchant_pk", "S"),
            ("merchant_sk", "S"),
            ("pk", "S"),
            ("raw_packed", "B"),
            ("sk", "S"),
        ];
        assert_eq!(types, want.map(|(k, t)| (k.to_owned(), t.to_owned())));
        assert_eq!(image["expires_at"]["N"], "42");
        assert_eq!(image["merchant_pk"]["S"], "MERCHANT#m_1");
        let Image::Event(back) = read_image(serde_json::from_value(image).unwrap()).unwrap() else {
            panic!("an event image")
        };
        assert_eq!(*back, event);

        let held = HeldDelivery {
            held_id: "h_1".into(),
            provider: Provider::Foloosi,
            received_at: time::macros::datetime!(2026-12-01 00:00 UTC).into(),
            content_type: Some("text/plain".into()),
            body: b"\xff not UTF-8".to_vec(),
            reason: "body: not JSON".into(),
            query: None,
            headers: vec![("user-agent".into(), "x".into())],
            status: HeldStatus::Held,
            resolution: None,
            proof: Proof::Confirmed,
            delivery_id: Some("msg_1".into()),
        };
        let image = dynamodb_json(&HeldItem::new(&held)).unwrap();
        for (name, ty) in [
            ("pk", "S"),
            ("sk", "S"),
            ("held_id", "S"),
            ("provider", "S"),
            ("received_at", "S"),
            ("reason", "S"),
            ("held_status", "S"),
            ("headers", "S"),
            ("body", "B"),
            ("held_shard", "S"),
            ("held_sk", "S"),
            ("content_type", "S"),
            ("proof", "S"),
            ("delivery_id", "S"),
        ] {
            assert!(image[name].get(ty).is_some(), "{name} is {ty}: {image}");
        }
        assert_eq!(image.as_object().unwrap().len(), 14, "no attribute for what is absent: {image}");
        // Still held: nothing expires it, and the legacy index's key is not written.
        assert!(image.get("expires_at").is_none() && image.get("held_pk").is_none(), "{image}");
        assert_eq!(image["held_shard"]["S"], held_shard(Provider::Foloosi, "h_1"));
        assert_eq!(image["held_status"]["S"], "held");
        assert_eq!(image["provider"]["S"], "foloosi");
        let item: Item = serde_json::from_value(image).unwrap();
        let back: HeldItem = serde_dynamo::from_item(item.clone()).unwrap();
        assert_eq!(back.into_held().unwrap(), held);
        let Image::Held(notice) = read_image(item).unwrap() else { panic!("a held image") };
        assert_eq!(notice.held_id, "h_1");

        // What the earlier reader required of a held item is still all it needs.
        let mut minimal = dynamodb_json(&HeldItem::new(&held)).unwrap();
        for optional in ["headers", "held_shard", "held_sk", "content_type", "proof", "delivery_id"] {
            minimal.as_object_mut().unwrap().remove(optional);
        }
        let back: HeldItem = serde_dynamo::from_item(serde_json::from_value::<Item>(minimal).unwrap()).unwrap();
        let back = back.into_held().unwrap();
        assert_eq!((back.headers.len(), back.content_type, back.body), (0, None, held.body.clone()));
        // Held before its proof was recorded: the provider's weakest.
        assert_eq!((back.proof, back.delivery_id), (Proof::Token, None));
        let Image::Held(notice) = read_image(serde_json::from_value(minimal_image(&held)).unwrap()).unwrap() else {
            panic!("a held image")
        };
        assert_eq!(notice.proof, None);
    }

    fn minimal_image(held: &HeldDelivery) -> Value {
        let mut image = dynamodb_json(&HeldItem::new(held)).unwrap();
        image.as_object_mut().unwrap().remove("proof");
        image
    }
}
