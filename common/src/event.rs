//! The canonical event every provider's payload is normalized into.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Declares [`Provider`], [`Provider::ALL`] and [`Provider::as_str`] from one list, so that no
/// variant can be left out of `ALL`, which every route, test and bench iterates.
macro_rules! providers {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// The providers refund-relay receives webhooks from. Adding one: a line here and the
        /// rest of docs/adding-a-provider.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Provider {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)+
        }

        impl Provider {
            pub const ALL: [Provider; [$($name),+].len()] = [$(Provider::$variant),+];

            /// The route segment and the name used in keys, logs and message attributes.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Provider::$variant => $name,)+
                }
            }
        }
    };
}

providers! {
    Memberful => "memberful",
    Conscent => "conscent",
    Rainforest => "rainforest",
    Webforce => "webforce",
    Foloosi => "foloosi",
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

/// Refund events, or payment outcomes for the providers that send those (Foloosi, WebforceHQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Refund,
    Payment,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Refund => "refund",
            EventKind::Payment => "payment",
        }
    }
}

/// Normalized status. Ranks `created < processing < in_review < {succeeded, failed, canceled}`;
/// the last three are terminal and share a rank, so the first terminal status an object reaches
/// is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Processing,
    InReview,
    Succeeded,
    Failed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 6] =
        [Status::Created, Status::Processing, Status::InReview, Status::Succeeded, Status::Failed, Status::Canceled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Processing => "processing",
            Status::InReview => "in_review",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    pub fn rank(self) -> u8 {
        match self {
            Status::Created => 0,
            Status::Processing => 1,
            Status::InReview => 2,
            Status::Succeeded | Status::Failed | Status::Canceled => 3,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 3
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// How a delivery proved its origin, carried on every notification so a subscriber can refuse to
/// fulfil an order on a token alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proof {
    /// A signature over the body (Memberful, Conscent.ai, Rainforest).
    Signature,
    /// A shared token or credential: proves who sent it, not what was sent.
    #[default]
    Token,
    /// Confirmed by the provider's own API (Foloosi's transaction detail).
    Confirmed,
    /// Read from the provider's own API by reconciliation: no webhook brought it.
    Fetched,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Signature => "signature",
            Proof::Token => "token",
            Proof::Confirmed => "confirmed",
            Proof::Fetched => "fetched",
        }
    }

    pub fn parse(s: &str) -> Option<Proof> {
        [Proof::Signature, Proof::Token, Proof::Confirmed, Proof::Fetched].into_iter().find(|p| p.as_str() == s)
    }
}

/// An amount in minor units of an ISO 4217 currency (cents for USD, paise for INR, fils for AED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: crate::money::Currency,
}

/// The person who paid. Personal data: never logged, sent only to the audiences that need it.
/// Its `Debug` says whether each contact is known, never what it is, so a `{:?}` of an event (a
/// log line, a panic, a failed assertion) leaks no one's address.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl fmt::Debug for Payor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| if v.is_some() { "Some(<redacted>)" } else { "None" };
        f.debug_struct("Payor")
            .field("id", &self.id)
            .field("email", &format_args!("{}", redacted(&self.email)))
            .field("phone", &format_args!("{}", redacted(&self.phone)))
            .finish()
    }
}

impl Payor {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.email.is_none() && self.phone.is_none()
    }
}

/// Why a refund or payment failed, as the provider put it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a provider adapter makes of one payload, before the pipeline adds the delivery facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub kind: EventKind,
    pub event_type: String,
    pub status: Status,
    /// The provider's id of the refund (or of the transaction, for payment events): the object
    /// whose status advances.
    pub object_id: String,
    pub gateway_refund_id: Option<String>,
    pub order_ref: Option<String>,
    pub merchant_id: Option<String>,
    pub payor: Payor,
    /// The amount refunded (or paid), where the provider says it.
    pub amount: Option<Money>,
    /// The order's total, where that is all the provider says (Memberful): never a refund amount.
    pub order_total: Option<Money>,
    pub reason: Option<String>,
    pub refusal: Option<Refusal>,
    pub revoke_access: bool,
    pub product: Option<String>,
    pub source: Option<String>,
    pub occurred_at: Option<String>,
}

