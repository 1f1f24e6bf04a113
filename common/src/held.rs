//! Held deliveries: what an authenticated delivery becomes when it cannot be stored as an event.
//!
//! After authentication a delivery is ours to keep. A refusal would lose it (WebforceHQ never
//! retries a 4xx, Memberful deletes an endpoint that keeps failing), so whatever today's adapter
//! cannot read is kept raw with its reason, answered 202, told to the internal audience, and
//! reprocessed once the adapter can read it. A held delivery is keyed by provider and the body's
//! SHA-256, so the same body retried is held once.

use std::fmt;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credentials::is_secret_header;
use crate::echo::bounded;
use crate::event::{Proof, Provider};
use crate::money::MoneyError;
use crate::providers::PayloadError;
use crate::timestamp::Timestamp;
use crate::verify::Verified;

/// Why a delivery was held: a code and the field at fault. It names the field and never quotes a
/// value, so a reason can be logged, notified and answered without leaking payload data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldReason {
    pub code: HoldCode,
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCode {
    /// Not JSON (or not a form), not UTF-8, or not the shape the provider sends.
    Malformed,
    MissingField,
    InvalidField,
    /// An event we do not handle whose name says refund: never dropped silently.
    UnknownRefundEvent,
    UnknownStatus,
    /// An amount that cannot be stored exactly in minor units.
    InexactAmount,
    InvalidAmount,
    UnknownCurrency,
    /// A media type the provider's parser does not read.
    UnsupportedMediaType,
    /// An id or item beyond the store's key or item limits: retrying could never succeed.
    TooLargeForStore,
    /// The event's identity is stored with other content (amount, status, references).
    Conflict,
    /// The provider's own API does not confirm the delivery (Foloosi's transaction detail).
    Unconfirmed,
    /// The delivery carries too little to store without confirmation by the provider's API.
    NeedsConfirmation,
    /// The provider's API could not judge it now (down, slow): reprocessing asks again.
    ConfirmationUnavailable,
    /// The provider's API refused our credential: the configuration, not the delivery, is at fault.
    ConfirmationRefused,
    /// The provider's API answered what we do not read.
    ConfirmationUnreadable,
}

impl HoldCode {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldCode::Malformed => "malformed",
            HoldCode::MissingField => "missing_field",
            HoldCode::InvalidField => "invalid_field",
            HoldCode::UnknownRefundEvent => "unknown_refund_event",
            HoldCode::UnknownStatus => "unknown_status",
            HoldCode::InexactAmount => "inexact_amount",
            HoldCode::InvalidAmount => "invalid_amount",
            HoldCode::UnknownCurrency => "unknown_currency",
            HoldCode::UnsupportedMediaType => "unsupported_media_type",
            HoldCode::TooLargeForStore => "too_large_for_store",
            HoldCode::Conflict => "conflict",
            HoldCode::Unconfirmed => "unconfirmed",
            HoldCode::NeedsConfirmation => "needs_confirmation",
            HoldCode::ConfirmationUnavailable => "confirmation_unavailable",
            HoldCode::ConfirmationRefused => "confirmation_refused",
            HoldCode::ConfirmationUnreadable => "confirmation_unreadable",
        }
    }
}

impl HoldReason {
    pub fn new(code: HoldCode, field: impl Into<String>) -> Self {
        HoldReason { code, field: Some(bounded(&field.into()).into_owned()) }
    }

    pub fn bare(code: HoldCode) -> Self {
        HoldReason { code, field: None }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}", self.code.as_str()),
            None => f.write_str(self.code.as_str()),
        }
    }
}

