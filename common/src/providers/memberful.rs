//! Memberful: `order.refunded`, signed with `X-Memberful-Webhook-Signature`
//! (hex HMAC-SHA256 of the body). No timestamp and no delivery id: replay protection is the
//! idempotency key alone. The payload has no currency and no refunded amount, so the amount is the
//! order total (a full refund) in the configured account currency.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Parsed, PayloadError, ProviderSettings, Text, parse_json, parse_raw, present, required, text, unhandled};
use crate::event::{EventKind, Normalized, Provider, Status};
use crate::money;

pub const SIGNATURE_HEADER: &str = "x-memberful-webhook-signature";

/// Memberful's event names that refund-relay handles, and what each becomes.
const EVENTS: &[(&str, EventKind, Status)] = &[("order.refunded", EventKind::Refund, Status::Succeeded)];

#[derive(Deserialize)]
struct Envelope<'a> {
    event: String,
    #[serde(borrow)]
    order: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Order {
    uuid: Option<String>,
    number: Option<Text>,
    total: Option<i64>,
    member: Option<Member>,
}

#[derive(Deserialize)]
struct Member {
    id: Option<Text>,
    email: Option<String>,
    phone_number: Option<String>,
}

pub fn normalize(body: &[u8], settings: &ProviderSettings) -> Result<Parsed, PayloadError> {
    let env: Envelope = parse_json(body, "")?;
    let Some(&(_, kind, status)) = EVENTS.iter().find(|(name, ..)| *name == env.event) else {
        return unhandled(Provider::Memberful, "event", &env.event);
    };
    let order: Order = parse_raw(env.order.ok_or_else(|| PayloadError::missing("order"))?, "order")?;
    let mut n = Normalized::new(kind, env.event, status, required(order.uuid, "order.uuid")?);
    n.order_ref = text(order.number);
    n.amount = order
        .total
        .map(|t| money::from_minor(t, &settings.memberful_currency))
        .transpose()
        .map_err(|source| PayloadError::Amount { field: "order.total", source })?;
    n.merchant_id = settings.memberful_account.clone();
    // A refunded membership should stop granting access: the first use case Memberful names.
    n.revoke_access = true;
    if let Some(m) = order.member {
        n.payor.id = text(m.id);
        n.payor.email = present(m.email);
        n.payor.phone = present(m.phone_number);
    }
    Ok(Parsed::Event(Box::new(n)))
}
