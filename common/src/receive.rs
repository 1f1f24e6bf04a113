//! The receiving pipeline as one call: route, method, size, signature; then media type, parse,
//! normalize and one conditional write, or a held delivery. Every entry point (the Lambda
//! functions, the local runner, the tests) goes through [`Receiver::receive`]; every refusal maps
//! to its HTTP status in [`ReceiveError::status`] alone, and nothing after authentication is a
//! refusal.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::Config;
use crate::credentials;
use crate::echo::bounded;
use crate::event::{EventId, IdempotencyKey, Proof, Provider, RefundEvent};
use crate::held::{HeldDelivery, HoldCode, HoldReason};
use crate::metrics::WebhookOutcome;
use crate::providers::foloosi;
use crate::providers::foloosi_api::{ConfirmError, FoloosiApi, MAX_TRANSACTION_NO};
use crate::providers::{Media, Parsed, PayloadError, ProviderSettings};
use crate::secrets::{ProviderVerifier, Rotation};
use crate::store::{EventStore, Hold, Put, StoreError, layout};
use crate::timestamp::Timestamp;
use crate::verify::{Presented, Verified, VerifyError};

/// One webhook delivery as any HTTP front sees it.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The body exactly as received (API Gateway's base64 already undone).
    pub body: &'a [u8],
}

