//! Rainforest's API, for reconciliation: refunds listed by creation time
//! (`GET /v1/payments?payment_type=REFUND`), and one refund by id (`GET /v1/refunds/{id}`).
//!
//! Every answer is an envelope (`{"status": "SUCCESS" | "ERROR", "data": ...}`). A list item is a
//! "payment" (`id`, `parent_id`, ...); the refund object names the same ids `refund_id` and
//! `payin_id`. Both become the body a `refund.<status>` webhook carries, so they are normalized
//! by [`super::rainforest::normalize`] to the same event and idempotency key as the webhook.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{ApiError, Fetched, Get, HttpGet, ListPage, ProviderApi, Window};
use crate::event::Provider;

/// Rainforest's production API (from its OpenAPI's servers, as captured by a third party: the
/// host's spelling is unverified, so it is a setting, `RAINFOREST_API_URL`).
pub const DEFAULT_BASE_URL: &str = "https://api.rainforestpay.com";

/// Refunds a list page asks for (Rainforest's maximum is 1,000; a smaller page keeps one answer
/// well inside [`MAX_ANSWER`] and a run's work bounded).
pub const PAGE_LIMIT: usize = 200;

/// One answer's bound: a page of [`PAGE_LIMIT`] payments is far below it.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// One call's bound, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct RainforestApi {
    base: String,
    api_key: String,
    version: String,
    http: Arc<dyn HttpGet>,
}

impl std::fmt::Debug for RainforestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RainforestApi")
            .field("base", &self.base)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl RainforestApi {
    /// `version` is sent as `Rainforest-Api-Version`: webhooks follow the platform's pinned API
    /// version, and fetched objects have the webhooks' shape only when the same one is asked for.
    pub fn new(base: &str, api_key: &str, version: &str, http: Arc<dyn HttpGet>) -> Self {
        RainforestApi {
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            version: version.to_owned(),
            http,
        }
    }

    fn get(&self, path_and_query: String) -> Get {
        Get {
            url: format!("{}{path_and_query}", self.base),
            headers: vec![
                ("authorization", format!("Bearer {}", self.api_key)),
                ("rainforest-api-version", self.version.clone()),
                ("accept", "application/json".into()),
            ],
        }
    }

    async fn ask(&self, path_and_query: String) -> Result<crate::api::Answer, ApiError> {
        Ok(self.http.get(self.get(path_and_query), MAX_ANSWER, TIMEOUT).await?)
    }
}

/// The list's query for `window` from `cursor`: both time bounds inclusive, oldest first so a
/// run that stops part-way has covered a prefix of the window.
pub fn list_query(window: &Window, cursor: Option<&str>) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut query = format!(
        "/v1/payments?payment_type=REFUND&created_at.start={}&created_at.end={}&limit={PAGE_LIMIT}&sort_by=created_at&sort_order=asc&omit_total_results=true",
        encode(&window.start.whole_seconds(true)),
        encode(&window.end.whole_seconds(false)),
    );
    if let Some(cursor) = cursor {
        query.push_str("&start_key=");
        query.push_str(&encode(cursor));
    }
    query
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: Option<String>,
    data: Option<T>,
}

#[derive(Deserialize)]
struct PaymentsPage {
    #[serde(default)]
    results: Vec<Map<String, Value>>,
    last_key: Option<String>,
}

fn envelope<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<Option<T>, ApiError> {
    let envelope: Envelope<T> =
        serde_json::from_slice(body).map_err(|_| ApiError::Unreadable("not Rainforest's envelope".into()))?;
    if envelope.status.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("SUCCESS")) {
        return Err(ApiError::Unreadable("an envelope whose status is not SUCCESS".into()));
    }
    Ok(envelope.data)
}

/// One list page: its refunds as webhook bodies, and the next page's cursor. A page with fewer
/// results than [`PAGE_LIMIT`] (or none) is the last, though `last_key` is set on it too.
pub fn parse_list(body: &[u8]) -> Result<ListPage, ApiError> {
    let page: PaymentsPage =
        envelope(body)?.ok_or_else(|| ApiError::Unreadable("a list answer without `data`".into()))?;
    let full = page.results.len() >= PAGE_LIMIT;
    let items = page
        .results
        .into_iter()
        .filter(|p| p.get("payment_type").and_then(Value::as_str).is_none_or(|t| t.eq_ignore_ascii_case("REFUND")))
        .map(|mut payment| {
            rename(&mut payment, "id", "refund_id");
            rename(&mut payment, "parent_id", "payin_id");
            payment.remove("payment_type");
            as_webhook(payment)
        })
        .collect();
    let next = if full { page.last_key.filter(|k| !k.is_empty()) } else { None };
    Ok(ListPage { items, next })
}

