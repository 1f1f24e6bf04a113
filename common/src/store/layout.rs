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
//!   as received), `reason`, `held_status`, and the sparse GSI `by_held` (`held_pk = HELD`,
//!   `held_sk = <received at>#<held id>`) that lists them without a scan.

use serde_json::{Value, json};

use crate::event::{EventKind, Provider, RefundEvent, key_part};
use crate::held::{HeldDelivery, HeldNotice, HeldStatus};
use crate::store::packed;

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
    let pk = object_pk(event.provider, event.kind, &event.object_id).len();
    if pk > MAX_PARTITION_KEY {
        return Err("object_id");
    }
    if event_sk(event).len() > MAX_SORT_KEY {
        return Err("event_type");
    }
    let merchant = event.merchant_id.as_ref().map_or(0, |m| "MERCHANT#".len() + m.len());
    if merchant > MAX_PARTITION_KEY {
        return Err("merchant_id");
    }
    // The event copies a payload's fields a few times at most, and JSON escaping at most doubles
    // one (a form's `%01` is `\u0001`): an item far below the limit is not built to be measured.
    let bound = 2 * pk + 2 * merchant + 8 * event.raw_payload.len() + 2048;
    if bound > MAX_ITEM && item_size(&event_item(event, i64::MAX)) > MAX_ITEM {
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
    let mut item = vec![
        ("pk", s(&object_pk(event.provider, event.kind, &event.object_id))),
        ("sk", s(&event_sk(event))),
        ("event", Attr::S(event_json(event))),
        raw_attr(event.provider, &event.raw_payload),
        ("expires_at", Attr::N(expires_at.to_string())),
    ];
    if let Some(m) = &event.merchant_id {
        item.push(("merchant_pk", s(&format!("MERCHANT#{m}"))));
        item.push(("merchant_sk", s(&format!("{}#{}", event.received_at, event.event_id))));
    }
    item
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
pub fn event_from_parts(pk: &str, sk: &str, json: &str) -> Result<RefundEvent, String> {
    let mut value: Value = serde_json::from_str(json).map_err(|e| format!("`event` attribute: {e}"))?;
    let map = value.as_object_mut().ok_or("`event` attribute is not an object")?;
    if !map.contains_key("provider") {
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
        let provider: Provider = provider.parse().map_err(|e: crate::event::UnknownProvider| e.to_string())?;
        let status: crate::event::Status = status.parse().map_err(|_| format!("`sk` has an unknown status: {sk}"))?;
        let (object_id, event_type) = (unescape(object_id), unescape(event_type));
        let key = RefundEvent::idempotency_key(provider, &object_id, &event_type, status);
        map.insert("event_id".into(), RefundEvent::event_id_for(&key).into());
        map.insert("idempotency_key".into(), key.into());
        map.insert("provider".into(), provider.as_str().into());
        map.insert("kind".into(), kind.into());
        map.insert("event_type".into(), event_type.into());
        map.insert("status".into(), status.as_str().into());
        map.insert("object_id".into(), object_id.into());
    }
    serde_json::from_value(value).map_err(|e| format!("`event` attribute: {e}"))
}

/// The raw payload packed (`packed.rs`: a dictionary id, then DEFLATE primed with it), or as
/// text when that is no larger. Items of the earlier layout hold `raw_deflate` (DEFLATE without
/// a dictionary) or the text; all three read.
pub const RAW_PACKED: &str = "raw_packed";
pub const RAW_DEFLATE: &str = "raw_deflate";
pub const RAW_TEXT: &str = "raw_payload";

fn raw_attr(provider: Provider, raw: &str) -> (&'static str, Attr) {
    match packed::pack(provider, raw.as_bytes()) {
        Some(packed) if packed.len() < raw.len() => (RAW_PACKED, Attr::B(packed)),
        _ => (RAW_TEXT, Attr::S(raw.to_owned())),
    }
}

/// The raw payload back, byte for byte, from whichever of its attributes an item has.
pub fn raw_payload(packed: Option<&[u8]>, deflated: Option<&[u8]>, text: Option<&str>) -> Result<String, String> {
    let bytes = match (packed, deflated, text) {
        (Some(packed), _, _) => packed::unpack(packed).map_err(|e| format!("`{RAW_PACKED}`: {e}"))?,
        (None, Some(deflated), _) => packed::inflate(deflated, &[]).map_err(|e| format!("`{RAW_DEFLATE}`: {e}"))?,
        (None, None, text) => return Ok(text.unwrap_or_default().to_owned()),
    };
    String::from_utf8(bytes).map_err(|_| "the packed raw payload is not UTF-8".into())
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
    Some((|| {
        use base64::Engine;
        let pk = image.pointer("/pk/S").and_then(Value::as_str).ok_or("image has no `pk`")?;
        let json = image.pointer("/event/S").and_then(Value::as_str).ok_or("image has no `event` attribute")?;
        let mut event = event_from_parts(pk, sk, json)?;
        let binary = |name: &str| match image.pointer(&format!("/{name}/B")).and_then(Value::as_str) {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Some)
                .map_err(|_| format!("`{name}` is not base64")),
            None => Ok(None),
        };
        let (packed, deflated) = (binary(RAW_PACKED)?, binary(RAW_DEFLATE)?);
        let text = image.pointer(&format!("/{RAW_TEXT}/S")).and_then(Value::as_str);
        event.raw_payload = raw_payload(packed.as_deref(), deflated.as_deref(), text)?;
        Ok(event)
    })())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_of(attr: &(&str, Attr)) -> Result<String, String> {
        match attr {
            (RAW_PACKED, Attr::B(b)) => raw_payload(Some(b), None, None),
            (RAW_TEXT, Attr::S(s)) => raw_payload(None, None, Some(s)),
            other => panic!("not a raw payload attribute: {other:?}"),
        }
    }

    #[test]
    fn a_payload_is_packed_only_when_that_is_smaller_and_comes_back_exactly() {
        let json = r#"{"event":"order.refunded","order":{"uuid":"4DACB7B0","total":9900,"currency":"USD"},"order_total":9900}"#;
        for provider in Provider::ALL {
            let packed = raw_attr(provider, json);
            assert_eq!(packed.0, RAW_PACKED, "{provider}");
            assert_eq!(raw_of(&packed).unwrap(), json);
        }
        // Short, unrepetitive text does not shrink: kept as text.
        let tiny = raw_attr(Provider::Foloosi, "q");
        assert_eq!(tiny, (RAW_TEXT, Attr::S("q".into())));
        assert_eq!(raw_of(&tiny).unwrap(), "q");
    }

    #[test]
    fn an_item_of_the_earlier_layout_still_reads_and_a_corrupt_one_is_an_error() {
        assert_eq!(raw_payload(None, None, Some("{\"a\":1}")).unwrap(), "{\"a\":1}");
        // `raw_deflate`: DEFLATE without a dictionary, and without an id.
        let deflated = b"\xab\x56\x4a\x54\xb2\x32\xac\x05\x00";
        assert_eq!(raw_payload(None, Some(deflated), None).unwrap(), "{\"a\":1}");
        assert!(raw_payload(None, Some(b"\xff\xff not deflate"), None).unwrap_err().contains(RAW_DEFLATE));
        assert!(raw_payload(Some(b"\x00\xff\xff"), None, None).unwrap_err().contains(RAW_PACKED));
        // Packed bytes that are not UTF-8.
        let latin1 = packed::pack(Provider::Memberful, b"caf\xe9 caf\xe9 caf\xe9").unwrap();
        assert!(raw_payload(Some(&latin1), None, None).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn an_event_comes_back_from_its_keys_and_the_json_that_leaves_them_out() {
        let key =
            RefundEvent::idempotency_key(Provider::Rainforest, "rfd_#1%", "refund.#x", crate::event::Status::Failed);
        let full = serde_json::json!({
            "event_id": RefundEvent::event_id_for(&key), "idempotency_key": key, "provider": "rainforest",
            "kind": "refund", "event_type": "refund.#x", "status": "failed", "object_id": "rfd_#1%",
            "received_at": "2026-12-01T00:00:00Z", "reason": "card expired",
        });
        let event: RefundEvent = serde_json::from_value(full.clone()).unwrap();
        let item = event_item(&event, 1);
        let get = |name: &str| match item.iter().find(|(k, _)| *k == name) {
            Some((_, Attr::S(s))) => s.clone(),
            other => panic!("{name}: {other:?}"),
        };
        let json: Value = serde_json::from_str(&get("event")).unwrap();
        for key in IN_THE_KEYS {
            assert!(json.get(key).is_none(), "{key} is in the keys, not in `event`");
        }
        assert_eq!(event_from_parts(&get("pk"), &get("sk"), &get("event")).unwrap(), event);
        // An item in the older layout: the whole event in its JSON.
        assert_eq!(event_from_parts(&get("pk"), &get("sk"), &full.to_string()).unwrap(), event);
        assert!(event_from_parts("HELD#x", &get("sk"), &get("event")).is_err());
    }
}
