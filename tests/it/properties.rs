//! Property tests (proptest) of the receiving pipeline, through `support::Harness` (the real
//! `Receiver` over an in-memory store that never fails):
//!
//! - any body and any header set, for every provider, is answered 2xx or 4xx: never a 5xx, never
//!   a panic, and nothing is stored unless the answer says `accepted`;
//! - a valid signature over a body with one changed byte never verifies (HMAC hex, Standard
//!   Webhooks); for the schemes that sign nothing (Basic, shared token), a valid credential with
//!   one changed byte never verifies;
//! - a fixture signed correctly always verifies, whatever the delivery id, the time inside the
//!   replay window, the header names (`svix-*`/`webhook-*`), extra signature entries, hex case, or
//!   whether the token rides in the header or the query.
//!
//! 256 cases per property (a few seconds in a debug build); `PROPTEST_CASES` overrides it.

use crate::support;

use common::Receipt;
use common::event::Provider;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use support::{Harness, all_fixtures, content_type_of, fixture, now, signed};

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, ..ProptestConfig::default() }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn fixtures_of(provider: Provider) -> Vec<String> {
    all_fixtures().into_iter().filter(|(p, _)| *p == provider).map(|(_, rel)| rel).collect()
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Raw JSON text to put where a fixture had a value: edge cases of every type, plus arbitrary
/// values. Raw text, because some of the nastiest (`1e400`, 20-digit integers) are not values
/// serde_json can hold.
fn raw_json() -> impl Strategy<Value = String> {
    let edge = prop::sample::select(vec![
        "null",
        "true",
        "false",
        "0",
        "-0",
        "-1",
        "1",
        "0.1",
        "12.345",
        "1e2",
        "1E-2",
        "-1e2",
        "1e400",
        "-1e400",
        "1e-400",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999999999",
        "0.000000000000000000000000000001",
        "1000000000000000",
        "1000000000000001",
        "\"\"",
        "\" \"",
        "\"-1\"",
        "\"1e400\"",
        "\"12.345\"",
        "\"NaN\"",
        "\"Infinity\"",
        "\"0x10\"",
        "\"1,000\"",
        "\"USD\"",
        "\"usd\"",
        "\"XXX\"",
        "\"XAU\"",
        "\"JPY\"",
        "\"KWD\"",
        "\"ZZZ\"",
        "\"\\u0000\"",
        "\"a#b\"",
        "\"id\\r\\nX-Injected: 1\"",
        "\"refund.succeeded\"",
        "\"refund.failed\"",
        "\"SUCCEEDED\"",
        "\"refunded\"",
        "\"Refund applied\"",
        "\"success\"",
        "\"\\ud800\"",
        "[]",
        "{}",
        "[[[[[[[[[[]]]]]]]]]]",
        "{\"a\":{\"b\":{}}}",
    ])
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,24}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![2 => edge, 1 => value.prop_map(|v| v.to_string())]
}

/// Every JSON pointer into `v` (containers and leaves), the root excluded.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, c)| (k.replace('~', "~0").replace('/', "~1"), c)).collect(),
        Value::Array(a) => a.iter().enumerate().map(|(i, c)| (i.to_string(), c)).collect(),
        _ => return,
    };
    for (key, child) in children {
        let p = format!("{at}/{key}");
        out.push(p.clone());
        pointers(child, &p, out);
    }
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value at a pointer with raw JSON text.
    Replace(Index, String),
    /// Remove the member or element at a pointer.
    Remove(Index),
}

/// A fixture of `provider` with a few values replaced or removed, re-serialized; form fixtures
/// get their values replaced the same way (as text).
fn mutated_fixture(provider: Provider) -> impl Strategy<Value = Vec<u8>> {
    let edit = prop_oneof![
        4 => (any::<Index>(), raw_json()).prop_map(|(i, raw)| Edit::Replace(i, raw)),
        1 => any::<Index>().prop_map(Edit::Remove),
    ];
    (prop::sample::select(fixtures_of(provider)), prop::collection::vec(edit, 1..4))
        .prop_map(|(rel, edits)| apply(&fixture(&rel), rel.ends_with(".form"), &edits))
}

