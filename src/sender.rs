//! The provider's side of the wire: a delivery as a provider sends it, signed as it signs it, and
//! posted: what `refund-relay sign` and `send` and the Lambda event files are made with, and how
//! the tests post to a server.

use std::path::Path;

use anyhow::Context;
use common::config::Config;
use common::event::Provider;

/// A delivery id unique to this process and moment, like a provider's own.
pub fn fresh_delivery_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("msg_{nanos:x}{:x}", std::process::id())
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The content type a fixture is sent with: form-encoded for `.form` files.
pub fn content_type(file: &Path) -> &'static str {
    if file.extension().is_some_and(|e| e == "form") { "application/x-www-form-urlencoded" } else { "application/json" }
}

/// The headers (content type first) a provider sends with `body`.
pub fn signed_headers(
    config: &Config,
    provider: Provider,
    file: &Path,
    body: &[u8],
    timestamp: i64,
    delivery_id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let verifier = config.verifier(provider).with_context(|| format!("{provider} is not configured"))?;
    let mut headers = vec![("Content-Type".to_owned(), content_type(file).to_owned())];
    headers.extend(verifier.sign(body, timestamp, delivery_id));
    Ok(headers)
}

/// POSTs `body`; any HTTP status is an answer, not an error.
pub fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut res = req.send(body).with_context(|| format!("posting to {url}"))?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    Ok((status, text))
}
