//! Rainforest: `refund.{created,processing,succeeded,failed,canceled,in_review}`, signed with the
//! Svix scheme. `event_type` carries the status (lower case); `data` carries the refund, with
//! `amount` already in minor units.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Descriptor, Parsed, PayloadError, SecretVar, parse_fast, parse_json, parse_raw, present, required, unhandled,
};
use crate::event::{EventKind, Normalized, Proof, Provider, Refusal, Status};
use crate::money;
use crate::verify::{MIN_STANDARD_WEBHOOKS_KEY_BYTES, SecretError, SecretLists, StandardWebhooks, Verifier, refs};

/// Rainforest documents USD as the only currency today.
const DEFAULT_CURRENCY: &str = "USD";

const SECRET_VAR: &str = "RAINFOREST_WEBHOOK_SECRET";

pub static DESCRIPTOR: Descriptor = Descriptor {
    // base64 of "dev-rainforest-signing-key-only!"
    secrets: &[SecretVar { var: SECRET_VAR, dev: Some("whsec_ZGV2LXJhaW5mb3Jlc3Qtc2lnbmluZy1rZXktb25seSE=") }],
    verifier,
    proof: Proof::Signature,
    forms: false,
    normalize: |body, _, _, _| normalize(body),
    dictionaries: &[(3, include_bytes!("../store/dictionaries/rainforest.1"))],
    example: "refund.succeeded.json",
    settings: &[],
};

fn verifier(secrets: &SecretLists<'_>) -> Result<Option<Arc<dyn Verifier>>, SecretError> {
    let Some(keys) = secrets.list(SECRET_VAR) else { return Ok(None) };
    let scheme = StandardWebhooks::new(&refs(&keys), secrets.tolerance_secs, MIN_STANDARD_WEBHOOKS_KEY_BYTES)
        .map_err(|e| SecretError { var: SECRET_VAR, message: e.to_string() })?;
    Ok(Some(Arc::new(scheme)))
}

const EVENTS: &[(&str, Status)] = &[
    ("refund.created", Status::Created),
    ("refund.processing", Status::Processing),
    ("refund.in_review", Status::InReview),
    ("refund.succeeded", Status::Succeeded),
    ("refund.failed", Status::Failed),
    ("refund.canceled", Status::Canceled),
];

#[derive(Deserialize)]
struct Envelope<'a> {
    event_type: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// The whole body in one pass: what a valid delivery takes (see [`normalize`]).
#[derive(Deserialize)]
struct Whole {
    event_type: String,
    data: Option<Refund>,
}

#[derive(Deserialize)]
struct Refund {
    refund_id: Option<String>,
    status: Option<String>,
    payin_id: Option<String>,
    merchant_id: Option<String>,
    amount: Option<i64>,
    currency_code: Option<String>,
    reason: Option<String>,
    refusal_code: Option<String>,
    refusal_desc: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

/// A valid body is read in one pass ([`Whole`]). Any other body is read in two steps, envelope first
/// and `data` only for a handled event, so another family (`payin.*`) is ignored whatever its data
/// holds and an error names its field; a body that parses whole parses that way too, to the same
/// values.
pub fn normalize(body: &[u8]) -> Result<Parsed, PayloadError> {
    let (event_type, data) = match parse_fast::<Whole>(body) {
        Some(whole) => (whole.event_type, whole.data),
        None => {
            let env: Envelope = parse_json(body, "")?;
            if !EVENTS.iter().any(|(name, _)| *name == env.event_type) {
                return unhandled(Provider::Rainforest, "event_type", &env.event_type);
            }
            let r: Refund = parse_raw(env.data.ok_or_else(|| PayloadError::missing("data"))?, "data")?;
            (env.event_type, Some(r))
        }
    };
    let Some(&(_, status)) = EVENTS.iter().find(|(name, _)| *name == event_type) else {
        return unhandled(Provider::Rainforest, "event_type", &event_type);
    };
    let r = data.ok_or_else(|| PayloadError::missing("data"))?;
    // `event_type` decides the status; `data.status` must be there (the docs promise it) and agree.
    let data_status = required(r.status, "data.status")?;
    if data_status.parse::<Status>().is_err() {
        return Err(PayloadError::UnknownStatus { field: "data.status" });
    }
    if !data_status.eq_ignore_ascii_case(status.as_str()) {
        return Err(PayloadError::invalid(
            "data.status",
            format!("`{data_status}` disagrees with event_type `{event_type}`"),
        ));
    }
    let mut n = Normalized::new(EventKind::Refund, event_type, status, required(r.refund_id, "data.refund_id")?);
    n.order_ref = present(r.payin_id);
    n.merchant_id = present(r.merchant_id);
    let currency = present(r.currency_code).unwrap_or_else(|| DEFAULT_CURRENCY.to_owned());
    n.amount = r
        .amount
        .map(|a| money::from_minor(a, &currency))
        .transpose()
        .map_err(|source| PayloadError::Amount { field: "data.amount", source })?;
    n.reason = present(r.reason);
    let (code, description) = (present(r.refusal_code), present(r.refusal_desc));
    if code.is_some() || description.is_some() {
        n.refusal = Some(Refusal { code, description });
    }
    n.occurred_at = present(r.updated_at).or(present(r.created_at));
    Ok(Parsed::Event(Box::new(n)))
}