fn apply(body: &[u8], form: bool, edits: &[Edit]) -> Vec<u8> {
    let mut v: Value = if form {
        Value::Object(form_urlencoded_pairs(body).into_iter().map(|(k, val)| (k, Value::String(val))).collect())
    } else {
        serde_json::from_slice(body).expect("fixture is JSON")
    };
    let mut raws = Vec::new();
    for edit in edits {
        let mut all = Vec::new();
        pointers(&v, "", &mut all);
        if all.is_empty() {
            break;
        }
        match edit {
            Edit::Replace(i, raw) => {
                let p = i.get(&all);
                if let Some(slot) = v.pointer_mut(p) {
                    // A placeholder now, the raw text after serializing.
                    *slot = Value::String(format!("@@raw{}@@", raws.len()));
                    raws.push(raw.clone());
                }
            }
            Edit::Remove(i) => {
                let p = i.get(&all).clone();
                let (parent, key) = p.rsplit_once('/').unwrap();
                match v.pointer_mut(parent) {
                    Some(Value::Object(m)) => {
                        m.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(a)) => {
                        let k: usize = key.parse().unwrap();
                        a.remove(k);
                    }
                    _ => {}
                }
            }
        }
    }
    let mut text = v.to_string();
    for (i, raw) in raws.iter().enumerate() {
        text = text.replace(&format!("\"@@raw{i}@@\""), raw);
    }
    if form {
        // Back to a form: every top-level value as text.
        let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
        let mut ser = String::new();
        for (k, val) in &map {
            let s = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !ser.is_empty() {
                ser.push('&');
            }
            ser.push_str(&encode(k));
            ser.push('=');
            ser.push_str(&encode(&s));
        }
        return ser.into_bytes();
    }
    text.into_bytes()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Any body: arbitrary bytes, printable text, or (most often) a fixture with mutated values.
fn any_body(provider: Provider) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..400),
        1 => "[ -~]{0,200}".prop_map(String::into_bytes),
        1 => prop::sample::select(fixtures_of(provider)).prop_map(|rel| fixture(&rel)),
        5 => mutated_fixture(provider),
    ]
}

/// A header value any HTTP front would pass on (no control characters but tab).
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
    prop::collection::vec(byte, 0..80).prop_map(|b| HeaderValue::from_bytes(&b).expect("valid header bytes"))
}

/// Header names the pipeline reads, and others.
fn header_name() -> impl Strategy<Value = HeaderName> {
    let known = prop::sample::select(vec![
        "content-type",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-memberful-webhook-signature",
        "x-conscent-signature",
        "authorization",
        "x-webhook-token",
        "content-length",
        "transfer-encoding",
    ])
    .prop_map(HeaderName::from_static);
    prop_oneof![3 => known, 1 => "[a-z][a-z0-9-]{0,20}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None), // the fixture's own
        1 => Just(Some(String::new())), // none at all
        1 => prop::sample::select(vec![
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/cloudevents+json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
            ";",
        ])
        .prop_map(|s| Some(s.to_owned())),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
}

#[derive(Debug, Clone)]
enum Headers {
    /// Signed correctly for the body, plus extra headers appended after the real ones.
    Signed { content_type: Option<String>, extra: Vec<(HeaderName, HeaderValue)> },
    /// Whatever an attacker sends.
    Arbitrary(Vec<(HeaderName, HeaderValue)>),
}

fn headers() -> impl Strategy<Value = Headers> {
    let pairs = || prop::collection::vec((header_name(), header_value()), 0..6);
    prop_oneof![
        3 => (content_type(), pairs()).prop_map(|(content_type, extra)| Headers::Signed { content_type, extra }),
        1 => pairs().prop_map(Headers::Arbitrary),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop_oneof![3 => Just(None), 1 => ".{0,60}".prop_map(Some), 1 => "token=[ -~]{0,30}".prop_map(Some)]
}

// ---------------------------------------------------------------------------------------------
// (a) any body, any headers: 2xx or 4xx, never 5xx, never a panic
// ---------------------------------------------------------------------------------------------

fn natural_content_type(provider: Provider, body: &[u8]) -> &'static str {
    // A form fixture (webforce) is `key=value&…`; everything else is sent as JSON.
    if provider == Provider::Webforce && !body.starts_with(b"{") && body.contains(&b'=') {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    }
}

fn send_any(provider: Provider, body: &[u8], plan: &Headers, query: Option<&str>) -> (Harness, Receipt) {
    let h = Harness::new();
    let map = match plan {
        Headers::Signed { content_type, extra } => {
            let ct = content_type.clone().unwrap_or_else(|| natural_content_type(provider, body).to_owned());
            let mut m = signed(&h.config, provider, "application/json", body, now(), "msg_prop");
            match HeaderValue::from_str(&ct) {
                Ok(v) if !ct.is_empty() => {
                    m.insert(http::header::CONTENT_TYPE, v);
                }
                _ => {
                    m.remove(http::header::CONTENT_TYPE);
                }
            }
            for (k, v) in extra {
                m.append(k.clone(), v.clone());
            }
            m
        }
        Headers::Arbitrary(pairs) => {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(k.clone(), v.clone());
            }
            m
        }
    };
    let r = block_on(h.send(provider, &map, query, body));
    (h, r)
}

