//! Who is told what: the routing table (as data), the message each audience gets, and the
//! [`Notifier`] port that publishes one message to one audience.

mod routing;

pub use routing::{Routing, RoutingError};

use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;

use crate::event::{RefundEvent, Status};
use crate::held::HeldNotice;
use crate::money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The platform's support team.
    Internal,
    /// The merchant whose customer was refunded.
    Merchant,
    /// The person who paid.
    Payor,
}

impl Audience {
    pub const ALL: [Audience; 3] = [Audience::Internal, Audience::Merchant, Audience::Payor];

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Internal => "internal",
            Audience::Merchant => "merchant",
            Audience::Payor => "payor",
        }
    }
}

/// One message to one audience. `attributes` become SNS message attributes so subscribers can
/// filter without parsing `body`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub audience: Audience,
    pub event_id: String,
    pub attributes: Vec<(&'static str, String)>,
    /// JSON: the canonical event minus the raw payload, with personal data only for the payor,
    /// and a readable `text`.
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not notify {audience}: {message}")]
pub struct NotifyError {
    pub audience: &'static str,
    pub message: String,
}

#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// SNS's limit for one message, body and attributes together. A message over it could never be
/// published, so it is shortened instead of retried forever.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The notifications `event` produces under `routing`, in audience order. The payor is told only
/// of an event a signature or the provider's API proves, unless its provider is opted in
/// ([`Routing::token_reaches_payors`]).
pub fn notifications(event: &RefundEvent, routing: &Routing, platform: &str) -> Vec<Notification> {
    let token_only = event.proof == crate::event::Proof::Token && !routing.token_reaches_payors(event.provider);
    routing
        .audiences(event.provider, event.status)
        .into_iter()
        .filter(|a| !(token_only && *a == Audience::Payor))
        .map(|a| message(event, a, platform))
        .collect()
}

/// What the internal audience is told of a newly held delivery: which provider, why, and the id
/// to look it up by. Never its body.
pub fn held_notification(notice: &HeldNotice) -> Notification {
    let attributes = vec![
        ("provider", notice.provider.as_str().to_owned()),
        ("kind", "held".to_owned()),
        ("event_type", "held".to_owned()),
        ("status", "held".to_owned()),
        ("audience", Audience::Internal.as_str().to_owned()),
        ("merchant_id", "unknown".to_owned()),
        ("proof", notice.proof.unwrap_or(notice.provider.proof()).as_str().to_owned()),
    ];
    let mut body = json!({
        "held_id": notice.held_id,
        "audience": Audience::Internal,
        "provider": notice.provider,
        "kind": "held",
        "status": "held",
        "reason": notice.reason,
        "received_at": notice.received_at,
        "text": format!("A {} delivery could not be read: {}. It is held as {}; `refund-relay reprocess` stores it once the adapter reads it.", notice.provider, notice.reason, notice.held_id),
    });
    fit(&mut body, &attributes);
    Notification { audience: Audience::Internal, event_id: notice.held_id.clone(), attributes, body }
}

fn attributes_size(attributes: &[(&'static str, String)]) -> usize {
    // Each attribute is its name, its data type ("String") and its value.
    attributes.iter().map(|(k, v)| k.len() + "String".len() + v.len()).sum()
}

/// Shortens the longest texts in `body` until body and attributes fit [`MAX_MESSAGE_BYTES`].
/// `event_id` and every field stay; only their text is cut, and `truncated` says so.
fn fit(body: &mut serde_json::Value, attributes: &[(&'static str, String)]) {
    let budget = MAX_MESSAGE_BYTES.saturating_sub(attributes_size(attributes));
    for _ in 0..32 {
        let size = body.to_string().len();
        if size <= budget {
            return;
        }
        let excess = size - budget;
        let Some(longest) = longest_text(body) else { return };
        let keep = longest.len().saturating_sub(excess + 64);
        let mut cut = keep;
        while !longest.is_char_boundary(cut) {
            cut -= 1;
        }
        longest.truncate(cut);
        longest.push('…');
        body["truncated"] = json!(true);
    }
}

/// The longest string anywhere in `value` except the ids subscribers dedupe by.
fn longest_text(value: &mut serde_json::Value) -> Option<&mut String> {
    fn walk<'a>(v: &'a mut serde_json::Value, key: &str, best: &mut Option<&'a mut String>) {
        match v {
            serde_json::Value::String(s)
                if key != "event_id" && key != "held_id" && best.as_ref().is_none_or(|b| b.len() < s.len()) =>
            {
                *best = Some(s);
            }
            serde_json::Value::Object(m) => m.iter_mut().for_each(|(k, v)| walk(v, k, best)),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, key, best)),
            _ => {}
        }
    }
    let mut best = None;
    walk(value, "", &mut best);
    best
}

fn message(event: &RefundEvent, audience: Audience, platform: &str) -> Notification {
    let attributes = vec![
        ("provider", event.provider.as_str().to_owned()),
        ("kind", event.kind.as_str().to_owned()),
        ("event_type", event.event_type.clone()),
        ("status", event.status.as_str().to_owned()),
        ("audience", audience.as_str().to_owned()),
        ("merchant_id", event.merchant_id.clone().unwrap_or_else(|| "unknown".into())),
        ("proof", event.proof.as_str().to_owned()),
    ];
    let mut body = json!({
        "event_id": event.event_id,
        "audience": audience,
        "provider": event.provider,
        "kind": event.kind,
        "event_type": event.event_type,
        "status": event.status,
        "id": event.object_id,
        "gateway_refund_id": event.gateway_refund_id,
        "order_ref": event.order_ref,
        "merchant_id": event.merchant_id,
        "amount": event.amount,
        "order_total": event.order_total,
        "proof": event.proof,
        "reason": event.reason,
        "refusal": event.refusal,
        "product": event.product,
        "source": event.source,
        "occurred_at": event.occurred_at,
        "received_at": event.received_at,
        "text": text(event, audience, platform),
    });
    let fields = body.as_object_mut().expect("a json! object");
    match audience {
        Audience::Internal => {}
        // The merchant acts on access; it learns which of its customers, not how to reach them.
        Audience::Merchant => {
            fields.insert("payor_id".into(), json!(event.payor.id));
            fields.insert("access_revocation".into(), json!(event.revoke_access));
        }
        Audience::Payor => {
            fields.insert("payor".into(), json!(event.payor));
        }
    }
    fields.retain(|_, v| !v.is_null());
    fit(&mut body, &attributes);
    Notification { audience, event_id: event.event_id.to_string(), attributes, body }
}

fn noun(event: &RefundEvent) -> &'static str {
    match event.kind {
        crate::event::EventKind::Refund => "refund",
        crate::event::EventKind::Payment => "payment",
    }
}

/// The readable line each audience gets. The in-review texts follow Rainforest's guidance.
fn text(event: &RefundEvent, audience: Audience, platform: &str) -> String {
    let id = &event.object_id;
    let what = noun(event);
    // Where a provider sends only the order's total (Memberful), nobody is told a refund amount.
    let amount = match (&event.amount, &event.order_total) {
        (Some(m), _) => format!(" of {}", money::display(m)),
        (None, Some(total)) => format!(" (on an order of {})", money::display(total)),
        (None, None) => String::new(),
    };
    let merchant = event.merchant_id.as_deref().unwrap_or("unknown");
    match (event.status, audience) {
        (Status::InReview, Audience::Internal) => format!(
            "[System Alert] The below {what} has moved to the status of In Review. This means the {provider} risk \
             team has flagged the {what} for review and will be reaching out to the platform directly with the \
             additional information required to complete the review.\n\nMerchant ID: {merchant}\n\n{What} ID: {id}",
            provider = event.provider,
            What = capitalized(what),
        ),
        (Status::InReview, Audience::Payor) => format!(
            "Your {what} {id}{amount} is being reviewed. Reviews usually take a couple of days; you will hear \
             from us when it is complete."
        ),
        (Status::InReview, _) => format!(
            "[System Alert] {platform} has flagged the below {what} for further review. Do not worry, this is common \
             practice when processing payments; these reviews typically take a couple of days, and the {platform} \
             team will reach out directly if anything is needed. Your funds are safe.\n\n{What} ID: {id}",
            What = capitalized(what),
        ),
        (status, _) => {
            let verb = match status {
                Status::Created => "was created",
                Status::Processing => "is processing",
                Status::InReview => "is in review",
                Status::Succeeded => "succeeded",
                Status::Failed => "failed",
                Status::Canceled => "was canceled",
            };
            let why = match &event.refusal {
                Some(r) if status == Status::Failed => match (&r.description, &r.code) {
                    (Some(d), Some(c)) => format!(": {d} ({c})"),
                    (Some(d), None) => format!(": {d}"),
                    (None, Some(c)) => format!(" ({c})"),
                    (None, None) => String::new(),
                },
                _ => String::new(),
            };
            format!("{} {id}{amount} {verb}{why}.", capitalized(what))
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// Collects notifications in memory, for tests.
#[derive(Default)]
pub struct MemoryNotifier {
    sent: Mutex<Vec<Notification>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryNotifier {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn sent(&self) -> Vec<Notification> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn publish(&self, n: &Notification) -> Result<(), NotifyError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NotifyError { audience: n.audience.as_str(), message: "memory notifier set to fail".into() });
        }
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(n.clone());
        Ok(())
    }
}
