//! Foloosi's transaction-detail API: `GET {base}/transaction-detail/{transaction_no}` with the
//! merchant's `secret_key` header, as Foloosi's own plugins confirm a payment. Time-bound, so a
//! slow API answers 503 (and the provider retries) well inside the provider's own timeout.

use std::time::Duration;

use serde::Deserialize;

use super::foloosi::Detail;

/// Foloosi's production API.
pub const DEFAULT_BASE_URL: &str = "https://foloosi.com/api/v1/api";

/// The most one confirmation may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct FoloosiApi {
    base: String,
    secret_key: String,
    agent: ureq::Agent,
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
    pub fn new(base: &str, secret_key: &str) -> Self {
        let agent =
            ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build().into();
        FoloosiApi { base: base.trim_end_matches('/').to_owned(), secret_key: secret_key.to_owned(), agent }
    }

    /// What the API says of `transaction_no`, or `None` when it does not know the transaction.
    pub async fn transaction_detail(&self, transaction_no: &str) -> Result<Option<Detail>, ApiUnavailable> {
        let segment: String = form_urlencoded::byte_serialize(transaction_no.as_bytes()).collect();
        let url = format!("{}/transaction-detail/{segment}", self.base);
        let (agent, key) = (self.agent.clone(), self.secret_key.clone());
        let call = tokio::task::spawn_blocking(move || -> Result<(u16, String), String> {
            let mut res = agent.get(&url).header("secret_key", &key).call().map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            let body = res.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
            Ok((status, body))
        });
        let (status, body) = call.await.map_err(|e| ApiUnavailable(e.to_string()))?.map_err(ApiUnavailable)?;
        if status >= 500 || status == 429 {
            return Err(ApiUnavailable(format!("HTTP {status}")));
        }
        if status != 200 {
            return Ok(None);
        }
        let Ok(answer) = serde_json::from_str::<Answer>(&body) else {
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
