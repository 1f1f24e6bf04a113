//! Rainforest's API answers (a list page, a refund by id) through the pure parsers the sweep
//! uses. Never panics; the same answer gives the same result; every object becomes a JSON body
//! of a `refund.` event that the webhook adapter reads without panicking.
#![no_main]

use common::providers::rainforest;
use common::providers::rainforest_api::{parse_list, parse_refund};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|answer: &[u8]| {
    let list = parse_list(answer);
    assert_eq!(list, parse_list(answer));
    let one = parse_refund(answer);
    assert_eq!(one, parse_refund(answer));
    let fetched = list.into_iter().flat_map(|p| p.items).chain(one.ok().flatten());
    for item in fetched {
        let body: serde_json::Value = serde_json::from_slice(&item.body).expect("a JSON body");
        assert!(body["event_type"].as_str().is_some_and(|t| t.starts_with("refund.")), "{body}");
        let _ = rainforest::normalize(&item.body);
    }
});
