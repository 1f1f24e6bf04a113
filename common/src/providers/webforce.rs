//! WebforceHQ postbacks (also published as THIIO). WebforceHQ documents its ten system events but
//! neither the postback body nor any signing, so this adapter authenticates with a shared token
//! and reads a documented, versioned field mapping (v2 below) from a JSON or form-encoded body.
//!
//! Mapping v2. Where two names mean one thing, both are read and the first listed wins (the other
//! is read only when the first is absent or empty):
//! - the event: `event`, `event_name`, `event_type`: its title ("Refund applied") or its slug
//!   (`refund-applied`), case and separators ignored. A body without one takes the query's
//!   `?event=` (one postback URL per event: the README asks for that). Never `type`: in THIIO's
//!   samples that is the transaction's type (`sale_approved`), not the event;
//! - a body that names no event, on a URL whose event its own fields contradict (a `type` of
//!   another kind of transaction, refund fields on a payment's URL) is held, not recorded as the
//!   URL's event: an admin may have attached one URL to several events;
//! - `order_id`, `orderId`; `transaction_id`, `transactionId`; `refund_id`, `refundId`;
//! - the amount in major units: `amount`, then (a refund) `approved_refund`, then `total`; `total`
//!   is also kept as the order's total. `amount_cents`, `amount_in_cents`: minor units. The units
//!   are undocumented; major units is what a commerce admin shows, and a body we misread is held;
//! - `currency` (default: configured, USD);
//! - `customer_id`; `customer_email`, `email`; `customer_phone`, `phone`;
//! - `source` (Admin, Shop, Funnel), `reason`; the time: `created_at`, `date`, `date_at`;
//! - THIIO's `refunded_items[]` and `env` are accepted and not read.
//!
//! The key never includes delivery time: an admin's manual retry must be a duplicate.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    CurrencySetting, Descriptor, Media, Parsed, PayloadError, ProviderSettings, SecretVar, Setting, Text, form_to_json,
    parse_json, present, text, unhandled,
};
use crate::event::{EventKind, Normalized, Proof, Provider, Status};
use crate::money::{self, Currency};
use crate::verify::{SecretError, SecretLists, Verifier};

pub const TOKEN_HEADER: &str = "x-webhook-token";
pub const TOKEN_QUERY: &str = "token";

const TOKEN_VAR: &str = "WEBFORCE_WEBHOOK_TOKEN";

pub static DESCRIPTOR: Descriptor = Descriptor {
    secrets: &[SecretVar { var: TOKEN_VAR, dev: Some("dev-webforce-token-not-for-production") }],
    verifier,
    proof: Proof::Token,
    forms: true,
    normalize,
    dictionaries: &[(4, include_bytes!("../store/dictionaries/webforce.1"))],
    example: "refund-applied.ours.json",
    settings: &[Setting::Currency(&CURRENCY)],
};

/// The currency of postbacks that carry none.
pub static CURRENCY: CurrencySetting = CurrencySetting { var: "WEBFORCE_CURRENCY", default: Currency::USD };

fn verifier(secrets: &SecretLists<'_>) -> Result<Option<Arc<dyn Verifier>>, SecretError> {
    super::shared_token(secrets, TOKEN_VAR, TOKEN_HEADER, TOKEN_QUERY, "WEBFORCE_QUERY_TOKEN")
}

/// The three events that concern money; Webforce's seven others are acknowledged and ignored.
const EVENTS: &[(&str, EventKind, Status)] = &[
    ("refund-applied", EventKind::Refund, Status::Succeeded),
    ("approved-transaction", EventKind::Payment, Status::Succeeded),
    ("transaction-declined", EventKind::Payment, Status::Failed),
];

/// Every name the mapping reads; the precedence is [`normalize`]'s.
#[derive(Deserialize)]
struct Postback {
    event: Option<String>,
    event_name: Option<String>,
    event_type: Option<String>,
    /// THIIO's transaction type (`sale_approved`): never read as the event.
    #[serde(rename = "type")]
    transaction_type: Option<Text>,
    order_id: Option<Text>,
    #[serde(rename = "orderId")]
    order_id_camel: Option<Text>,
    transaction_id: Option<Text>,
    #[serde(rename = "transactionId")]
    transaction_id_camel: Option<Text>,
    refund_id: Option<Text>,
    #[serde(rename = "refundId")]
    refund_id_camel: Option<Text>,
    amount: Option<Text>,
    approved_refund: Option<Text>,
    total: Option<Text>,
    amount_cents: Option<Text>,
    amount_in_cents: Option<Text>,
    currency: Option<String>,
    customer_id: Option<Text>,
    customer_email: Option<String>,
    email: Option<String>,
    customer_phone: Option<String>,
    phone: Option<String>,
    source: Option<String>,
    reason: Option<String>,
    created_at: Option<String>,
    date: Option<String>,
    date_at: Option<String>,
    refunded_items: Option<serde::de::IgnoredAny>,
}