/// Why a delivery was refused. Every variant happens before or at authentication: once a
/// delivery is authenticated it is stored, ignored or held, never refused. Only a store failure
/// comes after, and its 503 tells the provider to retry.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("no webhook route for provider `{0}`")]
    UnknownProvider(String),
    #[error("method {0} not allowed: webhooks are POSTed")]
    MethodNotAllowed(Method),
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(#[from] VerifyError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ReceiveError {
    /// The one place an error becomes an HTTP status. Only a store failure is a 5xx: it tells the
    /// provider to retry, which is exactly what it should do.
    pub fn status(&self) -> StatusCode {
        match self {
            ReceiveError::UnknownProvider(_) => StatusCode::NOT_FOUND,
            ReceiveError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ReceiveError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ReceiveError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ReceiveError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the refusal counts as in the metrics.
    pub fn outcome(&self) -> WebhookOutcome {
        match self {
            ReceiveError::Unauthorized(_) => WebhookOutcome::Unauthorized,
            ReceiveError::Store(StoreError::HeldCapReached { .. }) => WebhookOutcome::HeldOverCap,
            ReceiveError::Store(_) => WebhookOutcome::StoreUnavailable,
            ReceiveError::UnknownProvider(_)
            | ReceiveError::MethodNotAllowed(_)
            | ReceiveError::PayloadTooLarge { .. } => WebhookOutcome::Rejected,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ReceiveError::UnknownProvider(_) => "unknown_provider",
            ReceiveError::MethodNotAllowed(_) => "method_not_allowed",
            ReceiveError::PayloadTooLarge { .. } => "payload_too_large",
            ReceiveError::Unauthorized(_) => "unauthorized",
            ReceiveError::Store(StoreError::HeldCapReached { .. }) => "held_cap_reached",
            ReceiveError::Store(_) => "store_unavailable",
        }
    }

    fn answer(&self) -> Answer {
        // The store's own words may name tables and endpoints; the provider needs only "retry".
        let message = match self {
            ReceiveError::Store(StoreError::HeldCapReached { .. }) => {
                "too many unreadable deliveries this minute; retry later".into()
            }
            ReceiveError::Store(_) => "could not store the delivery; retry later".into(),
            _ => bounded(&self.to_string()).to_string(),
        };
        Answer::Refused { error: self.code(), message }
    }
}

/// The body of every answer: the README's "Responses" table, as a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// Authenticated: what became of the delivery.
    Kept(Kept),
    /// Before authentication, or a store (or confirming API) that failed: nothing was kept.
    Refused { error: &'static str, message: String },
}

/// What became of an authenticated delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Kept {
    /// Stored for the first time (200).
    Accepted { event_id: EventId },
    /// Already stored with the same content (200).
    Duplicate { event_id: EventId },
    /// An event we do not handle, acknowledged so that it is not retried (200).
    Ignored { reason: String },
    /// Kept raw: not readable today (202).
    Held { held_id: String, reason: String },
}

/// The answer to one delivery.
#[derive(Debug)]
pub struct Receipt {
    pub status: StatusCode,
    pub outcome: WebhookOutcome,
    /// The [`Answer`] as JSON.
    pub body: Value,
    /// The event, when this delivery stored it for the first time.
    pub stored: Option<RefundEvent>,
    /// The held delivery, when this delivery was held for the first time.
    pub held: Option<HeldDelivery>,
}

impl Receipt {
    fn new(status: StatusCode, outcome: WebhookOutcome, answer: &Answer) -> Self {
        let body = serde_json::to_value(answer).unwrap_or_default();
        Receipt { status, outcome, body, stored: None, held: None }
    }

    fn ok(outcome: WebhookOutcome, kept: Kept, stored: Option<RefundEvent>) -> Self {
        Receipt { stored, ..Receipt::new(StatusCode::OK, outcome, &Answer::Kept(kept)) }
    }

    pub fn into_response(self) -> http::Response<String> {
        let mut res = http::Response::new(self.body.to_string());
        *res.status_mut() = self.status;
        res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        res
    }
}

/// What today's adapter makes of an authenticated delivery, before anything is written.
#[derive(Debug)]
pub enum Reading {
    Event(Box<RefundEvent>),
    Ignored(String),
    Unreadable(HoldReason),
}

/// What reprocessing made of one held delivery.
#[derive(Debug)]
pub enum Reprocessed {
    /// Stored as a new event (or, with `dry_run`, would be).
    Accepted(Box<RefundEvent>),
    /// The event was already stored with the same content.
    Duplicate(Box<RefundEvent>),
    Ignored(String),
    /// Still unreadable, or in conflict with what is stored.
    StillHeld(HoldReason),
}

/// The receiving half of refund-relay, built once at start-up.
#[derive(Clone)]
pub struct Receiver {
    verifiers: Vec<(Provider, Arc<ProviderVerifier>)>,
    settings: ProviderSettings,
    foloosi_api: Option<FoloosiApi>,
    body_limit: usize,
    store: Arc<dyn EventStore>,
    clock: fn() -> OffsetDateTime,
}

impl Receiver {
    pub fn new(config: &Config, store: Arc<dyn EventStore>) -> Self {
        Receiver {
            verifiers: config
                .verifiers
                .iter()
                .map(|(p, v)| (*p, Arc::new(ProviderVerifier::fixed(v.clone()))))
                .collect(),
            settings: config.settings.clone(),
            foloosi_api: config.foloosi_api.clone(),
            body_limit: config.body_limit,
            store,
            clock: OffsetDateTime::now_utc,
        }
    }

    /// Verifies `provider`'s deliveries with secrets read from a store, re-read as `rotation` says.
    pub fn with_rotation(mut self, provider: Provider, rotation: Rotation) -> Self {
        for (p, v) in &mut self.verifiers {
            if *p == provider {
                *v = Arc::new(ProviderVerifier::rotating(v.current(), rotation));
                break;
            }
        }
        self
    }

    /// Replaces the wall clock, for tests of the replay window.
    pub fn with_clock(mut self, clock: fn() -> OffsetDateTime) -> Self {
        self.clock = clock;
        self
    }

    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    pub fn providers(&self) -> impl Iterator<Item = Provider> + '_ {
        self.verifiers.iter().map(|(p, _)| *p)
    }

    /// Receives one delivery for the provider named `route` (the path segment).
    pub async fn receive_route(&self, route: &str, req: WebhookRequest<'_>) -> Receipt {
        match route.parse::<Provider>() {
            Ok(p) => self.receive(p, req).await,
            Err(_) => refusal(route, ReceiveError::UnknownProvider(route.chars().take(64).collect())),
        }
    }

    pub async fn receive(&self, provider: Provider, req: WebhookRequest<'_>) -> Receipt {
        match self.try_receive(provider, req).await {
            Ok(receipt) => receipt,
            Err(e) => refusal(provider.as_str(), e),
        }
    }

    async fn try_receive(&self, provider: Provider, req: WebhookRequest<'_>) -> Result<Receipt, ReceiveError> {
        let verifier = self
            .verifiers
            .iter()
            .find(|(p, _)| *p == provider)
            .map(|(_, v)| v)
            .ok_or_else(|| ReceiveError::UnknownProvider(provider.to_string()))?;
        if req.method != Method::POST {
            return Err(ReceiveError::MethodNotAllowed(req.method.clone()));
        }
        if req.body.len() > self.body_limit {
            return Err(ReceiveError::PayloadTooLarge { limit: self.body_limit });
        }
        let now = (self.clock)();
        // Verify the raw bytes before anything parses them.
        let verified = verifier
            .verify(&Presented { headers: req.headers, query: req.query, body: req.body }, now.unix_timestamp())
            .await?;

        // Authenticated: from here on the delivery is stored, ignored or held, never refused.
        let received_at = Timestamp::from(now);
        let body = stripped(provider, req.body);
        let delivery = Delivery { headers: req.headers, query: req.query, body: &body, verified: &verified };
        let reading = self.read(provider, req.headers, req.query, &body, received_at, verified.clone()).await?;
        let event = match reading {
            Reading::Event(event) => event,
            Reading::Ignored(reason) => {
                tracing::info!(%provider, %reason, "ignored");
                return Ok(Receipt::ok(WebhookOutcome::Ignored, Kept::Ignored { reason }, None));
            }
            Reading::Unreadable(reason) => return self.hold(provider, delivery, received_at, &reason).await,
        };

        let put = self.store.put_if_absent(&event).await?;
        let span = tracing::info_span!("stored", %provider, event_id = %event.event_id, kind = event.kind.as_str(), status = %event.status);
        let _enter = span.enter();
        match put {
            Put::Stored => {
                tracing::info!("accepted");
                Ok(Receipt::ok(
                    WebhookOutcome::Accepted,
                    Kept::Accepted { event_id: event.event_id.clone() },
                    Some(*event),
                ))
            }
            Put::Duplicate(stored) if stored.same_content(&event) => {
                tracing::info!("duplicate");
                Ok(Receipt::ok(WebhookOutcome::Duplicate, Kept::Duplicate { event_id: event.event_id.clone() }, None))
            }
            Put::Duplicate(_) => {
                drop(_enter);
                self.hold(provider, delivery, received_at, &HoldReason::bare(HoldCode::Conflict)).await
            }
        }
    }

    /// Media type, UTF-8, parse, normalize (and, for Foloosi with its secret key, confirm) and
    /// the store's limits, for a delivery that is already authenticated (or was, when it was
    /// held). Writes nothing; fails only when a confirming API cannot answer.
    pub async fn read(
        &self,
        provider: Provider,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        received_at: Timestamp,
        verified: Verified,
    ) -> Result<Reading, ReceiveError> {
        let Some(media) = media_type(provider, headers) else {
            return Ok(Reading::Unreadable(HoldReason::bare(HoldCode::UnsupportedMediaType)));
        };
        let Ok(raw) = std::str::from_utf8(body) else {
            return Ok(Reading::Unreadable(HoldReason::new(HoldCode::Malformed, "body")));
        };
        let mut proof = verified.proof;
        let parsed = match (provider, &self.foloosi_api) {
            (Provider::Foloosi, Some(api)) => match self.confirm_foloosi(api, body, media).await {
                Ok(parsed) => {
                    proof = Proof::Confirmed;
                    parsed
                }
                Err(reason) => return Ok(Reading::Unreadable(reason)),
            },
            _ => provider.normalize(body, media, query, &self.settings),
        };
        let normalized = match parsed {
            Ok(Parsed::Event(n)) => *n,
            Ok(Parsed::Ignored(reason)) => return Ok(Reading::Ignored(reason)),
            Err(e) => return Ok(Reading::Unreadable(HoldReason::from(&e))),
        };
        let key = IdempotencyKey::new(provider, &normalized.object_id, &normalized.event_type, normalized.status);
        let event = RefundEvent {
            event_id: key.event_id(),
            idempotency_key: key,
            provider,
            kind: normalized.kind,
            event_type: normalized.event_type,
            status: normalized.status,
            object_id: normalized.object_id,
            gateway_refund_id: normalized.gateway_refund_id,
            order_ref: normalized.order_ref,
            merchant_id: normalized.merchant_id,
            payor: normalized.payor,
            amount: normalized.amount,
            order_total: normalized.order_total,
            reason: normalized.reason,
            refusal: normalized.refusal,
            revoke_access: normalized.revoke_access,
            product: normalized.product,
            source: normalized.source,
            occurred_at: normalized.occurred_at,
            received_at,
            delivery_id: verified.delivery_id,
            proof,
            raw_payload: raw.to_owned(),
        };
        // A write that can never succeed must not become a 503 the provider retries forever.
        if let Err(field) = layout::check_limits(&event) {
            return Ok(Reading::Unreadable(HoldReason::new(HoldCode::TooLargeForStore, field)));
        }
        Ok(Reading::Event(Box::new(event)))
    }

    /// A Foloosi delivery as its transaction-detail API tells it: unknown to the API, or for
    /// another order than the delivery says, it is held as unconfirmed. When the API cannot judge
    /// it (down, slow, our key refused, an answer we do not read) it is held with that reason,
    /// never answered 503: Foloosi documents no retry, and reprocessing asks again.
    async fn confirm_foloosi(
        &self,
        api: &FoloosiApi,
        body: &[u8],
        media: Media,
    ) -> Result<Result<Parsed, PayloadError>, HoldReason> {
        let delivery = foloosi::read(body, media).map_err(|e| HoldReason::from(&e))?;
        if delivery.transaction_no.len() > MAX_TRANSACTION_NO {
            return Err(HoldReason::new(HoldCode::InvalidField, "transaction_no"));
        }
        let detail = match api.transaction_detail(&delivery.transaction_no).await {
            Ok(Some(detail)) => detail,
            Ok(None) => return Err(HoldReason::new(HoldCode::Unconfirmed, "transaction_no")),
            Err(e) => {
                tracing::error!(error = %e, "Foloosi's confirmation failed: the delivery is held for reprocessing");
                return Err(match e {
                    ConfirmError::Unavailable(_) => HoldReason::bare(HoldCode::ConfirmationUnavailable),
                    ConfirmError::KeyRefused(_) => HoldReason::new(HoldCode::ConfirmationRefused, "secret_key"),
                    ConfirmError::Unreadable(_) => HoldReason::new(HoldCode::ConfirmationUnreadable, "data"),
                });
            }
        };
        // Both sides' order ids must agree whenever either names one.
        if (delivery.order_id.is_some() || detail.optional1.is_some()) && detail.optional1 != delivery.order_id {
            return Err(HoldReason::new(HoldCode::Unconfirmed, "optional1"));
        }
        Ok(foloosi::normalize_confirmed(body, media, &detail, &self.settings))
    }

    /// Keeps an authenticated delivery that cannot be stored as an event: 202 once it is
    /// durably held, 503 if the store fails (never a 2xx for something not stored).
    async fn hold(
        &self,
        provider: Provider,
        delivery: Delivery<'_>,
        received_at: Timestamp,
        reason: &HoldReason,
    ) -> Result<Receipt, ReceiveError> {
        let Delivery { headers, query, body, verified } = delivery;
        let held = HeldDelivery::new(provider, received_at, headers, query, body, verified, reason);
        let hold = self.store.hold(&held).await?;
        tracing::warn!(%provider, held_id = %held.held_id, %reason, "held: authenticated but not readable");
        let kept = Kept::Held { held_id: held.held_id.clone(), reason: held.reason.clone() };
        Ok(Receipt {
            held: matches!(hold, Hold::Held).then_some(held),
            ..Receipt::new(StatusCode::ACCEPTED, WebhookOutcome::Held, &Answer::Kept(kept))
        })
    }

    /// Runs today's adapters over a held delivery. With `dry_run` nothing is written; without it,
    /// what now reads goes through the same conditional write as a delivery (so reprocessing
    /// twice stores once), and the held item is marked resolved.
    pub async fn reprocess(&self, held: &HeldDelivery, dry_run: bool) -> Result<Reprocessed, ReceiveError> {
        let headers = held.header_map();
        // Items held before bodies were stripped still carry what they came with.
        let body = stripped(held.provider, &held.body);
        let reading =
            self.read(held.provider, &headers, held.query.as_deref(), &body, held.received_at, held.verified()).await?;
        let event = match reading {
            Reading::Event(event) => event,
            Reading::Ignored(reason) => {
                if !dry_run {
                    self.store.resolve_held(held, "ignored").await?;
                }
                return Ok(Reprocessed::Ignored(reason));
            }
            Reading::Unreadable(reason) => return Ok(Reprocessed::StillHeld(reason)),
        };
        if dry_run {
            return Ok(Reprocessed::Accepted(event));
        }
        match self.store.put_if_absent(&event).await? {
            Put::Stored => {
                self.store.resolve_held(held, &format!("accepted {}", event.event_id)).await?;
                Ok(Reprocessed::Accepted(event))
            }
            Put::Duplicate(stored) if stored.same_content(&event) => {
                self.store.resolve_held(held, &format!("duplicate {}", event.event_id)).await?;
                Ok(Reprocessed::Duplicate(event))
            }
            Put::Duplicate(_) => Ok(Reprocessed::StillHeld(HoldReason::bare(HoldCode::Conflict))),
        }
    }
}

