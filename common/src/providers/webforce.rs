//! WebforceHQ postbacks. Webforce documents its ten system events but neither the postback body
//! nor any signing, so this adapter authenticates with a shared token and reads a documented,
//! versioned field mapping (v1 below) from a JSON or form-encoded body.
//!
//! Mapping v1 (aliases in brackets):
//! - `event` [`event_name`, `event_type`, `type`]: the event's title ("Refund applied") or its
//!   slug (`refund-applied`), case and separators ignored. A body without one takes the query's
//!   `?event=`: WebforceHQ's admin sets up one postback channel (one URL) per event;
//! - `order_id` [`orderId`], `transaction_id` [`transactionId`], `refund_id` [`refundId`];
//! - `amount` [`total`] in major units, unless the body says cents: `amount_cents`
//!   [`amount_in_cents`] is read as minor units. The units are undocumented; major units is what
//!   a commerce admin shows, and a body we misread is held, not guessed;
//! - `currency` (default: configured, USD);
//! - `customer_id`, `customer_email` [`email`], `customer_phone` [`phone`];
//! - `source` (Admin, Shop, Funnel), `reason`, `created_at` [`date`].
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
    super::shared_token(secrets, TOKEN_VAR, TOKEN_HEADER, TOKEN_QUERY)
}

/// The three events that concern money; Webforce's seven others are acknowledged and ignored.
const EVENTS: &[(&str, EventKind, Status)] = &[
    ("refund-applied", EventKind::Refund, Status::Succeeded),
    ("approved-transaction", EventKind::Payment, Status::Succeeded),
    ("transaction-declined", EventKind::Payment, Status::Failed),
];

#[derive(Deserialize)]
struct Postback {
    #[serde(alias = "event_name", alias = "event_type", alias = "type")]
    event: Option<String>,
    #[serde(alias = "orderId")]
    order_id: Option<Text>,
    #[serde(alias = "transactionId")]
    transaction_id: Option<Text>,
    #[serde(alias = "refundId")]
    refund_id: Option<Text>,
    #[serde(alias = "total")]
    amount: Option<Text>,
    #[serde(alias = "amount_in_cents")]
    amount_cents: Option<Text>,
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
    let name =
        present(p.event).or_else(|| present(event_from_query(query))).ok_or_else(|| PayloadError::missing("event"))?;
    let event = slug(&name);
    let Some(&(_, kind, status)) = EVENTS.iter().find(|(name, ..)| *name == event) else {
        return unhandled(Provider::Webforce, "event", &name);
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
    let currency = present(p.currency).unwrap_or_else(|| settings.currency(&CURRENCY).code().to_owned());
    n.amount = match (p.amount_cents, text(p.amount)) {
        (Some(_), Some(_)) => return Err(PayloadError::invalid("amount_cents", "both amount and amount_cents")),
        (Some(Text(cents)), None) => {
            let cents =
                cents.trim().parse::<i64>().map_err(|_| PayloadError::invalid("amount_cents", "not whole cents"))?;
            Some(
                money::from_minor(cents, &currency)
                    .map_err(|source| PayloadError::Amount { field: "amount_cents", source })?,
            )
        }
        (None, Some(amount)) => Some(
            money::to_minor(&amount, &currency).map_err(|source| PayloadError::Amount { field: "amount", source })?,
        ),
        (None, None) => None,
    };
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