fn check_answer(provider: Provider, h: &Harness, r: &Receipt, body: &[u8]) -> Result<(), TestCaseError> {
    let what = || format!("{provider} {} {} for body {:?}", r.status, r.body, String::from_utf8_lossy(body));
    prop_assert!(r.status.is_success() || r.status.is_client_error(), "{}", what());
    prop_assert!(r.body.get("status").is_some() || r.body.get("error").is_some(), "{}", what());
    let stored = h.store.events();
    if r.body["status"] == "accepted" {
        prop_assert_eq!(stored.len(), 1, "{}", what());
        // As sent, but for the values of credential-named fields.
        prop_assert_eq!(stored[0].raw_payload.as_bytes(), &*common::credentials::strip_body(body).body);
        prop_assert!(stored[0].amount.as_ref().is_none_or(|m| (0..=common::money::MAX_MINOR).contains(&m.minor)));
    } else {
        prop_assert!(stored.is_empty(), "stored without saying so: {}", what());
    }
    if r.status.is_client_error() {
        prop_assert!(r.body["error"].is_string(), "{}", what());
        prop_assert!(h.store.held_items().is_empty(), "held and refused: {}", what());
    }
    // Held is 202 with one held item, never a refusal.
    if r.body["status"] == "held" {
        prop_assert_eq!(r.status.as_u16(), 202, "{}", what());
        prop_assert_eq!(h.store.held_items().len(), 1, "{}", what());
        prop_assert_eq!(&h.store.held_items()[0].body, &common::credentials::strip_body(body).body.into_owned());
    }
    Ok(())
}

macro_rules! any_request_property {
    ($name:ident, $provider:expr) => {
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $name(body in any_body($provider), plan in headers(), query in query()) {
                let (h, r) = send_any($provider, &body, &plan, query.as_deref());
                check_answer($provider, &h, &r, &body)?;
                // Signed for its body with only standard headers added, a delivery is authenticated:
                // never a 4xx, whatever the body or its content type.
                if let Headers::Signed { extra, .. } = &plan
                    && extra.is_empty()
                    && query.is_none()
                {
                    prop_assert!(!r.status.is_client_error(), "authenticated yet refused: {} {}", r.status, r.body);
                }
            }
        }
    };
}

any_request_property!(memberful_any_request_is_2xx_or_4xx, Provider::Memberful);
any_request_property!(conscent_any_request_is_2xx_or_4xx, Provider::Conscent);
any_request_property!(rainforest_any_request_is_2xx_or_4xx, Provider::Rainforest);
any_request_property!(webforce_any_request_is_2xx_or_4xx, Provider::Webforce);
any_request_property!(foloosi_any_request_is_2xx_or_4xx, Provider::Foloosi);

// ---------------------------------------------------------------------------------------------
// (b) one changed byte never verifies
// ---------------------------------------------------------------------------------------------

/// A fixture of `provider` or arbitrary bytes (at least one byte, so there is one to change).
fn signable_body(provider: Provider) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(fixtures_of(provider)).prop_map(|rel| fixture(&rel)),
        1 => prop::collection::vec(any::<u8>(), 1..300),
    ]
}

/// `bytes` with the byte at `at` replaced by a different value.
fn changed(bytes: &[u8], at: Index, delta: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let i = at.index(out.len());
    out[i] = out[i].wrapping_add(delta);
    out
}

