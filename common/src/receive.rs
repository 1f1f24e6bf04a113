//! The receiving pipeline as one call: size, media type, signature, parse, normalize, one
//! conditional write. Every entry point (the Lambda functions, the local runner, the tests)
//! goes through [`Receiver::receive`], and every outcome maps to its HTTP status in
//! [`ReceiveError::status`] alone.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::Config;
use crate::event::{Provider, RefundEvent};
use crate::providers::{Media, Parsed, PayloadError, ProviderSettings};
use crate::store::{EventStore, Put, StoreError};
use crate::verify::{Presented, Verifier, VerifyError};

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

/// Why a delivery was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("no webhook route for provider `{0}`")]
    UnknownProvider(String),
    #[error("method {0} not allowed: webhooks are POSTed")]
    MethodNotAllowed(Method),
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type `{0}` is not accepted")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthorized(#[from] VerifyError),
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    BadPayload(#[from] PayloadError),
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
            ReceiveError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReceiveError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ReceiveError::NotUtf8 | ReceiveError::BadPayload(_) => StatusCode::BAD_REQUEST,
            ReceiveError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ReceiveError::UnknownProvider(_) => "unknown_provider",
            ReceiveError::MethodNotAllowed(_) => "method_not_allowed",
            ReceiveError::PayloadTooLarge { .. } => "payload_too_large",
            ReceiveError::UnsupportedMediaType(_) => "unsupported_media_type",
            ReceiveError::Unauthorized(_) => "unauthorized",
            ReceiveError::NotUtf8 | ReceiveError::BadPayload(_) => "invalid_payload",
            ReceiveError::Store(_) => "store_unavailable",
        }
    }

    fn body(&self) -> Value {
        let mut body = json!({ "error": self.code(), "message": bounded(&self.to_string()) });
        match self {
            ReceiveError::BadPayload(e) => body["field"] = json!(bounded(e.field())),
            ReceiveError::NotUtf8 => body["field"] = json!("body"),
            // The store's own words may name tables and endpoints; the provider needs only "retry".
            ReceiveError::Store(_) => body["message"] = json!("could not store the event; retry later"),
            _ => {}
        }
        body
    }
}

/// The answer to one delivery.
#[derive(Debug)]
pub struct Receipt {
    pub status: StatusCode,
    pub body: Value,
    /// The event, when this delivery stored it for the first time.
    pub stored: Option<RefundEvent>,
}

impl Receipt {
    fn ok(body: Value, stored: Option<RefundEvent>) -> Self {
        Receipt { status: StatusCode::OK, body, stored }
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

/// The receiving half of refund-relay, built once at start-up.
#[derive(Clone)]
pub struct Receiver {
    verifiers: Vec<(Provider, Arc<dyn Verifier>)>,
    settings: ProviderSettings,
    body_limit: usize,
    store: Arc<dyn EventStore>,
    clock: fn() -> OffsetDateTime,
}

impl Receiver {
    pub fn new(config: &Config, store: Arc<dyn EventStore>) -> Self {
        Receiver {
            verifiers: config.verifiers.clone(),
            settings: config.settings.clone(),
            body_limit: config.body_limit,
            store,
            clock: OffsetDateTime::now_utc,
        }
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
        let media = media_type(provider, req.headers)?;

        let now = (self.clock)();
        // Verify the raw bytes before anything parses them.
        let verified = verifier
            .verify(&Presented { headers: req.headers, query: req.query, body: req.body }, now.unix_timestamp())?;
        let raw = std::str::from_utf8(req.body).map_err(|_| ReceiveError::NotUtf8)?;

        let normalized = match provider.normalize(req.body, media, &self.settings)? {
            Parsed::Event(n) => *n,
            Parsed::Ignored(reason) => {
                tracing::info!(%provider, %reason, "ignored");
                return Ok(Receipt::ok(json!({ "status": "ignored", "reason": reason }), None));
            }
        };
        let key =
            RefundEvent::idempotency_key(provider, &normalized.object_id, &normalized.event_type, normalized.status);
        let event = RefundEvent {
            event_id: RefundEvent::event_id_for(&key),
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
            reason: normalized.reason,
            refusal: normalized.refusal,
            revoke_access: normalized.revoke_access,
            product: normalized.product,
            source: normalized.source,
            occurred_at: normalized.occurred_at,
            received_at: now.format(&Rfc3339).unwrap_or_default(),
            delivery_id: verified.delivery_id,
            raw_payload: raw.to_owned(),
        };

        let put = self.store.put_if_absent(&event).await?;
        let span = tracing::info_span!("stored", %provider, event_id = %event.event_id, kind = event.kind.as_str(), status = %event.status);
        let _enter = span.enter();
        Ok(match put {
            Put::Stored => {
                tracing::info!("accepted");
                Receipt::ok(json!({ "status": "accepted", "event_id": event.event_id }), Some(event))
            }
            Put::Duplicate => {
                tracing::info!("duplicate");
                Receipt::ok(json!({ "status": "duplicate", "event_id": event.event_id }), None)
            }
        })
    }
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
    Receipt { status, body: e.body(), stored: None }
}

/// Provider-supplied text quoted in an answer or a log line (an unknown event name, a repeated
/// key, an amount) is cut to this many characters: enough to recognise, never the whole body.
pub const MAX_ECHO: usize = 120;

/// `text` cut to [`MAX_ECHO`] characters, marked with `…` where cut.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHO) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// JSON for everyone; form-encoded where the provider posts forms; no content type is read as
/// JSON, since some senders omit it.
fn media_type(provider: Provider, headers: &HeaderMap) -> Result<Media, ReceiveError> {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(Media::Json);
    };
    let text = value.to_str().unwrap_or_default();
    // Compared without case, with no lower-cased copy.
    let essence = text.split(';').next().unwrap_or_default().trim();
    let ends_with_json =
        essence.get(essence.len().saturating_sub(5)..).is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
    let media = if essence.eq_ignore_ascii_case("application/json") || ends_with_json {
        Some(Media::Json)
    } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(Media::Form)
    } else {
        None
    };
    match media {
        Some(m) if provider.accepts(m) => Ok(m),
        _ => Err(ReceiveError::UnsupportedMediaType(text.chars().take(100).collect())),
    }
}
