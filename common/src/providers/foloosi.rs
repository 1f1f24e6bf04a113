//! Foloosi payment webhooks and server callbacks. Foloosi documents no signature and no refund
//! webhook: it sends payment outcomes, authenticated here by a shared token and, with
//! `FOLOOSI_SECRET_KEY` set, confirmed by Foloosi's transaction-detail API (what Foloosi's own
//! plugins do, and the only real proof of origin for an unsigned provider).
//!
//! Two shapes arrive: the JSON webhook (`data.transfer.{transaction_status, transaction_no, ...}`)
//! and the form-encoded callback of Foloosi's plugins (`transaction_no`, `order_id`, perhaps
//! `status`; a `secret_key` field in it is never trusted). The merchant's order id is
//! `api.optional1` (`order_id` in a callback); amounts are major units, as strings or numbers.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    Descriptor, Media, Parsed, PayloadError, ProviderSettings, SecretVar, Setting, Text, TextSetting, form_to_json,
    parse_json, present, required, text,
};
use crate::event::{EventKind, Normalized, Proof, Refusal, Status};
use crate::money;
use crate::verify::{SecretError, SecretLists, Verifier};

pub const TOKEN_HEADER: &str = "x-webhook-token";
pub const TOKEN_QUERY: &str = "token";

const TOKEN_VAR: &str = "FOLOOSI_WEBHOOK_TOKEN";

pub static DESCRIPTOR: Descriptor = Descriptor {
    secrets: &[SecretVar { var: TOKEN_VAR, dev: Some("dev-foloosi-token-not-for-production") }],
    verifier,
    proof: Proof::Token,
    forms: true,
    normalize: |body, media, _, settings| normalize(body, media, settings),
    dictionaries: &[(5, include_bytes!("../store/dictionaries/foloosi.1"))],
    example: "transaction.success.json",
    settings: &[Setting::Text(&MERCHANT)],
};

/// The merchant id stamped on its events.
pub static MERCHANT: TextSetting = TextSetting { var: "FOLOOSI_MERCHANT_ID" };

fn verifier(secrets: &SecretLists<'_>) -> Result<Option<Arc<dyn Verifier>>, SecretError> {
    super::shared_token(secrets, TOKEN_VAR, TOKEN_HEADER, TOKEN_QUERY, "FOLOOSI_QUERY_TOKEN")
}

/// Every status word a Foloosi source uses, and what it means: `success` and `failure` (its
/// webhook docs and plugins), `closed` (the payer closed the widget). Anything else is held: a
/// word we do not know is never guessed into a success, a failure or a refund.
const STATUSES: &[(&str, EventKind, Status)] = &[
    ("success", EventKind::Payment, Status::Succeeded),
    ("failure", EventKind::Payment, Status::Failed),
    // No charge happened, so nobody is told of a failure.
    ("closed", EventKind::Payment, Status::Canceled),
];

/// What the table makes of a status word (case ignored), or `None` for a word we do not know.
pub fn classify(status: &str) -> Option<(EventKind, Status)> {
    let word = status.trim();
    STATUSES.iter().find(|(w, ..)| w.eq_ignore_ascii_case(word)).map(|&(_, kind, status)| (kind, status))
}

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    transfer: Transfer,
}

#[derive(Deserialize, Default)]
struct Transfer {
    transaction_status: Option<String>,
    transaction_no: Option<String>,
    payment_reference: Option<String>,
    transaction_amount: Option<Text>,
    transaction_currency: Option<String>,
    transaction_message: Option<String>,
    api: Option<Api>,
}

#[derive(Deserialize, Default)]
struct Api {
    optional1: Option<Text>,
    customer_email: Option<String>,
    customer_mobile: Option<String>,
}

/// The form callback of Foloosi's plugins. `secret_key` is not a field of ours: a body cannot
/// authenticate itself.
#[derive(Deserialize)]
struct Callback {
    transaction_no: Option<String>,
    order_id: Option<Text>,
    #[serde(alias = "transaction_status")]
    status: Option<String>,
    #[serde(alias = "transaction_amount")]
    amount: Option<Text>,
    #[serde(alias = "transaction_currency")]
    currency: Option<String>,
}

/// A delivery read but not yet judged: what it says, before the status table or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub transaction_no: String,
    /// The merchant's order id (`api.optional1`, or a callback's `order_id`).
    pub order_id: Option<String>,
    pub status: Option<String>,
    pub payment_reference: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub message: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Field names as a JSON webhook or a callback calls them, for reasons that name the field.
struct Fields {
    status: &'static str,
    amount: &'static str,
}

const WEBHOOK_FIELDS: Fields =
    Fields { status: "data.transfer.transaction_status", amount: "data.transfer.transaction_amount" };
const CALLBACK_FIELDS: Fields = Fields { status: "status", amount: "amount" };

pub fn read(body: &[u8], media: Media) -> Result<Delivery, PayloadError> {
    match media {
        Media::Json => {
            let t = parse_json::<Envelope>(body, "")?.data.transfer;
            let api = t.api.unwrap_or_default();
            Ok(Delivery {
                transaction_no: required(t.transaction_no, "data.transfer.transaction_no")?,
                order_id: text(api.optional1),
                status: present(t.transaction_status),
                payment_reference: present(t.payment_reference),
                amount: text(t.transaction_amount),
                currency: present(t.transaction_currency),
                message: present(t.transaction_message),
                email: present(api.customer_email),
                phone: present(api.customer_mobile),
            })
        }
        Media::Form => {
            let c: Callback = parse_json(&form_to_json(body)?, "")?;
            Ok(Delivery {
                transaction_no: required(c.transaction_no, "transaction_no")?,
                order_id: text(c.order_id),
                status: present(c.status),
                payment_reference: None,
                amount: text(c.amount),
                currency: present(c.currency),
                message: None,
                email: None,
                phone: None,
            })
        }
    }
}

