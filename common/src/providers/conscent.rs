//! Conscent.ai: `refunded.pay_per_use`, `refunded.subscription`, `refunded.pass`, signed with
//! `X-Conscent-Signature` (hex HMAC-SHA256 of the body) or, for older setups, HTTP Basic
//! (API key : API secret). Amounts come in major units and are converted by the currency's
//! exponent.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Descriptor, Parsed, PayloadError, SecretVar, amount_text, parse_fast, parse_json, parse_raw, present, required,
    unhandled, unix_to_rfc3339,
};
use crate::event::{EventKind, Normalized, Proof, Provider, Status};
use crate::money;
use crate::verify::{
    BasicAuth, FirstPresented, HmacSha256Hex, MIN_BASIC_PASSWORD_LEN, SecretError, SecretLists, Verifier, refs,
};

pub const SIGNATURE_HEADER: &str = "x-conscent-signature";

const SECRET_VAR: &str = "CONSCENT_WEBHOOK_SECRET";
const BASIC_AUTH_VAR: &str = "CONSCENT_BASIC_AUTH";
/// `true`: with the signature's secret set, Basic-only deliveries are accepted too.
const ACCEPT_BASIC_VAR: &str = "CONSCENT_ACCEPT_BASIC";

pub static DESCRIPTOR: Descriptor = Descriptor {
    secrets: &[
        SecretVar { var: SECRET_VAR, dev: Some("dev-conscent-secret-not-for-production") },
        SecretVar { var: BASIC_AUTH_VAR, dev: None },
    ],
    verifier,
    // Basic credentials, where accepted, sign nothing.
    proof: Proof::Token,
    forms: false,
    normalize: |body, _, _, _| normalize(body),
    dictionaries: &[(2, include_bytes!("../store/dictionaries/conscent.1"))],
    example: "refunded.subscription.json",
    settings: &[],
};

/// The signature when the request carries one, else Basic credentials: the first scheme the
/// request presents decides. With the signature's secret set, Basic credentials (which sign
/// nothing) are a downgrade any holder of them could use: both at once need
/// `CONSCENT_ACCEPT_BASIC=true`.
fn verifier(secrets: &SecretLists<'_>) -> Result<Option<Arc<dyn Verifier>>, SecretError> {
    let mut schemes: Vec<Box<dyn Verifier>> = Vec::new();
    let keys = secrets.keys(SECRET_VAR)?;
    if let Some(keys) = &keys {
        schemes.push(Box::new(HmacSha256Hex::new(SIGNATURE_HEADER, &refs(keys))));
    }
    let whole = |entry: &str| {
        entry.split_once(':').is_some_and(|(user, pass)| !user.is_empty() && pass.len() >= MIN_BASIC_PASSWORD_LEN)
    };
    let message = || format!("each entry must be key:secret, the secret at least {MIN_BASIC_PASSWORD_LEN} characters");
    if let Some(credentials) = secrets.checked(BASIC_AUTH_VAR, whole, message)? {
        if keys.is_some() && secrets.flag(ACCEPT_BASIC_VAR)? != Some(true) {
            return Err(SecretError {
                var: BASIC_AUTH_VAR,
                message: format!(
                    "with {SECRET_VAR} set, Basic-only deliveries would bypass the signature: unset it, or set {ACCEPT_BASIC_VAR}=true to accept both"
                ),
            });
        }
        schemes.push(Box::new(BasicAuth::new(&refs(&credentials))));
    }
    Ok((!schemes.is_empty()).then(|| {
        Arc::new(FirstPresented::new(schemes, "`x-conscent-signature` or `authorization`")) as Arc<dyn Verifier>
    }))
}

/// Conscent.ai's refund events and the product each refunds.
const EVENTS: &[(&str, &str)] =
    &[("refunded.pay_per_use", "pay_per_use"), ("refunded.subscription", "subscription"), ("refunded.pass", "pass")];

#[derive(Deserialize)]
struct Envelope<'a> {
    event: String,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    created_at: Option<i64>,
}

/// The whole body in one pass: what a valid delivery takes (see [`normalize`]).
#[derive(Deserialize)]
struct Whole {
    event: String,
    payload: Option<Payload>,
    created_at: Option<i64>,
}

