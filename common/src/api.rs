//! Asking a provider what it knows: the port every provider API implements.
//!
//! The core builds each request and reads each answer (pure functions over bytes, fuzzed like
//! the adapters); the HTTP call itself goes through [`HttpGet`], implemented outside the core on
//! the HTTP and TLS stack the functions already link. What a provider's API returns is turned
//! into the body its webhook would have carried ([`Fetched`]), so a fetched object goes through
//! the provider's own normalization to the same canonical event and idempotency key.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::{ConfigError, Env};
use crate::event::Provider;
use crate::providers::rainforest_api;
use crate::timestamp::Timestamp;

/// One GET: a URL and its headers (credentials among them: never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Get {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Get {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| *k).collect();
        f.debug_struct("Get").field("url", &self.url).field("headers", &names).finish()
    }
}

/// An answer: its status, `Retry-After` when it said one, and its body (at most the limit asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("an answer over {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Failed(String),
}

/// The HTTP client every provider API shares.
#[async_trait]
pub trait HttpGet: Send + Sync {
    /// One GET, bounded by `timeout` (connection included) and by `limit` bytes of body.
    async fn get(&self, request: Get, limit: usize, timeout: Duration) -> Result<Answer, TransportError>;
}

/// Why a provider's API did not answer a question. None is the provider's object's fault: the
/// sweep counts it and asks again on its next run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 429: asked to wait (`Retry-After` when given).
    #[error("rate limited{}", .0.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited(Option<Duration>),
    /// Unreachable, too slow, or a 5xx: it may answer later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 401 or 403: our credentials are at fault until they change.
    #[error("refused our credentials: HTTP {0}")]
    Refused(u16),
    /// An answer that is not the documented one.
    #[error("an answer we do not read: {0}")]
    Unreadable(String),
}

impl ApiError {
    /// The error an answer's status means, or `None` for a 2xx.
    pub fn of_status(answer: &Answer) -> Option<ApiError> {
        match answer.status {
            200..=299 => None,
            429 => Some(ApiError::RateLimited(answer.retry_after)),
            401 | 403 => Some(ApiError::Refused(answer.status)),
            500.. => Some(ApiError::Unavailable(format!("HTTP {}", answer.status))),
            other => Some(ApiError::Unreadable(format!("HTTP {other}"))),
        }
    }
}

impl From<TransportError> for ApiError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::TooLarge(limit) => ApiError::Unreadable(format!("an answer over {limit} bytes")),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// Creation times to list, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One object as the provider's API gave it, rewritten as the body its webhook would have
/// carried (JSON), and its id for the sweep's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub id: String,
    pub body: Vec<u8>,
}

/// One page of a list, and where the next begins (`None`: the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Fetched>,
    pub next: Option<String>,
}

/// A provider's API, as the sweep asks it.
#[async_trait]
pub trait ProviderApi: Send + Sync {
    fn provider(&self) -> Provider;

    /// One page of the refunds created in `window`, from `cursor` (the previous page's `next`).
    async fn list(&self, window: &Window, cursor: Option<&str>) -> Result<ListPage, ApiError>;

    /// One refund by its id, `None` when the provider does not know it.
    async fn fetch(&self, id: &str) -> Result<Option<Fetched>, ApiError>;
}

/// The providers' APIs the environment configures, on `http`: Rainforest's with
/// `RAINFOREST_API_KEY` (and `RAINFOREST_API_VERSION`, required with it: fetched objects have the
/// webhooks' shape only under the version the platform pins; `RAINFOREST_API_URL` optional).
pub fn configured(env: Env, http: Arc<dyn HttpGet>) -> Result<Vec<Arc<dyn ProviderApi>>, ConfigError> {
    let mut apis: Vec<Arc<dyn ProviderApi>> = Vec::new();
    if let Some(key) = env("RAINFOREST_API_KEY") {
        let version = env("RAINFOREST_API_VERSION").ok_or_else(|| ConfigError::Invalid {
            var: "RAINFOREST_API_VERSION".into(),
            message: "required with RAINFOREST_API_KEY: the API version your Rainforest platform pins".into(),
        })?;
        let base = env("RAINFOREST_API_URL").unwrap_or_else(|| rainforest_api::DEFAULT_BASE_URL.into());
        apis.push(Arc::new(rainforest_api::RainforestApi::new(&base, key.trim(), version.trim(), http)));
    }
    Ok(apis)
}

/// Why `provider` is not swept when no API of it is configured.
pub fn why_not_swept(provider: Provider) -> &'static str {
    match provider {
        Provider::Rainforest => "no API configured (RAINFOREST_API_KEY)",
        Provider::Webforce => "WebforceHQ documents no list API",
        Provider::Foloosi => "Foloosi lists nothing; `reprocess` confirms its held deliveries",
        Provider::Memberful | Provider::Conscent => "its sweep is not built yet",
    }
}