impl From<&PayloadError> for HoldReason {
    fn from(e: &PayloadError) -> Self {
        match e {
            PayloadError::Invalid { field, message } => {
                let code = if message == "missing field" {
                    HoldCode::MissingField
                } else if field == "body" {
                    HoldCode::Malformed
                } else {
                    HoldCode::InvalidField
                };
                HoldReason::new(code, field.as_str())
            }
            PayloadError::Amount { field, source } => {
                let code = match source {
                    MoneyError::UnknownCurrency(_) | MoneyError::NoMinorUnit(_) => HoldCode::UnknownCurrency,
                    MoneyError::TooPrecise { .. } => HoldCode::InexactAmount,
                    MoneyError::NotANumber(_) | MoneyError::Negative(_) | MoneyError::OutOfRange(_) => {
                        HoldCode::InvalidAmount
                    }
                };
                HoldReason::new(code, *field)
            }
            PayloadError::UnknownRefundEvent { field, .. } => HoldReason::new(HoldCode::UnknownRefundEvent, *field),
            PayloadError::UnknownStatus { field } => HoldReason::new(HoldCode::UnknownStatus, *field),
            PayloadError::NeedsConfirmation { field } => HoldReason::new(HoldCode::NeedsConfirmation, *field),
        }
    }
}

/// Whether a held delivery still waits for an adapter that can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldStatus {
    Held,
    /// Reprocessed: stored as an event, found a duplicate, or ignored.
    Resolved,
}

impl HeldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldStatus::Held => "held",
            HeldStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "held" => Some(HeldStatus::Held),
            "resolved" => Some(HeldStatus::Resolved),
            _ => None,
        }
    }
}

/// One held delivery, as stored. Its `Debug` gives the body's length, not the body (which holds
/// the payor's contact data).
#[derive(Clone, PartialEq, Eq)]
pub struct HeldDelivery {
    pub held_id: String,
    pub provider: Provider,
    /// When it was first held.
    pub received_at: Timestamp,
    pub content_type: Option<String>,
    /// The body exactly as received (it may not even be UTF-8).
    pub body: Vec<u8>,
    pub reason: String,
    /// The query string without credentials.
    pub query: Option<String>,
    /// The headers without credentials, names lower-case.
    pub headers: Vec<(String, String)>,
    pub status: HeldStatus,
    /// What reprocessing made of it (`accepted evt_…`, `duplicate evt_…`, `ignored`).
    pub resolution: Option<String>,
    /// How it proved its origin when it arrived, and its delivery id (`svix-id`): reprocessing
    /// stores the event with these, not with what the provider's verifier proves at best.
    pub proof: Proof,
    pub delivery_id: Option<String>,
}

/// What the internal audience is told of a newly held delivery: never its body. It reads from
/// a held item's stream image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HeldNotice {
    pub held_id: String,
    pub provider: Provider,
    pub received_at: Timestamp,
    pub reason: String,
    /// Absent from items held before held items recorded it.
    #[serde(default)]
    pub proof: Option<Proof>,
}

/// Most header bytes a held item keeps (names and values): enough for support, and a bound that
/// keeps every held item inside the store's item limit.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

impl std::fmt::Debug for HeldDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldDelivery")
            .field("held_id", &self.held_id)
            .field("provider", &self.provider)
            .field("received_at", &self.received_at)
            .field("content_type", &self.content_type)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("reason", &self.reason)
            .field("query", &self.query)
            .field("headers", &self.headers)
            .field("status", &self.status)
            .field("resolution", &self.resolution)
            .field("proof", &self.proof)
            .field("delivery_id", &self.delivery_id)
            .finish()
    }
}

impl HeldDelivery {
    /// `hld_` + 32 hex digits of SHA-256 over the body: the same body held twice is one item.
    pub fn id_for(body: &[u8]) -> String {
        Self::id_for_delivery(body, None)
    }

    /// [`id_for`](Self::id_for), with the kept query (credentials out) when there is one: what
    /// selects the adapter's reading (WebforceHQ's `?event=`) is part of what was delivered, so
    /// one body posted to two events' URLs is two held items, each reprocessed as its own.
    pub fn id_for_delivery(body: &[u8], kept_query: Option<&str>) -> String {
        let mut hash = Sha256::new();
        hash.update(body);
        if let Some(query) = kept_query.filter(|q| !q.is_empty()) {
            // A separator no body can end in ambiguously: the length of the body goes first.
            hash.update(b"\0query\0");
            hash.update((body.len() as u64).to_be_bytes());
            hash.update(query.as_bytes());
        }
        format!("hld_{}", hex::encode(&hash.finalize()[..16]))
    }