/// The first of `names`' values that is present and not empty, with its name.
fn first<T>(
    values: impl IntoIterator<Item = (&'static str, Option<T>)>,
    keep: impl Fn(&T) -> bool,
) -> Option<(&'static str, T)> {
    values.into_iter().find_map(|(name, v)| v.filter(|v| keep(v)).map(|v| (name, v)))
}

fn text_of(values: impl IntoIterator<Item = (&'static str, Option<Text>)>) -> Option<(&'static str, String)> {
    first(values, |t: &Text| !t.0.trim().is_empty()).map(|(n, t)| (n, t.0))
}

fn string_of(values: impl IntoIterator<Item = (&'static str, Option<String>)>) -> Option<String> {
    first(values, |s: &String| !s.trim().is_empty()).map(|(_, s)| s)
}

/// The event a THIIO transaction `type` belongs to, if its word says.
fn event_of_type(transaction_type: &str) -> Option<&'static str> {
    let t = transaction_type.to_ascii_lowercase();
    if t.contains("refund") || t.contains("void") {
        Some("refund-applied")
    } else if t.contains("declin") || t.contains("fail") {
        Some("transaction-declined")
    } else if t.contains("sale") || t.contains("approv") || t.contains("payment") {
        Some("approved-transaction")
    } else {
        None
    }
}

/// "Refund applied", "refund_applied" and "refund-applied" are one event.
fn slug(name: &str) -> String {
    name.trim().chars().map(|c| if c == ' ' || c == '_' { '-' } else { c.to_ascii_lowercase() }).collect()
}

/// The query's `event`, for a postback channel whose body does not name its event.
fn event_from_query(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == "event").map(|(_, v)| v.into_owned())
}

pub fn normalize(
    body: &[u8],
    media: Media,
    query: Option<&str>,
    settings: &ProviderSettings,
) -> Result<Parsed, PayloadError> {
    let p: Postback = match media {
        Media::Json => parse_json(body, "")?,
        Media::Form => parse_json(&form_to_json(body)?, "")?,
    };
    let named = string_of([("event", p.event), ("event_name", p.event_name), ("event_type", p.event_type)]);
    let from_url = named.is_none();
    let name = named.or_else(|| present(event_from_query(query))).ok_or_else(|| PayloadError::missing("event"))?;
    let event = slug(&name);
    if from_url {
        // The URL's event, for a body that names none: unless the body says it is another.
        let refund_fields = text(p.approved_refund.clone()).is_some() || p.refunded_items.is_some();
        if let Some(Text(t)) = p.transaction_type.as_ref().filter(|t| !t.0.trim().is_empty())
            && event_of_type(t) != Some(event.as_str())
        {
            return Err(PayloadError::invalid("type", "a transaction of another kind than the URL's event"));
        }
        if refund_fields && event != "refund-applied" {
            return Err(PayloadError::invalid("approved_refund", "refund fields on another event's URL"));
        }
    }
    let Some(&(_, kind, status)) = EVENTS.iter().find(|(name, ..)| *name == event) else {
        return unhandled(Provider::Webforce, "event", &name);
    };
    let order_id = text_of([("order_id", p.order_id), ("orderId", p.order_id_camel)]).map(|(_, v)| v);
    let transaction_id =
        text_of([("transaction_id", p.transaction_id), ("transactionId", p.transaction_id_camel)]).map(|(_, v)| v);
    let refund_id = text_of([("refund_id", p.refund_id), ("refundId", p.refund_id_camel)]).map(|(_, v)| v);
    // The transaction is the object whose status moves; an order-level refund names the order.
    let object_id = refund_id
        .or_else(|| transaction_id.clone())
        .or_else(|| order_id.clone())
        .ok_or_else(|| PayloadError::missing("transaction_id"))?;
    let mut n = Normalized::new(kind, event, status, object_id);
    n.order_ref = order_id.or(transaction_id);
    let currency = present(p.currency).unwrap_or_else(|| settings.currency(&CURRENCY).code().to_owned());
    let major = |field: &'static str, amount: &str| {
        money::to_minor(amount, &currency).map_err(|source| PayloadError::Amount { field, source })
    };
    let cents = text_of([("amount_cents", p.amount_cents), ("amount_in_cents", p.amount_in_cents)]);
    let refunded = if kind == EventKind::Refund { p.approved_refund } else { None };
    let amount = text_of([("amount", p.amount), ("approved_refund", refunded)]);
    let total = text(p.total);
    let total_is_amount = cents.is_none() && amount.is_none();
    n.amount = match (cents, &amount) {
        (Some((field, _)), Some(_)) => return Err(PayloadError::invalid(field, "both an amount and cents")),
        (Some((field, cents)), None) => {
            let cents = cents.trim().parse::<i64>().map_err(|_| PayloadError::invalid(field, "not whole cents"))?;
            Some(money::from_minor(cents, &currency).map_err(|source| PayloadError::Amount { field, source })?)
        }
        (None, Some((field, amount))) => Some(major(field, amount)?),
        (None, None) => total.as_deref().map(|t| major("total", t)).transpose()?,
    };
    if !total_is_amount {
        n.order_total = total.as_deref().map(|t| major("total", t)).transpose()?;
    }
    n.payor.id = text(p.customer_id);
    n.payor.email = string_of([("customer_email", p.customer_email), ("email", p.email)]);
    n.payor.phone = string_of([("customer_phone", p.customer_phone), ("phone", p.phone)]);
    n.source = present(p.source);
    n.reason = present(p.reason);
    n.occurred_at = string_of([("created_at", p.created_at), ("date", p.date), ("date_at", p.date_at)]);
    Ok(Parsed::Event(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str, query: Option<&str>) -> Result<Normalized, PayloadError> {
        let settings = ProviderSettings::load(&|_| None).unwrap();
        match normalize(body.as_bytes(), Media::Json, query, &settings)? {
            Parsed::Event(n) => Ok(*n),
            Parsed::Ignored(why) => panic!("ignored: {why}"),
        }
    }

    fn minor(m: &Option<crate::event::Money>) -> Option<i64> {
        m.as_ref().map(|m| m.minor)
    }

    /// Both names of a pair in one body: read by the stated precedence, not refused as a
    /// duplicate field.
    #[test]
    fn a_name_and_its_alias_together_read_by_precedence() {
        let n = read(
            r#"{"event":"Approved transaction","type":"sale_approved","transaction_id":"T1","amount":"5.00",
                "total":"9.00","customer_email":"a@example.com","email":"b@example.com",
                "created_at":"2026-11-20T12:00:00Z","date":"2026-11-19"}"#,
            None,
        )
        .unwrap();
        assert_eq!((n.event_type.as_str(), n.status), ("approved-transaction", Status::Succeeded));
        assert_eq!((minor(&n.amount), minor(&n.order_total)), (Some(500), Some(900)));
        assert_eq!(n.payor.email.as_deref(), Some("a@example.com"));
        assert_eq!(n.occurred_at.as_deref(), Some("2026-11-20T12:00:00Z"));
        // The second of a pair, when the first is absent.
        let n =
            read(r#"{"event":"refund-applied","orderId":"O1","total":"9.00","email":"b@example.com"}"#, None).unwrap();
        assert_eq!(
            (n.object_id.as_str(), minor(&n.amount), n.payor.email.as_deref()),
            ("O1", Some(900), Some("b@example.com"))
        );
    }

    /// A transaction `type` is never the event: the URL's event stands, or the delivery is held.
    #[test]
    fn a_transaction_type_never_names_the_event() {
        let approved = r#"{"type":"sale_approved","transaction_id":"T2","total":"12.50"}"#;
        let n = read(approved, Some("event=approved-transaction")).unwrap();
        assert_eq!((n.kind, n.status, minor(&n.amount)), (EventKind::Payment, Status::Succeeded, Some(1250)));
        // No event anywhere: held as missing, not ignored as an unknown `sale_approved`.
        let e = read(approved, None).unwrap_err();
        assert_eq!(e, PayloadError::missing("event"));
    }

    /// One URL attached to several events: a body whose fields contradict the URL's event is
    /// held, not recorded as that event.
    #[test]
    fn a_body_contradicting_its_urls_event_is_held() {
        let sale = r#"{"type":"sale_approved","transaction_id":"T3","total":"12.50"}"#;
        assert!(
            matches!(read(sale, Some("event=refund-applied")), Err(PayloadError::Invalid { field, .. }) if field == "type")
        );
        let refund = r#"{"transaction_id":"T3","approved_refund":"2.00"}"#;
        let e = read(refund, Some("event=approved-transaction")).unwrap_err();
        assert!(matches!(e, PayloadError::Invalid { ref field, .. } if field == "approved_refund"), "{e:?}");
        // An explicit event is the body's own word: its `type` is not checked against it.
        assert!(read(r#"{"event":"refund-applied","type":"sale","transaction_id":"T3"}"#, None).is_ok());
    }

    /// THIIO's published sample fields, on a refund URL: the approved refund is the amount, the
    /// decimal total the order's.
    #[test]
    fn thiios_sample_fields_read() {
        let n = read(
            r#"{"order_id":"ORD-9","transaction_id":"TX-9","type":"refund","total":"25.50",
                "refunded_items":[{"sku":"A","qty":1}],"approved_refund":"10.00","env":"production",
                "source":"Shop","date_at":"2026-11-21 10:00:00"}"#,
            Some("event=refund-applied"),
        )
        .unwrap();
        assert_eq!((n.kind, n.object_id.as_str(), n.order_ref.as_deref()), (EventKind::Refund, "TX-9", Some("ORD-9")));
        assert_eq!((minor(&n.amount), minor(&n.order_total)), (Some(1000), Some(2550)));
        assert_eq!((n.source.as_deref(), n.occurred_at.as_deref()), (Some("Shop"), Some("2026-11-21 10:00:00")));
    }

    #[test]
    fn event_names_fold_to_slugs() {
        assert_eq!(slug("Refund applied"), "refund-applied");
        assert_eq!(slug(" Transaction_Declined"), "transaction-declined");
    }
}
