//! WebforceHQ postbacks. Webforce documents its ten system events but neither the postback body
//! nor any signing, so this adapter authenticates with a shared token and reads a documented,
//! versioned field mapping (v1 below) from a JSON or form-encoded body.
//!
//! Mapping v1 (aliases in brackets):
//! - `event` [`event_name`, `event_type`, `type`]: the event's title ("Refund applied") or its
//!   slug (`refund-applied`), case and separators ignored;
//! - `order_id` [`orderId`], `transaction_id` [`transactionId`], `refund_id` [`refundId`];
//! - `amount` [`total`] in major units, `currency` (default: configured, USD);
//! - `customer_id`, `customer_email` [`email`], `customer_phone` [`phone`];
//! - `source` (Admin, Shop, Funnel), `reason`, `created_at` [`date`].
//!
//! The key never includes delivery time: an admin's manual retry must be a duplicate.

use serde::Deserialize;

use super::{Media, Parsed, PayloadError, ProviderSettings, Text, parse_json, present, text, unhandled};
use crate::event::{EventKind, Normalized, Provider, Status};
use crate::money;

pub const TOKEN_HEADER: &str = "x-webhook-token";
pub const TOKEN_QUERY: &str = "token";

/// The three events that concern money; Webforce's seven others are acknowledged and ignored.
const EVENTS: &[(&str, EventKind, Status)] = &[
    ("refund-applied", EventKind::Refund, Status::Succeeded),
    ("approved-transaction", EventKind::Payment, Status::Succeeded),
    ("transaction-declined", EventKind::Payment, Status::Failed),
];

#[derive(Deserialize)]
struct Postback {
    #[serde(alias = "event_name", alias = "event_type", alias = "type")]
    event: String,
    #[serde(alias = "orderId")]
    order_id: Option<Text>,
    #[serde(alias = "transactionId")]
    transaction_id: Option<Text>,
    #[serde(alias = "refundId")]
    refund_id: Option<Text>,
    #[serde(alias = "total")]
    amount: Option<Text>,
    currency: Option<String>,
    customer_id: Option<Text>,
    #[serde(alias = "email")]
    customer_email: Option<String>,
    #[serde(alias = "phone")]
    customer_phone: Option<String>,
    source: Option<String>,
    reason: Option<String>,
    #[serde(alias = "date")]
    created_at: Option<String>,
}

/// "Refund applied", "refund_applied" and "refund-applied" are one event.
fn slug(name: &str) -> String {
    name.trim().chars().map(|c| if c == ' ' || c == '_' { '-' } else { c.to_ascii_lowercase() }).collect()
}

pub fn normalize(body: &[u8], media: Media, settings: &ProviderSettings) -> Result<Parsed, PayloadError> {
    let p: Postback = match media {
        Media::Json => parse_json(body, "")?,
        Media::Form => {
            let mut map = serde_json::Map::new();
            for (k, v) in form_urlencoded::parse(body) {
                // JSON bodies refuse a repeated key (serde); a form must not quietly keep the
                // last of two ids either.
                if map.insert(k.clone().into_owned(), serde_json::Value::String(v.into_owned())).is_some() {
                    let field = if k.is_empty() { "body".to_owned() } else { crate::receive::bounded(&k).into_owned() };
                    return Err(PayloadError::invalid(field, "a key appears more than once"));
                }
            }
            let json = serde_json::to_vec(&map).map_err(|e| PayloadError::invalid("body", e.to_string()))?;
            parse_json(&json, "")?
        }
    };
    let event = slug(&p.event);
    let Some(&(_, kind, status)) = EVENTS.iter().find(|(name, ..)| *name == event) else {
        return unhandled(Provider::Webforce, "event", &p.event);
    };
    let order_id = text(p.order_id);
    let transaction_id = text(p.transaction_id);
    // The transaction is the object whose status moves; an order-level refund names the order.
    let object_id = text(p.refund_id.clone())
        .or_else(|| transaction_id.clone())
        .or_else(|| order_id.clone())
        .ok_or_else(|| PayloadError::missing("transaction_id"))?;
    let mut n = Normalized::new(kind, event, status, object_id);
    n.order_ref = order_id.or(transaction_id);
    if let Some(amount) = text(p.amount) {
        let currency = present(p.currency).unwrap_or_else(|| settings.webforce_currency.clone());
        n.amount = Some(
            money::to_minor(&amount, &currency).map_err(|source| PayloadError::Amount { field: "amount", source })?,
        );
    }
    n.payor.id = text(p.customer_id);
    n.payor.email = present(p.customer_email);
    n.payor.phone = present(p.customer_phone);
    n.source = present(p.source);
    n.reason = present(p.reason);
    n.occurred_at = present(p.created_at);
    Ok(Parsed::Event(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_fold_to_slugs() {
        assert_eq!(slug("Refund applied"), "refund-applied");
        assert_eq!(slug(" Transaction_Declined"), "transaction-declined");
    }
}