impl Normalized {
    /// An event with only its identity set; adapters fill in what their payload carries.
    pub fn new(kind: EventKind, event_type: impl Into<String>, status: Status, object_id: impl Into<String>) -> Self {
        Normalized {
            kind,
            event_type: event_type.into(),
            status,
            object_id: object_id.into(),
            gateway_refund_id: None,
            order_ref: None,
            merchant_id: None,
            payor: Payor::default(),
            amount: None,
            order_total: None,
            reason: None,
            refusal: None,
            revoke_access: false,
            product: None,
            source: None,
            occurred_at: None,
        }
    }
}

/// A provider-supplied string as one part of a `#`-separated key: `%` and `#` are
/// percent-escaped, so a key splits back into exactly the parts it was made of.
pub fn key_part(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['#', '%']) {
        std::borrow::Cow::Owned(s.replace('%', "%25").replace('#', "%23"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// An event's identity as the provider gives it: object id, event type and status, never
/// anything about the delivery. The parts are escaped ([`key_part`]) so that ids containing `#`
/// cannot make two events share a key. The one place a key is built.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(provider: Provider, object_id: &str, event_type: &str, status: Status) -> Self {
        let mut key = Self::prefix(provider, object_id);
        key.push_str(&key_part(event_type));
        key.push('#');
        key.push_str(status.as_str());
        IdempotencyKey(key)
    }

    /// How every key of one object begins, `#` included: a store whose keys are ordered finds
    /// an object's events as one range of them.
    pub fn prefix(provider: Provider, object_id: &str) -> String {
        [provider.as_str(), &key_part(object_id), ""].join("#")
    }

    /// `evt_` + 32 hex digits of SHA-256 over the key: every delivery of one event has the same
    /// id, so subscribers can dedupe on it.
    pub fn event_id(&self) -> EventId {
        let digest = Sha256::digest(self.0.as_bytes());
        EventId(format!("evt_{}", hex::encode(&digest[..16])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event's id (`evt_` + 32 hex digits), derived from its [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_newtype {
    ($($t:ty),+) => {$(
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.0
            }
        }
        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }
        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
    )+};
}
text_newtype!(IdempotencyKey, EventId);

/// The canonical event: what is stored, streamed and (minus `raw_payload`) notified. Its
/// `Debug` gives the raw payload's length, not its text, and the payor redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEvent {
    /// Derived from the idempotency key, so every delivery of one event has the same id and
    /// subscribers can dedupe on it.
    pub event_id: EventId,
    pub idempotency_key: IdempotencyKey,
    pub provider: Provider,
    pub kind: EventKind,
    pub event_type: String,
    pub status: Status,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_refund_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Payor::is_empty")]
    pub payor: Payor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_total: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    #[serde(default)]
    pub revoke_access: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    pub received_at: crate::timestamp::Timestamp,
    /// The provider's delivery id (`svix-id`), recorded for support but never part of the key:
    /// a manual resend gets a new one and must still be a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(default)]
    pub proof: Proof,
    /// The verified body exactly as received, for audit and replay. Left out of the JSON when
    /// empty: the DynamoDB item keeps it as an attribute of its own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw_payload: String,
}

impl fmt::Debug for RefundEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefundEvent")
            .field("event_id", &self.event_id)
            .field("idempotency_key", &self.idempotency_key)
            .field("provider", &self.provider)
            .field("kind", &self.kind)
            .field("event_type", &self.event_type)
            .field("status", &self.status)
            .field("object_id", &self.object_id)
            .field("gateway_refund_id", &self.gateway_refund_id)
            .field("order_ref", &self.order_ref)
            .field("merchant_id", &self.merchant_id)
            .field("payor", &self.payor)
            .field("amount", &self.amount)
            .field("order_total", &self.order_total)
            .field("reason", &self.reason)
            .field("refusal", &self.refusal)
            .field("revoke_access", &self.revoke_access)
            .field("product", &self.product)
            .field("source", &self.source)
            .field("occurred_at", &self.occurred_at)
            .field("received_at", &self.received_at)
            .field("delivery_id", &self.delivery_id)
            .field("proof", &self.proof)
            .field("raw_payload", &format_args!("<{} bytes>", self.raw_payload.len()))
            .finish()
    }
}

