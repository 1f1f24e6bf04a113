//! Foloosi's transaction-detail API: `GET {base}/transaction-detail/{transaction_no}` with the
//! merchant's `secret_key` header, as Foloosi's own plugins confirm a payment. Time-bound, so a
//! slow API answers 503 (and the provider retries) well inside the provider's own timeout.

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

/// The API could not answer: unreachable, too slow, or a 5xx. The delivery is not judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Foloosi's transaction-detail API is unavailable: {0}")]
pub struct ApiUnavailable(pub String);

#[derive(Deserialize)]
struct Answer {
    data: Option<RawDetail>,
}

/// `data` as the API sends it: amounts as strings or numbers.
#[derive(Deserialize)]
struct RawDetail {
    #[serde(alias = "transaction_status")]
    status: Option<String>,
    optional1: Option<super::Text>,
    transaction_amount: Option<super::Text>,
    transaction_currency: Option<String>,
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
    pub async fn transaction_detail(&self, transaction_no: &str) -> Result<Option<Detail>, ApiUnavailable> {
        let segment: String = form_urlencoded::byte_serialize(transaction_no.as_bytes()).collect();
        let url = format!("{}/transaction-detail/{segment}", self.base);
        let request = http::Request::get(&url)
            .header("secret_key", &self.secret_key)
            .body(Empty::new())
            .map_err(|e| ApiUnavailable(e.to_string()))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| ApiUnavailable(format!("no answer within {TIMEOUT:?}")))?
            .map_err(ApiUnavailable)?;
        if status >= 500 || status == 429 {
            return Err(ApiUnavailable(format!("HTTP {status}")));
        }
        if status != 200 {
            return Ok(None);
        }
        let Ok(answer) = serde_json::from_slice::<Answer>(&body) else {
            return Err(ApiUnavailable("an answer that is not the documented JSON".into()));
        };
        Ok(answer.data.map(|d| Detail {
            status: d.status,
            optional1: super::text(d.optional1),
            transaction_amount: super::text(d.transaction_amount),
            transaction_currency: d.transaction_currency,
        }))
    }
}