fn assert_refused(h: &Harness, r: &Receipt) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    prop_assert_eq!(&r.body["error"], "unauthorized");
    prop_assert!(h.store.events().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Memberful and Conscent.ai: hex HMAC-SHA256 of the body.
    #[test]
    fn hmac_hex_over_a_changed_body_never_verifies(
        provider in prop::sample::select(vec![Provider::Memberful, Provider::Conscent]),
        body in prop_oneof![signable_body(Provider::Memberful), signable_body(Provider::Conscent)],
        at in any::<Index>(),
        delta in 1u8..=255,
    ) {
        let h = Harness::new();
        let headers = signed(&h.config, provider, "application/json", &body, now(), "msg_b");
        let r = block_on(h.send(provider, &headers, None, &changed(&body, at, delta)));
        assert_refused(&h, &r)?;
    }

    /// Rainforest: Standard Webhooks signs `{id}.{timestamp}.{body}`: a changed byte in any of the
    /// three never verifies, under either header naming.
    #[test]
    fn standard_webhooks_over_changed_content_never_verifies(
        body in signable_body(Provider::Rainforest),
        id in "msg_[A-Za-z0-9]{1,27}",
        part in 0..3usize,
        webhook_names in any::<bool>(),
        at in any::<Index>(),
        delta in 1u8..=255,
    ) {
        let h = Harness::new();
        let t = now();
        let mut headers = signed(&h.config, Provider::Rainforest, "application/json", &body, t, &id);
        let mut body = body;
        match part {
            0 => body = changed(&body, at, delta),
            1 => {
                let new = changed(id.as_bytes(), at, delta);
                // Only ids an HTTP front would pass; otherwise change the body instead.
                match HeaderValue::from_bytes(&new) {
                    Ok(v) => { headers.insert("svix-id", v); }
                    Err(_) => body = changed(&body, at, delta),
                }
            }
            _ => {
                // Another time inside the window, so only the signature can refuse it.
                let other = t + i64::from(delta % 200) - 100;
                let other = if other == t { t + 1 } else { other };
                headers.insert("svix-timestamp", other.to_string().parse().unwrap());
            }
        }
        if webhook_names {
            headers = rename_svix(&headers);
        }
        let r = block_on(h.send(Provider::Rainforest, &headers, None, &body));
        assert_refused(&h, &r)?;
    }

    /// Conscent.ai's Basic alternative signs nothing: a changed byte in the credentials never
    /// verifies.
    #[test]
    fn basic_credentials_with_a_changed_byte_never_verify(at in any::<Index>(), delta in 1u8..=255) {
        let h = Harness::with(&[("CONSCENT_BASIC_AUTH", "api-key:api-secret-of-enough-length"), ("CONSCENT_ACCEPT_BASIC", "true")]);
        let body = fixture("conscent/refunded.pass.json");
        let creds = changed(b"api-key:api-secret-of-enough-length", at, delta);
        let value = format!("Basic {}", b64(&creds));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        let r = block_on(h.send(Provider::Conscent, &headers, None, &body));
        assert_refused(&h, &r)?;
    }

    /// WebforceHQ and Foloosi sign nothing: a token with one changed byte never verifies, in the
    /// header or in the query.
    #[test]
    fn a_token_with_a_changed_byte_never_verifies(
        provider in prop::sample::select(vec![Provider::Webforce, Provider::Foloosi]),
        in_query in any::<bool>(),
        at in any::<Index>(),
        delta in 1u8..=255,
    ) {
        let h = Harness::new();
        let good = h.config.verifier(provider).unwrap().sign(b"", 0, "")[0].1.clone();
        let bad = changed(good.as_bytes(), at, delta);
        let rel = &fixtures_of(provider)[0];
        let body = fixture(rel);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, content_type_of(rel).parse().unwrap());
        let query = if in_query {
            Some(format!("token={}", encode(&String::from_utf8_lossy(&bad))))
        } else {
            match HeaderValue::from_bytes(&bad) {
                Ok(v) => { headers.insert("x-webhook-token", v); None }
                Err(_) => Some(format!("token={}", encode(&String::from_utf8_lossy(&bad)))),
            }
        };
        // A lossy decoding could, in theory, give back the good token; it cannot differ by one
        // byte and decode to it, but say so rather than assume.
        prop_assume!(String::from_utf8_lossy(&bad) != good);
        let r = block_on(h.send(provider, &headers, query.as_deref(), &body));
        assert_refused(&h, &r)?;
    }
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The same headers with `svix-*` renamed `webhook-*` (the Standard Webhooks names).
fn rename_svix(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let name = match k.as_str().strip_prefix("svix-") {
            Some(rest) => HeaderName::from_bytes(format!("webhook-{rest}").as_bytes()).unwrap(),
            None => k.clone(),
        };
        out.append(name, v.clone());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// (c) a fixture signed correctly always verifies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Delivery {
    fixture: String,
    id: String,
    /// Seconds from now the provider signed at (inside the window, with a margin for slow runs).
    skew: i64,
    webhook_names: bool,
    /// Other signature entries around the real one (Standard Webhooks allows a list).
    others: Vec<String>,
    upper_hex: bool,
    token_in_query: bool,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let fixtures: Vec<String> = all_fixtures().into_iter().map(|(_, rel)| rel).collect();
    let other =
        prop_oneof!["v1,[A-Za-z0-9+/]{43}=", "v1a,[A-Za-z0-9+/]{10,40}", "v2,[A-Za-z0-9+/=]{4,44}", "[!-~]{1,20}",];
    (
        prop::sample::select(fixtures),
        "[!-~]{1,64}",
        -280i64..=280,
        any::<bool>(),
        prop::collection::vec(other, 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(fixture, id, skew, webhook_names, others, upper_hex, token_in_query)| Delivery {
            fixture,
            id,
            skew,
            webhook_names,
            others,
            upper_hex,
            token_in_query,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_correctly_signed_fixture_always_verifies(d in delivery(), others_first in any::<bool>()) {
        let h = Harness::new();
        let provider: Provider = d.fixture.split('/').next().unwrap().parse().unwrap();
        let body = fixture(&d.fixture);
        let mut headers = signed(&h.config, provider, content_type_of(&d.fixture), &body, now() + d.skew, &d.id);
        let mut query = None;
        match provider {
            Provider::Rainforest => {
                let real = headers["svix-signature"].to_str().unwrap().to_owned();
                let mut entries = d.others.clone();
                if others_first { entries.push(real) } else { entries.insert(0, real) }
                headers.insert("svix-signature", entries.join(" ").parse().unwrap());
                if d.webhook_names {
                    headers = rename_svix(&headers);
                }
            }
            Provider::Memberful | Provider::Conscent if d.upper_hex => {
                let name = if provider == Provider::Memberful {
                    "x-memberful-webhook-signature"
                } else {
                    "x-conscent-signature"
                };
                let upper = headers[name].to_str().unwrap().to_ascii_uppercase();
                headers.insert(name, upper.parse().unwrap());
            }
            Provider::Webforce | Provider::Foloosi if d.token_in_query => {
                headers.remove("x-webhook-token");
                query = h.config.verifier(provider).unwrap().sign_query();
            }
            _ => {}
        }
        let r = block_on(h.send(provider, &headers, query.as_deref(), &body));
        // Verified: stored, ignored or (for the fixtures the manifest says so of) held.
        prop_assert!(r.status == StatusCode::OK || r.status == StatusCode::ACCEPTED, "{} {:?}: {}", d.fixture, d, r.body);
        if provider == Provider::Rainforest
            && let Some(e) = h.store.events().first()
        {
            prop_assert_eq!(e.delivery_id.as_deref(), Some(d.id.as_str()));
        }
    }
}

/// The strategies above really do reach the adapters: among mutated fixtures, some are accepted
/// and some held for their content, for every provider (not only 401s).
#[test]
fn the_body_strategy_reaches_normalize() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    for provider in Provider::ALL {
        let mut runner = TestRunner::deterministic();
        let (mut accepted, mut bad_payload) = (0, 0);
        for _ in 0..200 {
            let body = mutated_fixture(provider).new_tree(&mut runner).unwrap().current();
            let plan = Headers::Signed { content_type: None, extra: Vec::new() };
            let (_, r) = send_any(provider, &body, &plan, None);
            match r.status.as_u16() {
                200 => accepted += 1,
                202 => bad_payload += 1,
                _ => {}
            }
        }
        // Foloosi's fixtures are half held as they are (unknown words, no status): fewer accepted.
        assert!(accepted > 5 && bad_payload > 10, "{provider}: {accepted} accepted, {bad_payload} held of 200");
    }
}
