//! Foloosi's transaction-detail API: `GET {base}/transaction-detail/{transaction_no}` with the
//! merchant's `secret_key` header, as Foloosi's own plugins confirm a payment. Time-bound, so a
//! slow API never holds the provider's request long. Foloosi documents no retry of its webhooks,
//! so no failure here becomes a 503: the delivery is held with the reason, and reprocessed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

use super::foloosi::Detail;

/// Foloosi's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.foloosi.com/v1/api";

/// The most one confirmation may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// More than any transaction detail; a larger answer is not the documented one.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Clone)]
pub struct FoloosiApi {
    base: String,
    secret_key: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for FoloosiApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoloosiApi").field("base", &self.base).finish_non_exhaustive()
    }
}

/// The longest transaction number asked about: Foloosi's are about 20 characters, and a longer
/// one can only be refused, on every retry.
pub const MAX_TRANSACTION_NO: usize = 128;

/// Why the API did not judge a delivery. None of them is the delivery's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// Unreachable, too slow, a 5xx or a 429: it may answer later.
    #[error("Foloosi's transaction-detail API is unavailable: {0}")]
    Unavailable(String),
    /// Our `secret_key` was refused (401 or 403): the configuration is at fault until it changes.
    #[error("Foloosi's transaction-detail API refused our secret key: HTTP {0}")]
    KeyRefused(u16),
    /// An answer that is not the documented one; asking again gets the same.
    #[error("Foloosi's transaction-detail API gave an answer we do not read: {0}")]
    Unreadable(&'static str),
}

#[derive(Deserialize)]
struct Answer {
    data: Option<RawDetail>,
}

/// `data` as the API sends it: amounts as strings or numbers, the status under either name.
#[derive(Deserialize)]
struct RawDetail {
    status: Option<String>,
    transaction_status: Option<String>,
    optional1: Option<super::Text>,
    transaction_amount: Option<super::Text>,
    transaction_currency: Option<String>,
    transaction_message: Option<String>,
    customer_email: Option<String>,
    customer_mobile: Option<String>,
}

impl FoloosiApi {
    /// Loads the system's root certificates once; fails if there are none.
    pub fn new(base: &str, secret_key: &str) -> std::io::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)?
            // Plain HTTP only where the base says so (a local stand-in); Foloosi's is HTTPS.
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(FoloosiApi { base: base.trim_end_matches('/').to_owned(), secret_key: secret_key.to_owned(), client })
    }

    /// What the API says of `transaction_no`, or `None` when it does not know the transaction.
    pub async fn transaction_detail(&self, transaction_no: &str) -> Result<Option<Detail>, ConfirmError> {
        let segment: String = form_urlencoded::byte_serialize(transaction_no.as_bytes()).collect();
        let url = format!("{}/transaction-detail/{segment}", self.base);
        let request = http::Request::get(&url)
            .header("secret_key", &self.secret_key)
            .body(Empty::new())
            .map_err(|_| ConfirmError::Unreadable("transaction_no"))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| ConfirmError::Unavailable(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ConfirmError::Unreadable("an answer over 64 KiB")
                } else {
                    ConfirmError::Unavailable(e.to_string())
                }
            })?;
            Ok::<_, ConfirmError>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| ConfirmError::Unavailable(format!("no answer within {TIMEOUT:?}")))??;
        match status {
            200 => {}
            401 | 403 => return Err(ConfirmError::KeyRefused(status)),
            429 | 500.. => return Err(ConfirmError::Unavailable(format!("HTTP {status}"))),
            _ => return Ok(None),
        }
        let Ok(answer) = serde_json::from_slice::<Answer>(&body) else {
            return Err(ConfirmError::Unreadable("not the documented JSON"));
        };
        let Some(d) = answer.data else { return Ok(None) };
        let status = match (super::present(d.status), super::present(d.transaction_status)) {
            (Some(a), Some(b)) if !a.trim().eq_ignore_ascii_case(b.trim()) => {
                return Err(ConfirmError::Unreadable("two statuses that disagree"));
            }
            (a, b) => a.or(b),
        };
        Ok(Some(Detail {
            status,
            optional1: super::text(d.optional1),
            transaction_amount: super::text(d.transaction_amount),
            transaction_currency: d.transaction_currency,
            message: super::present(d.transaction_message),
            email: super::present(d.customer_email),
            phone: super::present(d.customer_mobile),
        }))
    }
}
