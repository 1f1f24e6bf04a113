//! The DynamoDB item layout, free of the SDK so the `events/` generator and the tests build
//! stream records exactly as the table holds them.
//!
//! Every item of one object shares a partition, so its history is one `Query`:
//! - event: `pk = OBJ#<provider>#<kind>#<object id>`, `sk = EVT#<event type>#<status>`. `pk + sk`
//!   is exactly the idempotency key, so the one conditional `PutItem` (`attribute_not_exists(pk)`)
//!   is the dedup. The item carries the canonical event as JSON (`event`), the raw payload, and
//!   `expires_at` for TTL.
//! - aggregate: same `pk`, `sk = AGG`, holding `status`, `status_rank` and `last_event_id`;
//!   updated only when the rank rises.
//! - GSI `by_merchant`: `merchant_pk = MERCHANT#<merchant id>`, `merchant_sk = <received at>#<event id>`,
//!   projecting the keys and `event` only (not the raw payload: see template.yaml).

use serde_json::{Value, json};

use crate::event::{EventKind, Provider, RefundEvent, key_part};

pub const EVENT_SK_PREFIX: &str = "EVT#";
pub const AGGREGATE_SK: &str = "AGG";
pub const MERCHANT_INDEX: &str = "by_merchant";

/// A DynamoDB attribute of the two types this table uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    S(String),
    N(String),
}

pub fn object_pk(provider: Provider, kind: EventKind, id: &str) -> String {
    format!("OBJ#{provider}#{}#{}", kind.as_str(), key_part(id))
}

pub fn event_sk(event: &RefundEvent) -> String {
    format!("{EVENT_SK_PREFIX}{}#{}", key_part(&event.event_type), event.status)
}

/// The attributes of `event`'s item; `expires_at` is the TTL in unix seconds.
pub fn event_item(event: &RefundEvent, expires_at: i64) -> Vec<(&'static str, Attr)> {
    let s = |v: &str| Attr::S(v.to_owned());
    let mut canonical = event.clone();
    // The raw payload is its own attribute; the JSON copy stays small.
    canonical.raw_payload = String::new();
    let mut item = vec![
        ("pk", s(&object_pk(event.provider, event.kind, &event.object_id))),
        ("sk", s(&event_sk(event))),
        ("event_id", s(&event.event_id)),
        ("idempotency_key", s(&event.idempotency_key)),
        ("provider", s(event.provider.as_str())),
        ("kind", s(event.kind.as_str())),
        ("event_type", s(&event.event_type)),
        ("status", s(event.status.as_str())),
        ("received_at", s(&event.received_at)),
        ("event", s(&serde_json::to_string(&canonical).unwrap_or_default())),
        ("raw_payload", s(&event.raw_payload)),
        ("expires_at", Attr::N(expires_at.to_string())),
    ];
    if let Some(m) = &event.merchant_id {
        item.push(("merchant_pk", s(&format!("MERCHANT#{m}"))));
        item.push(("merchant_sk", s(&format!("{}#{}", event.received_at, event.event_id))));
    }
    if let Some(d) = &event.delivery_id {
        item.push(("delivery_id", s(d)));
    }
    item
}

/// An item in DynamoDB's JSON form (`{"pk": {"S": "..."}}`), as stream records carry it.
pub fn to_dynamodb_json(item: &[(&str, Attr)]) -> Value {
    let map: serde_json::Map<String, Value> = item
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Attr::S(s) => json!({ "S": s }),
                Attr::N(n) => json!({ "N": n }),
            };
            ((*k).to_owned(), v)
        })
        .collect();
    Value::Object(map)
}

/// The canonical event inside a stream record's `NewImage` (DynamoDB JSON), or `None` for an
/// image that is not an event item (an aggregate).
pub fn event_from_image(image: &Value) -> Option<Result<RefundEvent, String>> {
    let sk = image.pointer("/sk/S").and_then(Value::as_str)?;
    if !sk.starts_with(EVENT_SK_PREFIX) {
        return None;
    }
    Some(
        image
            .pointer("/event/S")
            .and_then(Value::as_str)
            .ok_or_else(|| "image has no `event` attribute".to_owned())
            .and_then(|json| serde_json::from_str::<RefundEvent>(json).map_err(|e| e.to_string()))
            .map(|mut e| {
                if let Some(raw) = image.pointer("/raw_payload/S").and_then(Value::as_str) {
                    e.raw_payload = raw.to_owned();
                }
                e
            }),
    )
}