/// An authenticated delivery as it is kept: its body without credentials.
#[derive(Clone, Copy)]
struct Delivery<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    body: &'a [u8],
    verified: &'a Verified,
}

/// The body with the values of credential-named fields replaced ([`credentials::strip_body`]),
/// before anything reads or stores it.
fn stripped(provider: Provider, body: &[u8]) -> Cow<'_, [u8]> {
    let stripped = credentials::strip_body(body);
    if !stripped.removed.is_empty() {
        tracing::warn!(%provider, fields = ?stripped.removed, "credentials taken out of the body before storing it");
    }
    stripped.body
}

/// The answer for a delivery refused before it reached the pipeline (a front that enforces the
/// body limit while reading, say), logged like every other refusal. `route` is the provider's
/// route segment as requested, which may name no provider at all.
pub fn refusal(route: &str, e: ReceiveError) -> Receipt {
    let status = e.status();
    let message = e.to_string();
    let error = bounded(&message);
    let provider = bounded(route);
    if status.is_server_error() {
        tracing::error!(%provider, %error, "refused: will be retried by the provider");
    } else {
        tracing::warn!(%provider, status = status.as_u16(), %error, "refused");
    }
    Receipt::new(status, e.outcome(), &e.answer())
}

/// JSON for everyone; form-encoded where the provider posts forms; no content type is read as
/// JSON, since some senders omit it. `None`: a type this provider's parsers do not read.
fn media_type(provider: Provider, headers: &HeaderMap) -> Option<Media> {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Some(Media::Json);
    };
    let text = value.to_str().unwrap_or_default();
    // Compared without case, with no lower-cased copy.
    let essence = text.split(';').next().unwrap_or_default().trim();
    let ends_with_json =
        essence.get(essence.len().saturating_sub(5)..).is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
    let media = if essence.eq_ignore_ascii_case("application/json") || ends_with_json {
        Media::Json
    } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Media::Form
    } else {
        return None;
    };
    provider.accepts(media).then_some(media)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's Responses table shows every answer: each status a delivery can be kept
    /// with, and each error code.
    #[test]
    fn the_readme_shows_every_answer() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let table = &readme[readme.find("## Responses").unwrap()..];
        let table = &table[..table[3..].find("\n## ").map_or(table.len(), |end| end + 3)];
        let id = IdempotencyKey::new(Provider::Rainforest, "rfd_1", "refund.created", crate::event::Status::Created)
            .event_id();
        let kept = [
            Kept::Accepted { event_id: id.clone() },
            Kept::Duplicate { event_id: id },
            Kept::Ignored { reason: "r".into() },
            Kept::Held { held_id: "h".into(), reason: "r".into() },
        ];
        for answer in kept.map(Answer::Kept) {
            let json = serde_json::to_string(&answer).unwrap();
            let status = json.split(',').next().unwrap();
            assert!(table.contains(status), "the README's Responses table has no `{status}`: {json}");
        }
        let refused = [
            ReceiveError::UnknownProvider("x".into()),
            ReceiveError::MethodNotAllowed(Method::GET),
            ReceiveError::PayloadTooLarge { limit: 1 },
            ReceiveError::Unauthorized(VerifyError::NoMatch),
            ReceiveError::Store(StoreError::Unavailable("x".into())),
            ReceiveError::Store(StoreError::HeldCapReached { provider: Provider::Foloosi, cap: 1 }),
        ];
        for e in refused {
            let json = serde_json::to_value(e.answer()).unwrap();
            assert_eq!(json["error"], e.code());
            let code = format!("\"error\":\"{}\"", e.code());
            assert!(table.contains(&code), "the README's Responses table has no `{code}`");
        }
    }

    /// The body a store failure answers names no table or endpoint.
    #[test]
    fn a_store_failure_says_only_retry() {
        let e = ReceiveError::Store(StoreError::Unavailable("table arn:aws:dynamodb:… at https://…".into()));
        let json = serde_json::to_value(e.answer()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "error": "store_unavailable", "message": "could not store the delivery; retry later" })
        );
    }
}