/// One refund by id (`None` when the answer has no refund).
pub fn parse_refund(body: &[u8]) -> Result<Option<Fetched>, ApiError> {
    Ok(envelope::<Map<String, Value>>(body)?.map(as_webhook))
}

fn rename(object: &mut Map<String, Value>, from: &str, to: &str) {
    if !object.contains_key(to)
        && let Some(v) = object.remove(from)
    {
        object.insert(to.to_owned(), v);
    }
}

/// The body of the `refund.<status>` webhook this refund's current status sends.
fn as_webhook(refund: Map<String, Value>) -> Fetched {
    let id = refund.get("refund_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let status = refund.get("status").and_then(Value::as_str).unwrap_or("unknown").to_ascii_lowercase();
    let body = serde_json::json!({ "data": refund, "event_type": format!("refund.{status}") });
    Fetched { id, body: serde_json::to_vec(&body).unwrap_or_default() }
}

#[async_trait]
impl ProviderApi for RainforestApi {
    fn provider(&self) -> Provider {
        Provider::Rainforest
    }

    async fn list(&self, window: &Window, cursor: Option<&str>) -> Result<ListPage, ApiError> {
        let answer = self.ask(list_query(window, cursor)).await?;
        if let Some(e) = ApiError::of_status(&answer) {
            return Err(e);
        }
        parse_list(&answer.body)
    }

    async fn fetch(&self, id: &str) -> Result<Option<Fetched>, ApiError> {
        let segment: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let answer = self.ask(format!("/v1/refunds/{segment}")).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if let Some(e) = ApiError::of_status(&answer) {
            return Err(e);
        }
        parse_refund(&answer.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Parsed, rainforest};

    /// A list item normalizes to the event (and so the idempotency key) the webhook of the same
    /// refund gives: the webhook fixture's refund, listed as a payment.
    #[test]
    fn a_listed_refund_is_the_webhooks_event() {
        let webhook =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/rainforest/refund.succeeded.json"))
                .unwrap();
        let data: Value = serde_json::from_slice::<Value>(&webhook).unwrap()["data"].clone();
        let mut payment = data.as_object().unwrap().clone();
        rename(&mut payment, "refund_id", "id");
        rename(&mut payment, "payin_id", "parent_id");
        payment.insert("payment_type".into(), "REFUND".into());
        let answer = serde_json::json!({"status": "SUCCESS", "data": {"results": [payment], "last_key": "rfd_x"}});
        let page = parse_list(&serde_json::to_vec(&answer).unwrap()).unwrap();
        assert_eq!(page.next, None, "fewer than a page: the last, whatever last_key says");
        let (Ok(Parsed::Event(listed)), Ok(Parsed::Event(pushed))) =
            (rainforest::normalize(&page.items[0].body), rainforest::normalize(&webhook))
        else {
            panic!("both normalize")
        };
        assert_eq!(listed, pushed);
        assert_eq!(page.items[0].id, "rfd_2sPMefai6yWsyp4MSGUkAo32pp7");
    }

    #[test]
    fn a_full_page_names_the_next_and_errors_are_read() {
        let results: Vec<Value> =
            (0..PAGE_LIMIT).map(|i| serde_json::json!({"id": format!("rfd_{i}"), "status": "CREATED"})).collect();
        let answer = serde_json::json!({"status": "SUCCESS", "data": {"results": results, "last_key": "rfd_199"}});
        let page = parse_list(&serde_json::to_vec(&answer).unwrap()).unwrap();
        assert_eq!((page.items.len(), page.next.as_deref()), (PAGE_LIMIT, Some("rfd_199")));
        for bad in
            [&b"<html>"[..], br#"{"status":"ERROR","data":null,"errors":[{"code":"x"}]}"#, br#"{"status":"SUCCESS"}"#]
        {
            assert!(matches!(parse_list(bad), Err(ApiError::Unreadable(_))), "{bad:?}");
        }
        assert_eq!(parse_refund(br#"{"status":"SUCCESS","data":null}"#).unwrap(), None);
    }

    #[test]
    fn the_list_query_is_inclusive_oldest_first_and_escaped() {
        let window =
            Window { start: "2026-12-01T00:00:00.5Z".parse().unwrap(), end: "2026-12-01T01:00:00.5Z".parse().unwrap() };
        let q = list_query(&window, Some("rfd_a&b"));
        assert!(q.starts_with("/v1/payments?payment_type=REFUND&created_at.start=2026-12-01T00%3A00%3A00Z"), "{q}");
        assert!(q.contains("&created_at.end=2026-12-01T01%3A00%3A01Z&"), "the end's own second is in: {q}");
        assert!(q.contains("&sort_order=asc") && q.ends_with("&start_key=rfd_a%26b"), "{q}");
    }
}
