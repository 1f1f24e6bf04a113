//! Any body through `credentials::strip_body`. Never panics; valid JSON stays valid JSON with
//! every credential-named field's value `"[removed]"`; stripping twice changes nothing more.
#![no_main]

use common::credentials::{REMOVED, is_credential_field, strip_body};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(value: &Value) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                if is_credential_field(name) {
                    assert_eq!(v, REMOVED, "{name} kept its value");
                } else {
                    check(v);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(check),
        _ => {}
    }
}

fuzz_target!(|body: &[u8]| {
    let once = strip_body(body);
    if serde_json::from_slice::<Value>(body).is_ok() {
        let value: Value = serde_json::from_slice(&once.body).expect("stripped JSON is JSON");
        check(&value);
    }
    let twice = strip_body(&once.body);
    assert_eq!(twice.body, once.body, "stripping is idempotent");
});