    /// A newly held delivery, with credentials taken out of its headers and query (and out of
    /// its body by the caller, [`crate::credentials::strip_body`]).
    pub fn new(
        provider: Provider,
        received_at: Timestamp,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        verified: &Verified,
        reason: &HoldReason,
    ) -> Self {
        let mut kept = Vec::new();
        let mut room = MAX_HEADER_BYTES;
        for (name, value) in headers {
            if is_secret_header(name.as_str()) {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes());
            let value = bounded(&value);
            let size = name.as_str().len() + value.len();
            if size > room {
                continue;
            }
            room -= size;
            kept.push((name.as_str().to_owned(), value.into_owned()));
        }
        let query = query.map(redact_query).filter(|q| !q.is_empty());
        HeldDelivery {
            held_id: Self::id_for_delivery(body, query.as_deref()),
            provider,
            received_at,
            content_type: headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| bounded(&String::from_utf8_lossy(v.as_bytes())).into_owned()),
            body: body.to_vec(),
            reason: reason.to_string(),
            query,
            headers: kept,
            status: HeldStatus::Held,
            resolution: None,
            proof: verified.proof,
            delivery_id: verified.delivery_id.as_deref().map(|id| bounded(id).into_owned()),
        }
    }

    /// What its event is stored with when reprocessed: how it was verified when it arrived.
    pub fn verified(&self) -> Verified {
        Verified { delivery_id: self.delivery_id.clone(), proof: self.proof }
    }

    pub fn notice(&self) -> HeldNotice {
        HeldNotice {
            held_id: self.held_id.clone(),
            provider: self.provider,
            received_at: self.received_at,
            reason: self.reason.clone(),
            proof: Some(self.proof),
        }
    }

    /// The headers as the adapters see them again on reprocessing.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v))
            {
                map.append(name, value);
            }
        }
        map
    }

    /// The listing's view: no body.
    pub fn summary(&self) -> HeldEntry {
        HeldEntry {
            held_id: self.held_id.clone(),
            provider: self.provider,
            received_at: self.received_at,
            reason: self.reason.clone(),
            status: self.status,
            resolution: self.resolution.clone(),
        }
    }

    /// The whole item as JSON: the body as text where it is UTF-8, else as base64.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.summary()).unwrap_or_default();
        let fields = v.as_object_mut().expect("a struct serializes to an object");
        fields.insert("content_type".into(), serde_json::json!(self.content_type));
        fields.insert("query".into(), serde_json::json!(self.query));
        fields.insert("proof".into(), serde_json::json!(self.proof));
        fields.insert("delivery_id".into(), serde_json::json!(self.delivery_id));
        fields.insert(
            "headers".into(),
            serde_json::Value::Object(
                self.headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
            ),
        );
        match std::str::from_utf8(&self.body) {
            Ok(text) => fields.insert("body".into(), serde_json::json!(text)),
            Err(_) => {
                use base64::Engine;
                fields.insert(
                    "body_base64".into(),
                    serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&self.body)),
                )
            }
        };
        v
    }
}

/// A held delivery as listings show it (`GET /held`, `held list`): what the store's held index
/// keeps, never the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldEntry {
    pub held_id: String,
    pub provider: Provider,
    pub received_at: Timestamp,
    pub reason: String,
    pub status: HeldStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// The query without parameters whose names may carry a credential (`token`, `key`, ...).
