//! HTTP Basic (Conscent.ai's alternative): an arbitrary `Authorization` header value.
//!
//! Input: the header value (up to the first newline). Oracle, computed independently: accepted
//! exactly when the value is `Basic <base64 of the configured user:password>` (scheme in any
//! case, surrounding blanks allowed).
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::verify::{BasicAuth, Presented, Verifier};
use fuzz_support::{BASIC_PAIR, NOW, header_value};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Some(v) = header_value(value) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let scheme = BasicAuth::new(&[BASIC_PAIR]);
    let result = scheme.verify(&Presented { headers: &headers, query: None, body: b"" }, NOW);

    let genuine = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| B64.decode(b64.trim()).ok())
        .is_some_and(|decoded| decoded == BASIC_PAIR.as_bytes());
    assert_eq!(result.is_ok(), genuine, "verify said {result:?}");
});