fn fields(media: Media) -> &'static Fields {
    match media {
        Media::Json => &WEBHOOK_FIELDS,
        Media::Form => &CALLBACK_FIELDS,
    }
}

/// Without confirmation: the delivery's own status, through the table. A callback that carries
/// no status cannot be stored without asking Foloosi.
pub fn normalize(body: &[u8], media: Media, settings: &ProviderSettings) -> Result<Parsed, PayloadError> {
    let d = read(body, media)?;
    let f = fields(media);
    let Some(status) = d.status.clone() else {
        return Err(match media {
            Media::Form => PayloadError::NeedsConfirmation { field: f.status },
            Media::Json => PayloadError::missing(f.status),
        });
    };
    event(d, &status, f, settings)
}

/// What Foloosi's transaction-detail API says of a transaction (`data` of its answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Detail {
    pub status: Option<String>,
    pub optional1: Option<String>,
    pub transaction_amount: Option<String>,
    pub transaction_currency: Option<String>,
    pub message: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// With confirmation: the API's status (and amount and currency where it gives them) win over
/// the delivery's. The caller has checked that the order ids agree.
pub fn normalize_confirmed(
    body: &[u8],
    media: Media,
    detail: &Detail,
    settings: &ProviderSettings,
) -> Result<Parsed, PayloadError> {
    let mut d = read(body, media)?;
    let status = present(detail.status.clone()).ok_or(PayloadError::NeedsConfirmation { field: "data.status" })?;
    if let Some(amount) = present(detail.transaction_amount.clone()) {
        d.amount = Some(amount);
        d.currency = present(detail.transaction_currency.clone()).or(d.currency);
    }
    // What reaches a payor (an address, a message) comes from Foloosi, never from the body: a
    // body carrying a real transaction number could otherwise choose both.
    d.order_id = detail.optional1.clone().or(d.order_id);
    d.email = detail.email.clone();
    d.phone = detail.phone.clone();
    d.message = detail.message.clone();
    // Names the API's fields, since those are what the event now says.
    event(d, &status, &Fields { status: "data.status", amount: "data.transaction_amount" }, settings)
}

fn event(d: Delivery, status_word: &str, f: &Fields, settings: &ProviderSettings) -> Result<Parsed, PayloadError> {
    let (kind, status) = classify(status_word).ok_or(PayloadError::UnknownStatus { field: f.status })?;
    let event_type = format!("transaction.{}", status_word.trim().to_ascii_lowercase());
    let mut n = Normalized::new(kind, event_type, status, d.transaction_no);
    n.order_ref = d.order_id;
    n.gateway_refund_id = d.payment_reference;
    n.merchant_id = settings.text(&MERCHANT);
    if let Some(amount) = d.amount {
        let currency = d.currency.ok_or_else(|| PayloadError::missing("data.transfer.transaction_currency"))?;
        n.amount = Some(
            money::to_minor(&amount, &currency).map_err(|source| PayloadError::Amount { field: f.amount, source })?,
        );
    }
    if status == Status::Failed {
        n.refusal = Some(Refusal { code: None, description: d.message.clone() });
    }
    n.reason = d.message;
    n.payor.email = d.email;
    n.payor.phone = d.phone;
    Ok(Parsed::Event(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_come_from_the_table_only() {
        assert_eq!(classify("success"), Some((EventKind::Payment, Status::Succeeded)));
        assert_eq!(classify("SUCCESS"), Some((EventKind::Payment, Status::Succeeded)));
        assert_eq!(classify("failure"), Some((EventKind::Payment, Status::Failed)));
        assert_eq!(classify("closed"), Some((EventKind::Payment, Status::Canceled)));
        // Words no Foloosi source uses are not guessed at, refunds least of all.
        for unknown in ["failed", "declined", "cancelled", "pending", "delayed", "refunded", "refund_success"] {
            assert_eq!(classify(unknown), None, "{unknown}");
        }
        // Words that merely contain a known one are not known.
        for unknown in ["reversed", "refund_rejected", "success_pending", "not success", "chargeback", ""] {
            assert_eq!(classify(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_failure_is_never_a_success() {
        assert_eq!(classify("failure").map(|(_, s)| s), Some(Status::Failed));
        for word in ["payment_failed_success", "rejected", "success_rejected", "failure_success"] {
            assert_eq!(classify(word), None, "{word}");
        }
    }

    #[test]
    fn a_callback_secret_key_is_not_read_and_a_missing_status_needs_confirmation() {
        let body = b"transaction_no=FLN1&order_id=order-1&secret_key=anything";
        let d = read(body, Media::Form).unwrap();
        assert_eq!(d.order_id.as_deref(), Some("order-1"));
        assert_eq!(
            normalize(body, Media::Form, &ProviderSettings::default()),
            Err(PayloadError::NeedsConfirmation { field: "status" })
        );
    }
}
