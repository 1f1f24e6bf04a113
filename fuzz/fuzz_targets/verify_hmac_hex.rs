//! HMAC-SHA256 hex (Memberful, Conscent.ai): an arbitrary signature header value and body.
//!
//! Input: one line (the header value), then the body. Oracle, computed independently: the scheme
//! accepts exactly when the trimmed header is the hex (either case) of HMAC-SHA256(secret, body).
#![no_main]

use common::verify::{HmacSha256Hex, Presented, Verifier};
use fuzz_support::{HMAC_SECRET, NOW, header_value, lines};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const HEADER: &str = "x-memberful-webhook-signature";

fuzz_target!(|data: &[u8]| {
    let Some((values, body)) = lines(data, 1) else { return };
    let mut headers = HeaderMap::new();
    if let Some(v) = header_value(values[0]) {
        headers.insert(HEADER, v);
    }
    let scheme = HmacSha256Hex::new(HEADER, &[HMAC_SECRET]);
    let result = scheme.verify(&Presented { headers: &headers, query: None, body }, NOW);

    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected = mac.finalize().into_bytes().to_vec();
    let presented = headers.get(HEADER).and_then(|v| v.to_str().ok()).and_then(|s| hex::decode(s.trim()).ok());
    let genuine = presented.as_deref() == Some(expected.as_slice());
    assert_eq!(
        result.is_ok(),
        genuine,
        "verify said {result:?} for a {} signature",
        if genuine { "genuine" } else { "wrong" }
    );
});
