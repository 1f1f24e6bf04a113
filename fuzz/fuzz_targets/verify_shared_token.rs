//! Shared token (WebforceHQ, Foloosi): an arbitrary `X-Webhook-Token` header and query string.
//!
//! Input: one flag byte (bit 0: send the header line; bit 1: send the query line), then two
//! lines (header value, query string). Oracle, computed independently: the header, when sent,
//! decides (trimmed, it must be the token); otherwise the first `token` parameter of the query
//! (form-decoded) must be the token.
#![no_main]

use common::verify::{Presented, SharedToken, Verifier};
use fuzz_support::{NOW, TOKEN, header_value, lines};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

const HEADER: &str = "x-webhook-token";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let Some((values, _)) = lines(data, 2) else { return };
    let mut headers = HeaderMap::new();
    if flags & 1 != 0
        && let Some(v) = header_value(values[0])
    {
        headers.insert(HEADER, v);
    }
    // A query string reaches the pipeline as text.
    let query = if flags & 2 != 0 { std::str::from_utf8(values[1]).ok() } else { None };
    let scheme = SharedToken::new(HEADER, Some("token"), &[TOKEN]);
    let req = Presented { headers: &headers, query, body: b"" };
    let result = scheme.verify(&req, NOW);

    let genuine = match headers.get(HEADER) {
        Some(v) => v.to_str().is_ok_and(|s| s.trim() == TOKEN),
        None => query
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v))
            .is_some_and(|t| t == TOKEN),
    };
    assert_eq!(result.is_ok(), genuine, "verify said {result:?}");
    assert_eq!(
        scheme.presented(&req),
        headers.contains_key(HEADER)
            || query.is_some_and(|q| { form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "token") })
    );
});