impl RefundEvent {
    /// Whether `other`, stored under the same idempotency key, says the same thing: the same
    /// money, status and references. Delivery facts (when, which delivery id) and personal data
    /// may differ between a retry and the first delivery; these may not.
    pub fn same_content(&self, other: &RefundEvent) -> bool {
        self.kind == other.kind
            && self.status == other.status
            && self.object_id == other.object_id
            && self.order_ref == other.order_ref
            && self.gateway_refund_id == other.gateway_refund_id
            && self.amount == other.amount
            && self.order_total == other.order_total
            && self.revoke_access == other.revoke_access
    }

    /// The stream key of the object this event moves: one refund (or payment) of one provider.
    pub fn object_key(&self) -> String {
        format!("{}#{}#{}", self.provider, self.kind.as_str(), self.object_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payors_debug_names_no_contact() {
        let payor = Payor { id: Some("cus_1".into()), email: Some("dana@example.com".into()), phone: None };
        let event = RefundEvent {
            payor: payor.clone(),
            ..serde_json::from_value(serde_json::json!({
                "event_id": "evt_1", "idempotency_key": "k", "provider": "memberful", "kind": "refund",
                "event_type": "order.refunded", "status": "succeeded", "object_id": "o",
                "received_at": "2026-12-01T00:00:00Z",
            }))
            .unwrap()
        };
        let event = RefundEvent { raw_payload: r#"{"email":"dana@example.com"}"#.into(), ..event };
        for text in [format!("{payor:?}"), format!("{event:?}"), format!("{payor:#?}")] {
            assert!(!text.contains("dana@example.com"), "{text}");
            assert!(text.contains("cus_1") && text.contains("Some(<redacted>)") && text.contains("None"), "{text}");
        }
    }

    #[test]
    fn every_provider_has_one_name_everywhere() {
        let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for p in Provider::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            assert_eq!(p.as_str().to_uppercase().parse::<Provider>(), Ok(p), "routes ignore case");
        }
    }

    #[test]
    fn terminal_statuses_share_the_top_rank() {
        assert!(Status::Created.rank() < Status::Processing.rank());
        assert!(Status::Processing.rank() < Status::InReview.rank());
        for s in [Status::Succeeded, Status::Failed, Status::Canceled] {
            assert!(s.is_terminal());
            assert!(Status::InReview.rank() < s.rank());
        }
        assert!(!Status::InReview.is_terminal());
    }

    #[test]
    fn names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert!("stripe".parse::<Provider>().is_err());
    }

    #[test]
    fn ids_containing_separators_never_share_a_key() {
        let a = IdempotencyKey::new(Provider::Foloosi, "A", "transaction.x#failed#transaction.y", Status::Failed);
        let b = IdempotencyKey::new(Provider::Foloosi, "A#transaction.x#failed", "transaction.y", Status::Failed);
        assert_ne!(a, b);
        assert_eq!(key_part("100%#1"), "100%25%231");
        assert_eq!(key_part("plain"), "plain");
    }

    #[test]
    fn the_key_prefix_is_how_idempotency_keys_begin() {
        for id in ["rfd_1", "a#b", "50%", ""] {
            let key = IdempotencyKey::new(Provider::Rainforest, id, "refund.created", Status::Created);
            assert!(key.starts_with(&IdempotencyKey::prefix(Provider::Rainforest, id)), "{key}");
        }
    }

    /// Stored events keep their keys and ids: both must stay exactly this text.
    #[test]
    fn event_id_depends_only_on_the_key() {
        let key = |event_type: &str, status| IdempotencyKey::new(Provider::Rainforest, "rfd_1", event_type, status);
        let (a, b) = (key("refund.succeeded", Status::Succeeded), key("refund.succeeded", Status::Succeeded));
        let c = key("refund.failed", Status::Failed);
        assert_eq!(a.as_str(), "rainforest#rfd_1#refund.succeeded#succeeded");
        assert_eq!(a.event_id(), b.event_id());
        assert_ne!(a.event_id(), c.event_id());
        // `evt_` + hex of the first 16 bytes of the key's SHA-256.
        let digest = Sha256::digest(b"rainforest#rfd_1#refund.succeeded#succeeded");
        assert_eq!(a.event_id(), format!("evt_{}", hex::encode(&digest[..16])));
        assert_eq!(a.event_id(), "evt_da43159faa2d4c1fba66269c620c4918");
    }
}
