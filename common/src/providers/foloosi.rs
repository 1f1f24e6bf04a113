//! Foloosi payment webhooks. Foloosi documents no signature and no refund webhook: it sends
//! payment outcomes (`transaction_status`), authenticated here by a shared token. `success` is a
//! payment `succeeded`; a refund or reversal status is a refund `succeeded`; anything else is a
//! payment `failed`, which matters because the customer may already have been debited.
//! Amounts are strings in major units.

use serde::Deserialize;

use super::{Parsed, PayloadError, ProviderSettings, Text, parse_json, present, required, text};
use crate::event::{EventKind, Normalized, Refusal, Status};
use crate::money;

pub const TOKEN_HEADER: &str = "x-webhook-token";
pub const TOKEN_QUERY: &str = "token";

/// Status words that mean money went back to the customer.
const REFUND_WORDS: &[&str] = &["refund", "revers", "chargeback"];

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    transfer: Transfer,
}

#[derive(Deserialize)]
struct Transfer {
    transaction_status: Option<String>,
    transaction_no: Option<String>,
    payment_reference: Option<String>,
    transaction_amount: Option<Text>,
    transaction_currency: Option<String>,
    transaction_message: Option<String>,
    api: Option<Api>,
}

#[derive(Deserialize)]
struct Api {
    customer_email: Option<String>,
    customer_mobile: Option<String>,
}

fn classify(status: &str) -> (EventKind, Status) {
    let s = status.to_ascii_lowercase();
    if s == "success" {
        (EventKind::Payment, Status::Succeeded)
    } else if REFUND_WORDS.iter().any(|w| s.contains(w)) {
        (EventKind::Refund, Status::Succeeded)
    } else {
        (EventKind::Payment, Status::Failed)
    }
}

pub fn normalize(body: &[u8], settings: &ProviderSettings) -> Result<Parsed, PayloadError> {
    let env: Envelope = parse_json(body, "")?;
    let t = env.data.transfer;
    let raw_status = required(t.transaction_status, "data.transfer.transaction_status")?;
    let (kind, status) = classify(&raw_status);
    let event_type = format!("transaction.{}", raw_status.to_ascii_lowercase());
    let mut n = Normalized::new(kind, event_type, status, required(t.transaction_no, "data.transfer.transaction_no")?);
    n.order_ref = present(t.payment_reference);
    n.merchant_id = settings.foloosi_merchant.clone();
    if let Some(amount) = text(t.transaction_amount) {
        let currency = required(t.transaction_currency, "data.transfer.transaction_currency")?;
        n.amount = Some(
            money::to_minor(&amount, &currency)
                .map_err(|source| PayloadError::Amount { field: "data.transfer.transaction_amount", source })?,
        );
    }
    let message = present(t.transaction_message);
    if status == Status::Failed {
        n.refusal = Some(Refusal { code: None, description: message.clone() });
    }
    n.reason = message;
    if let Some(api) = t.api {
        n.payor.email = present(api.customer_email);
        n.payor.phone = present(api.customer_mobile);
    }
    Ok(Parsed::Event(Box::new(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify() {
        assert_eq!(classify("success"), (EventKind::Payment, Status::Succeeded));
        assert_eq!(classify("SUCCESS"), (EventKind::Payment, Status::Succeeded));
        assert_eq!(classify("failed"), (EventKind::Payment, Status::Failed));
        assert_eq!(classify("cancelled"), (EventKind::Payment, Status::Failed));
        assert_eq!(classify("refunded"), (EventKind::Refund, Status::Succeeded));
        assert_eq!(classify("reversed"), (EventKind::Refund, Status::Succeeded));
    }
}
