//! Memberful: `order.refunded`, signed with `X-Memberful-Webhook-Signature`
//! (hex HMAC-SHA256 of the body). No timestamp and no delivery id: replay protection is the
//! idempotency key alone.
//!
//! Refunds can be partial and the payload carries no refunded amount, so no refund amount is ever
//! stated: `order.total` is kept as the order's total (in the configured account currency,
//! Memberful sends none). A refund may keep or cancel the subscription: `revoke_access` is true
//! only when no subscription in `order.subscriptions` stays `active`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    CurrencySetting, Descriptor, Parsed, PayloadError, ProviderSettings, SecretVar, Setting, Text, TextSetting,
    parse_fast, parse_json, parse_raw, present, required, text, unhandled,
};
use crate::event::{EventKind, Normalized, Proof, Provider, Status};
use crate::money::{self, Currency};
use crate::verify::{HmacSha256Hex, SecretError, SecretLists, Verifier, refs};

pub const SIGNATURE_HEADER: &str = "x-memberful-webhook-signature";

const SECRET_VAR: &str = "MEMBERFUL_WEBHOOK_SECRET";

pub static DESCRIPTOR: Descriptor = Descriptor {
    secrets: &[SecretVar { var: SECRET_VAR, dev: Some("dev-memberful-secret-not-for-production") }],
    verifier,
    proof: Proof::Signature,
    forms: false,
    normalize: |body, _, _, settings| normalize(body, settings),
    dictionaries: &[(1, include_bytes!("../store/dictionaries/memberful.1"))],
    example: "order.refunded.json",
    settings: &[Setting::Currency(&CURRENCY), Setting::Text(&ACCOUNT)],
};

/// The account's currency: `order.total` is in its minor units, and Memberful sends none.
pub static CURRENCY: CurrencySetting = CurrencySetting { var: "MEMBERFUL_CURRENCY", default: Currency::USD };
/// The merchant id stamped on its events (one Memberful account per deployment).
pub static ACCOUNT: TextSetting = TextSetting { var: "MEMBERFUL_ACCOUNT" };

fn verifier(secrets: &SecretLists<'_>) -> Result<Option<Arc<dyn Verifier>>, SecretError> {
    let keys = secrets.keys(SECRET_VAR)?;
    Ok(keys.map(|k| Arc::new(HmacSha256Hex::new(SIGNATURE_HEADER, &refs(&k))) as Arc<dyn Verifier>))
}

/// Memberful's event names that refund-relay handles, and what each becomes.
const EVENTS: &[(&str, EventKind, Status)] = &[("order.refunded", EventKind::Refund, Status::Succeeded)];

#[derive(Deserialize)]
struct Envelope<'a> {
    event: String,
    #[serde(borrow)]
    order: Option<&'a RawValue>,
}

/// The whole body in one pass: what a valid delivery takes (see [`normalize`]).
#[derive(Deserialize)]
struct Whole {
    event: String,
    order: Option<Order>,
}

#[derive(Deserialize)]
struct Order {
    uuid: Option<String>,
    number: Option<Text>,
    total: Option<i64>,
    member: Option<Member>,
    subscriptions: Option<Vec<Subscription>>,
}

#[derive(Deserialize)]
struct Subscription {
    active: Option<bool>,
}

#[derive(Deserialize)]
struct Member {
    id: Option<Text>,
    email: Option<String>,
    phone_number: Option<String>,
}

/// A valid body is read in one pass ([`Whole`]). Any other body is read in two steps, envelope first
/// and `order` only for a handled event, so an unhandled event is ignored whatever its order holds
/// and an error names its field; a body that parses whole parses that way too, to the same values.
pub fn normalize(body: &[u8], settings: &ProviderSettings) -> Result<Parsed, PayloadError> {
    let (event, order) = match parse_fast::<Whole>(body) {
        Some(whole) => (whole.event, whole.order),
        None => {
            let env: Envelope = parse_json(body, "")?;
            if !EVENTS.iter().any(|(name, ..)| *name == env.event) {
                return unhandled(Provider::Memberful, "event", &env.event);
            }
            let order: Order = parse_raw(env.order.ok_or_else(|| PayloadError::missing("order"))?, "order")?;
            (env.event, Some(order))
        }
    };
    let Some(&(_, kind, status)) = EVENTS.iter().find(|(name, ..)| *name == event) else {
        return unhandled(Provider::Memberful, "event", &event);
    };
    let order = order.ok_or_else(|| PayloadError::missing("order"))?;
    let mut n = Normalized::new(kind, event, status, required(order.uuid, "order.uuid")?);
    n.order_ref = text(order.number);
    n.order_total = order
        .total
        .map(|t| money::from_minor(t, settings.currency(&CURRENCY).code()))
        .transpose()
        .map_err(|source| PayloadError::Amount { field: "order.total", source })?;
    n.merchant_id = settings.text(&ACCOUNT);
    // Staff may refund "with or without canceling the associated subscription": access ends only
    // when nothing stays active.
    n.revoke_access = !order.subscriptions.unwrap_or_default().iter().any(|s| s.active == Some(true));
    if let Some(m) = order.member {
        n.payor.id = text(m.id);
        n.payor.email = present(m.email);
        n.payor.phone = present(m.phone_number);
    }
    Ok(Parsed::Event(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memberful sends neither a currency nor an account: both come from the deployment.
    #[test]
    fn the_currency_and_the_account_come_from_the_settings() {
        let body = br#"{"event":"order.refunded","order":{"uuid":"o_1","total":1250}}"#;
        let event = |settings: &ProviderSettings| match normalize(body, settings).unwrap() {
            Parsed::Event(n) => n,
            other => panic!("{other:?}"),
        };
        let unset = event(&ProviderSettings::default());
        assert_eq!(unset.order_total.as_ref().map(|m| m.currency.code()), Some("USD"));
        assert_eq!(unset.merchant_id, None);
        let set = ProviderSettings::default()
            .with(Setting::Currency(&CURRENCY), "jpy")
            .and_then(|s| s.with(Setting::Text(&ACCOUNT), "acct_9"))
            .unwrap();
        let set = event(&set);
        assert_eq!(set.order_total.as_ref().map(|m| m.currency.code()), Some("JPY"));
        assert_eq!(set.merchant_id.as_deref(), Some("acct_9"));
    }
}
