//! Standard Webhooks / Svix (Rainforest): arbitrary `*-id`, `*-timestamp`, `*-signature` header
//! values and body, verified at `NOW`.
//!
//! Input: one flag byte (bit 0: `webhook-*` names instead of `svix-*`), then three lines (id,
//! timestamp, signature), then the body. The oracle is computed independently of the scheme:
//! - sound: `Ok` only if the timestamp is inside the window and one `v1,` entry is the HMAC of
//!   exactly `{id}.{timestamp}.{body}`, and the delivery id is the id header;
//! - complete: a genuine signature among at most 16 entries, inside the window, is never refused.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::verify::{Presented, StandardWebhooks, Verifier};
use fuzz_support::{NOW, TOLERANCE, WHSEC, header_value, lines};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

fn tag(id: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let key = B64.decode(WHSEC.trim_start_matches("whsec_")).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let Some((values, body)) = lines(data, 3) else { return };
    let prefix = if flags & 1 == 0 { "svix" } else { "webhook" };
    let names = ["id", "timestamp", "signature"].map(|n| format!("{prefix}-{n}"));
    let mut headers = HeaderMap::new();
    for (name, value) in names.iter().zip(&values) {
        if let Some(v) = header_value(value) {
            headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), v);
        }
    }
    let scheme = StandardWebhooks::new(&[WHSEC], TOLERANCE, 16).unwrap();
    let result = scheme.verify(&Presented { headers: &headers, query: None, body }, NOW);

    let text = |i: usize| headers.get(names[i].as_str()).and_then(|v| v.to_str().ok());
    let (id, ts, sigs) = (text(0), text(1), text(2));
    let in_window = ts.and_then(|t| t.parse::<i64>().ok()).is_some_and(|t| NOW.abs_diff(t) <= TOLERANCE);
    let genuine = match (id, ts) {
        (Some(id), Some(ts)) => Some(tag(id, ts, body)),
        _ => None,
    };
    let entries: Vec<&str> = sigs.map(|s| s.split(' ').filter(|e| !e.is_empty()).collect()).unwrap_or_default();
    let carries_genuine = genuine.as_ref().is_some_and(|g| {
        entries.iter().any(|e| e.strip_prefix("v1,").and_then(|b| B64.decode(b).ok()).as_ref() == Some(g))
    });
    // With only svix-* or only webhook-* headers, the scheme reads the set we sent unless the id
    // header is missing (then it reports the svix-* one as missing).
    match &result {
        Ok(v) => {
            assert!(in_window, "accepted outside the replay window: {:?}", ts);
            assert!(carries_genuine, "accepted a signature that is not the HMAC of id.timestamp.body");
            assert_eq!(v.delivery_id.as_deref(), id);
        }
        Err(e) => assert!(
            !(in_window && carries_genuine && entries.len() <= 16),
            "refused a genuine signature inside the window: {e}"
        ),
    }
});