pub fn redact_query(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !is_secret_header(&k) {
            out.append_pair(&bounded(&k), &bounded(&v));
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_held_item() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("authorization", "Basic YTpi".parse().unwrap());
        h.insert("x-webhook-token", "t".repeat(20).parse().unwrap());
        h.insert("svix-signature", "v1,AAAA".parse().unwrap());
        h.insert("x-memberful-webhook-signature", "ab".parse().unwrap());
        h.insert("svix-id", "msg_1".parse().unwrap());
        h.insert("user-agent", "provider".parse().unwrap());
        let reason = HoldReason::new(HoldCode::Malformed, "body");
        let held = HeldDelivery::new(
            Provider::Webforce,
            time::macros::datetime!(2026-12-01 00:00 UTC).into(),
            &h,
            Some("token=abc&event=refund-applied&api_key=1"),
            b"x",
            &Verified::default(),
            &reason,
        );
        let names: Vec<&str> = held.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["content-type", "svix-id", "user-agent"]);
        assert_eq!(held.query.as_deref(), Some("event=refund-applied"));
        assert_eq!(held.reason, "malformed: body");
        assert_eq!(held.held_id, HeldDelivery::id_for_delivery(b"x", Some("event=refund-applied")));
        assert_eq!(held.held_id.len(), 4 + 32);
        // Without a query, the id of the body alone, as before.
        let bare =
            HeldDelivery::new(Provider::Webforce, held.received_at, &h, None, b"x", &Verified::default(), &reason);
        assert_eq!(bare.held_id, HeldDelivery::id_for(b"x"));
    }

    /// One body posted to two events' URLs: two held items. The token in the query (redacted) does
    /// not make a retry a new one.
    #[test]
    fn what_selects_the_reading_is_part_of_the_held_identity() {
        let at = time::macros::datetime!(2026-12-01 00:00 UTC).into();
        let reason = HoldReason::new(HoldCode::MissingField, "transaction_id");
        let held = |query| {
            HeldDelivery::new(
                Provider::Webforce,
                at,
                &HeaderMap::new(),
                Some(query),
                b"{}",
                &Verified::default(),
                &reason,
            )
        };
        let refund = held("event=refund-applied&token=aaaaaaaaaaaaaaaaaaaa");
        let approved = held("event=approved-transaction&token=aaaaaaaaaaaaaaaaaaaa");
        assert_ne!(refund.held_id, approved.held_id);
        assert_eq!(refund.held_id, held("event=refund-applied&token=bbbbbbbbbbbbbbbbbbbb").held_id);
    }

    #[test]
    fn a_held_deliverys_debug_leaves_its_body_out() {
        let body = br#"{"customer_email":"dana@example.com"}"#;
        let reason = HoldReason::new(HoldCode::Malformed, "body");
        let held = HeldDelivery::new(
            Provider::Foloosi,
            time::macros::datetime!(2026-12-01 00:00 UTC).into(),
            &HeaderMap::new(),
            None,
            body,
            &Verified::default(),
            &reason,
        );
        let text = format!("{held:?}");
        assert!(!text.contains("dana@example.com") && text.contains(&format!("<{} bytes>", body.len())), "{text}");
        assert!(text.contains(&held.held_id) && text.contains("malformed: body"), "{text}");
    }

    #[test]
    fn reasons_name_the_field_never_the_value() {
        let e = PayloadError::Amount {
            field: "data.amount",
            source: MoneyError::TooPrecise { amount: "1.005".into(), currency: "USD".into(), exponent: 2 },
        };
        assert_eq!(HoldReason::from(&e).to_string(), "inexact_amount: data.amount");
        let e = PayloadError::UnknownRefundEvent { field: "event", name: "order.partially_refunded".into() };
        assert_eq!(HoldReason::from(&e).to_string(), "unknown_refund_event: event");
        let e = PayloadError::invalid("data.refund_id", "invalid type: string \"secret\", expected u64");
        assert_eq!(HoldReason::from(&e).to_string(), "invalid_field: data.refund_id");
        assert_eq!(HoldReason::from(&PayloadError::missing("order.uuid")).to_string(), "missing_field: order.uuid");
    }
}