#[derive(Deserialize)]
struct Payload {
    refund: Refund,
    user: Option<User>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Refund {
    #[serde(rename = "_id")]
    id: Option<String>,
    payment_gateway_refund_id: Option<String>,
    amount: Option<Box<RawValue>>,
    currency: Option<String>,
    cancel_access: Option<bool>,
    user_id: Option<String>,
    client_id: Option<String>,
    transaction_id: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    phone_number: Option<String>,
    email: Option<String>,
    user_id: Option<String>,
}

/// An old-format webhook (sign-up, login, payment pings: an object with neither the
/// `entity: "event"` envelope nor an `event`) is acknowledged and ignored: one held item per ping would bury the held
/// deliveries that matter. One that speaks of a refund is held, never dropped.
fn old_format(body: &[u8]) -> Option<Result<Parsed, PayloadError>> {
    // Read whole (serde_json's depth limit applies), so a hostile body is held as before.
    let object: serde_json::Map<String, serde_json::Value> = parse_fast(body)?;
    if object.is_empty() || object.contains_key("entity") || object.contains_key("event") {
        return None;
    }
    if body.windows(6).any(|w| w.eq_ignore_ascii_case(b"refund")) {
        return Some(Err(PayloadError::UnknownRefundEvent { field: "event", name: "an old-format webhook".into() }));
    }
    Some(Ok(Parsed::Ignored("conscent old-format webhook (no event envelope): not a refund".into())))
}

/// A valid body is read in one pass ([`Whole`]). Any other body is read in two steps, envelope first
/// and `payload` only for a refund event, so another event is ignored whatever its payload holds
/// and an error names its field; a body that parses whole parses that way too, to the same values.
pub fn normalize(body: &[u8]) -> Result<Parsed, PayloadError> {
    let (event, payload, created_at) = match parse_fast::<Whole>(body) {
        Some(whole) => (whole.event, whole.payload, whole.created_at),
        None => {
            if let Some(ping) = old_format(body) {
                return ping;
            }
            let env: Envelope = parse_json(body, "")?;
            if !EVENTS.iter().any(|(name, _)| *name == env.event) {
                return unhandled(Provider::Conscent, "event", &env.event);
            }
            let payload: Payload = parse_raw(env.payload.ok_or_else(|| PayloadError::missing("payload"))?, "payload")?;
            (env.event, Some(payload), env.created_at)
        }
    };
    let Some(&(_, product)) = EVENTS.iter().find(|(name, _)| *name == event) else {
        return unhandled(Provider::Conscent, "event", &event);
    };
    let payload = payload.ok_or_else(|| PayloadError::missing("payload"))?;
    let r = payload.refund;
    let mut n = Normalized::new(EventKind::Refund, event, Status::Succeeded, required(r.id, "payload.refund._id")?);

    let raw_amount = r.amount.ok_or_else(|| PayloadError::missing("payload.refund.amount"))?;
    let major = amount_text(&raw_amount).map_err(|m| PayloadError::invalid("payload.refund.amount", m))?;
    let currency = required(r.currency, "payload.refund.currency")?;
    n.amount = Some(
        money::to_minor(&major, &currency)
            .map_err(|source| PayloadError::Amount { field: "payload.refund.amount", source })?,
    );
    n.gateway_refund_id = present(r.payment_gateway_refund_id);
    n.order_ref = present(r.transaction_id);
    n.merchant_id = present(r.client_id);
    n.revoke_access = r.cancel_access.unwrap_or(false);
    n.product = Some(product.to_owned());
    n.occurred_at = present(r.updated_at).or(present(r.created_at)).or(created_at.and_then(unix_to_rfc3339));
    let user = payload.user;
    n.payor.id = present(r.user_id).or_else(|| user.as_ref().and_then(|u| present(u.user_id.clone())));
    if let Some(u) = user {
        n.payor.email = present(u.email);
        n.payor.phone = present(u.phone_number);
    }
    Ok(Parsed::Event(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_format_pings_are_ignored_and_a_refund_among_them_is_held() {
        for ping in
            [r#"{"type":"signup","userId":"u1","email":"a@example.com"}"#, r#"{"action":"login","userId":"u1"}"#]
        {
            assert!(matches!(normalize(ping.as_bytes()), Ok(Parsed::Ignored(_))), "{ping}");
        }
        let refund = r#"{"type":"refund","userId":"u1","amount":5}"#;
        assert!(matches!(normalize(refund.as_bytes()), Err(PayloadError::UnknownRefundEvent { .. })));
        // A new-format envelope without its event is still held, and so is an empty object.
        assert_eq!(normalize(br#"{"entity":"event","payload":{}}"#).unwrap_err(), PayloadError::missing("event"));
        assert_eq!(normalize(b"{}").unwrap_err(), PayloadError::missing("event"));
    }
}
