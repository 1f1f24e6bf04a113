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
//! - held delivery: `pk = HELD#<provider>#<held id>`, `sk = HELD`, written with
//!   `attribute_not_exists(pk)` so the same body held twice is one item; `body` (binary, exactly
//!   as received), `reason`, `held_status`, and the sparse GSI `by_held` (`held_pk = HELD`,
//!   `held_sk = <received at>#<held id>`) that lists them without a scan.

use serde_json::{Value, json};

use crate::event::{EventKind, Provider, RefundEvent, key_part};
use crate::held::{HeldDelivery, HeldNotice, HeldStatus};

pub const EVENT_SK_PREFIX: &str = "EVT#";
pub const AGGREGATE_SK: &str = "AGG";
pub const HELD_SK: &str = "HELD";
pub const MERCHANT_INDEX: &str = "by_merchant";
pub const HELD_INDEX: &str = "by_held";

/// DynamoDB's limits, checked before the write: a write beyond them fails on every retry, so
/// such a delivery is held rather than answered 503 forever.
pub const MAX_PARTITION_KEY: usize = 2048;
pub const MAX_SORT_KEY: usize = 1024;
pub const MAX_ITEM: usize = 400 * 1024;

/// A DynamoDB attribute of the types this table uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    S(String),
    N(String),
    B(Vec<u8>),
}

impl Attr {
    /// Bytes DynamoDB counts for the value (a number is at most 21 bytes).
    fn size(&self) -> usize {
        match self {
            Attr::S(s) => s.len(),
            Attr::N(n) => n.len().div_ceil(2) + 1,
            Attr::B(b) => b.len(),
        }
    }
}

/// DynamoDB's size of an item: each attribute's name and value.
pub fn item_size(item: &[(&str, Attr)]) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

/// The part of `event` that would break a DynamoDB limit, or `Ok`. Every store applies these, so
/// the local runner answers as the product does.
pub fn check_limits(event: &RefundEvent) -> Result<(), &'static str> {
    let item = event_item(event, i64::MAX);
    let attr = |name: &str| item.iter().find(|(k, _)| *k == name).map_or(0, |(_, v)| v.size());
    if attr("pk") > MAX_PARTITION_KEY {
        return Err("object_id");
    }
    if attr("sk") > MAX_SORT_KEY {
        return Err("event_type");
    }
    if attr("merchant_pk") > MAX_PARTITION_KEY {
        return Err("merchant_id");
    }
    if item_size(&item) > MAX_ITEM {
        return Err("body");
    }
    Ok(())
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
                Attr::B(b) => {
                    use base64::Engine;
                    json!({ "B": base64::engine::general_purpose::STANDARD.encode(b) })
                }
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

pub fn held_pk(provider: Provider, held_id: &str) -> String {
    format!("HELD#{provider}#{held_id}")
}

/// The attributes of a held delivery's item.
pub fn held_item(held: &HeldDelivery, expires_at: i64) -> Vec<(&'static str, Attr)> {
    let s = |v: &str| Attr::S(v.to_owned());
    let headers: serde_json::Map<String, Value> =
        held.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut item = vec![
        ("pk", s(&held_pk(held.provider, &held.held_id))),
        ("sk", s(HELD_SK)),
        ("held_id", s(&held.held_id)),
        ("provider", s(held.provider.as_str())),
        ("received_at", s(&held.received_at)),
        ("reason", s(&held.reason)),
        ("held_status", s(held.status.as_str())),
        ("headers", s(&Value::Object(headers).to_string())),
        ("body", Attr::B(held.body.clone())),
        ("expires_at", Attr::N(expires_at.to_string())),
        ("held_pk", s(HELD_SK)),
        ("held_sk", s(&format!("{}#{}", held.received_at, held.held_id))),
    ];
    if let Some(ct) = &held.content_type {
        item.push(("content_type", s(ct)));
    }
    if let Some(q) = &held.query {
        item.push(("query", s(q)));
    }
    if let Some(r) = &held.resolution {
        item.push(("resolution", s(r)));
    }
    item
}

/// A held delivery back from its item's attributes, as `get` finds them by name.
pub fn held_from_attrs<'a>(get: impl Fn(&str) -> Option<&'a Attr>) -> Result<HeldDelivery, String> {
    let text = |name: &str| match get(name) {
        Some(Attr::S(s)) => Some(s.clone()),
        _ => None,
    };
    let need = |name: &str| text(name).ok_or_else(|| format!("held item has no `{name}`"));
    let headers: serde_json::Map<String, Value> =
        serde_json::from_str(&text("headers").unwrap_or_else(|| "{}".into())).map_err(|e| e.to_string())?;
    Ok(HeldDelivery {
        held_id: need("held_id")?,
        provider: need("provider")?.parse().map_err(|e: crate::event::UnknownProvider| e.to_string())?,
        received_at: need("received_at")?,
        content_type: text("content_type"),
        body: match get("body") {
            Some(Attr::B(b)) => b.clone(),
            _ => return Err("held item has no binary `body`".into()),
        },
        reason: need("reason")?,
        query: text("query"),
        headers: headers.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect(),
        status: HeldStatus::parse(&need("held_status")?).ok_or("unknown `held_status`")?,
        resolution: text("resolution"),
    })
}

/// What the fan-out tells of a held item in a stream record's `NewImage` (DynamoDB JSON), or
/// `None` for an image that is not a held item. The body is not needed to tell it.
pub fn held_notice_from_image(image: &Value) -> Option<Result<HeldNotice, String>> {
    if image.pointer("/sk/S").and_then(Value::as_str) != Some(HELD_SK) {
        return None;
    }
    let text = |name: &str| {
        image
            .pointer(&format!("/{name}/S"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(format!("held image has no `{name}`"))
    };
    Some((|| {
        Ok(HeldNotice {
            held_id: text("held_id")?,
            provider: text("provider")?.parse().map_err(|e: crate::event::UnknownProvider| e.to_string())?,
            received_at: text("received_at")?,
            reason: text("reason")?,
        })
    })())
}
