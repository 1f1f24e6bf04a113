//! The receiving pipeline, provider by provider, through `Receiver::receive`: what every entry
//! point (Lambda, local runner) runs.

mod support;

use common::event::{EventKind, Provider, Status};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use support::{Harness, config, fixture, now, signed};

/// Per provider: its main refund fixture, an event it sends that we ignore, and a required field
/// to delete (JSON pointers) with the name the 400 must give it.
struct Case {
    provider: Provider,
    refund: &'static str,
    ignored: Option<&'static str>,
    remove: &'static [&'static str],
    field: &'static str,
}

const CASES: &[Case] = &[
    Case {
        provider: Provider::Memberful,
        refund: "memberful/order.refunded.json",
        ignored: Some("memberful/order.purchased.ours.json"),
        remove: &["/order/uuid"],
        field: "order.uuid",
    },
    Case {
        provider: Provider::Conscent,
        refund: "conscent/refunded.pay_per_use.json",
        ignored: Some("conscent/purchased.subscription.ours.json"),
        remove: &["/payload/refund/_id"],
        field: "payload.refund._id",
    },
    Case {
        provider: Provider::Rainforest,
        refund: "rainforest/refund.succeeded.json",
        ignored: Some("rainforest/payin.succeeded.json"),
        remove: &["/data/refund_id"],
        field: "data.refund_id",
    },
    Case {
        provider: Provider::Webforce,
        refund: "webforce/refund-applied.ours.json",
        ignored: Some("webforce/order-completed.ours.json"),
        remove: &["/transaction_id", "/order_id"],
        field: "transaction_id",
    },
    // Foloosi sends payment outcomes only; every one of them is stored, none is ignored.
    Case {
        provider: Provider::Foloosi,
        refund: "foloosi/transaction.success.json",
        ignored: None,
        remove: &["/data/transfer/transaction_no"],
        field: "data.transfer.transaction_no",
    },
];

/// Secrets that differ from the development ones.
const OTHER_SECRETS: &[(&str, &str)] = &[
    ("MEMBERFUL_WEBHOOK_SECRET", "another-memberful-secret"),
    ("CONSCENT_WEBHOOK_SECRET", "another-conscent-secret"),
    ("RAINFOREST_WEBHOOK_SECRET", "whsec_YW5vdGhlci1yYWluZm9yZXN0LXNlY3JldC1rZXk="),
    ("WEBFORCE_WEBHOOK_TOKEN", "another-webforce-token"),
    ("FOLOOSI_WEBHOOK_TOKEN", "another-foloosi-token-x"),
];

fn status_of(r: &common::Receipt) -> &str {
    r.body["status"].as_str().unwrap_or_default()
}

fn without(body: &[u8], pointers: &[&str]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    for p in pointers {
        let (parent, key) = p.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key).expect("field present in fixture");
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn each_provider_accepts_then_answers_the_duplicate() {
    for c in CASES {
        let h = Harness::new();
        let first = h.send_fixture(c.refund).await;
        assert_eq!(first.status, StatusCode::OK, "{}: {}", c.refund, first.body);
        assert_eq!(status_of(&first), "accepted", "{}", c.refund);
        assert!(first.stored.is_some());
        // A second delivery (Rainforest: a new svix-id and timestamp, as a manual resend) is the same event.
        let again = h.send_fixture(c.refund).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(status_of(&again), "duplicate", "{}", c.refund);
        assert_eq!(again.body["event_id"], first.body["event_id"]);
        assert!(again.stored.is_none());
        assert_eq!(h.store.events().len(), 1, "{}: stored once", c.refund);
    }
}

#[tokio::test]
async fn a_wrong_secret_is_401_and_stores_nothing() {
    for c in CASES {
        let h = Harness::new();
        let forger = config(OTHER_SECRETS);
        let body = fixture(c.refund);
        let headers = signed(&forger, c.provider, "application/json", &body, now(), "msg_forged");
        let r = h.send(c.provider, &headers, None, &body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}: {}", c.refund, r.body);
        assert_eq!(r.body["error"], "unauthorized");
        assert!(h.store.events().is_empty());
    }
}

#[tokio::test]
async fn a_missing_signature_is_401() {
    for c in CASES {
        let h = Harness::new();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
        let r = h.send(c.provider, &headers, None, &fixture(c.refund)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", c.refund);
        assert!(
            r.body["message"].as_str().unwrap().contains("missing")
                || r.body["message"].as_str().unwrap().contains("no credentials"),
            "{}",
            r.body
        );
        assert!(h.store.events().is_empty());
    }
}

#[tokio::test]
async fn a_rotated_secret_list_accepts_the_old_secret() {
    let dev = config(&[]);
    for c in CASES {
        let (var, new) = OTHER_SECRETS.iter().find(|(k, _)| common::config::secret_vars(c.provider)[0] == *k).unwrap();
        let old = common::config::DEV_SECRETS.iter().find(|(k, _)| k == var).unwrap().1;
        let list = format!("{new},{old}");
        let h = Harness::with(&[(var, &list)]);
        let body = fixture(c.refund);
        let headers = signed(&dev, c.provider, "application/json", &body, now(), "msg_rotated");
        let r = h.send(c.provider, &headers, None, &body).await;
        assert_eq!(status_of(&r), "accepted", "{}: {}", c.refund, r.body);
    }
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_body() {
    for c in CASES {
        let h = Harness::new();
        let r = h.send_body(c.provider, "application/json", b"{\"event\": oops").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", c.refund);
        assert_eq!(r.body["error"], "invalid_payload");
        assert!(r.body["field"].is_string());
        assert!(h.store.events().is_empty());
    }
}

#[tokio::test]
async fn a_missing_required_field_is_400_naming_it() {
    for c in CASES {
        let h = Harness::new();
        let r = h.send_body(c.provider, "application/json", &without(&fixture(c.refund), c.remove)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}: {}", c.refund, r.body);
        assert_eq!(r.body["field"], c.field, "{}", r.body);
        assert!(h.store.events().is_empty());
    }
}

#[tokio::test]
async fn events_we_do_not_handle_are_acknowledged_and_not_stored() {
    for c in CASES {
        let Some(rel) = c.ignored else { continue };
        let h = Harness::new();
        let r = h.send_fixture(rel).await;
        assert_eq!(r.status, StatusCode::OK, "{rel}");
        assert_eq!(status_of(&r), "ignored", "{rel}: {}", r.body);
        assert!(r.body["reason"].as_str().unwrap().contains("not handled"));
        assert!(h.store.events().is_empty());
    }
}

#[tokio::test]
async fn an_unknown_refund_event_is_400_not_ignored() {
    let h = Harness::new();
    let r = h
        .send_body(
            Provider::Rainforest,
            "application/json",
            br#"{"event_type":"refund.reversed","data":{"refund_id":"r1","status":"REVERSED"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["field"], "event_type");
    let r = h
        .send_body(Provider::Memberful, "application/json", br#"{"event":"order.partially_refunded","order":{}}"#)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn rainforest_refuses_stale_and_future_timestamps() {
    let h = Harness::new();
    let body = fixture("rainforest/refund.created.json");
    for at in [now() - 301, now() + 301, now() - 86_400 * 365 * 30] {
        let headers = signed(&h.config, Provider::Rainforest, "application/json", &body, at, "msg_old");
        let r = h.send(Provider::Rainforest, &headers, None, &body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "at {at}");
        assert!(r.body["message"].as_str().unwrap().contains("replay window"), "{}", r.body);
    }
    // Inside the window, both ways.
    for at in [now() - 250, now() + 250] {
        let headers = signed(&h.config, Provider::Rainforest, "application/json", &body, at, &format!("msg_{at}"));
        let r = h.send(Provider::Rainforest, &headers, None, &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(h.store.events().len(), 1);
}

#[tokio::test]
async fn rainforest_accepts_standard_webhooks_header_names() {
    let h = Harness::new();
    let body = fixture("rainforest/refund.processing.json");
    let svix = signed(&h.config, Provider::Rainforest, "application/json", &body, now(), "msg_std");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    for (k, v) in &svix {
        if let Some(rest) = k.as_str().strip_prefix("svix-") {
            headers.insert(http::HeaderName::from_bytes(format!("webhook-{rest}").as_bytes()).unwrap(), v.clone());
        }
    }
    let r = h.send(Provider::Rainforest, &headers, None, &body).await;
    assert_eq!(status_of(&r), "accepted", "{}", r.body);
    assert_eq!(h.store.events()[0].delivery_id.as_deref(), Some("msg_std"));
}

/// (fixture, kind, status, object id, minor units, currency)
type Expected = (&'static str, EventKind, Status, &'static str, Option<i64>, &'static str);

#[tokio::test]
async fn every_fixture_normalizes_as_documented() {
    let expected: &[Expected] = &[
        (
            "memberful/order.refunded.json",
            EventKind::Refund,
            Status::Succeeded,
            "4DACB7B0-B728-0130-F9E8-102B343DC979",
            Some(9900),
            "USD",
        ),
        (
            "conscent/refunded.pay_per_use.json",
            EventKind::Refund,
            Status::Succeeded,
            "65e0220ed03692125f1f3592",
            Some(100),
            "INR",
        ),
        (
            "conscent/refunded.subscription.json",
            EventKind::Refund,
            Status::Succeeded,
            "65e01fe8d03692125f1f356a",
            Some(100),
            "INR",
        ),
        (
            "conscent/refunded.pass.json",
            EventKind::Refund,
            Status::Succeeded,
            "65e02242d03692125f1f3593",
            Some(100),
            "INR",
        ),
        (
            "rainforest/refund.created.json",
            EventKind::Refund,
            Status::Created,
            "rfd_2sPMefai6yWsyp4MSGUkAo32pp7",
            Some(1250),
            "USD",
        ),
        (
            "rainforest/refund.processing.json",
            EventKind::Refund,
            Status::Processing,
            "rfd_2sPMefai6yWsyp4MSGUkAo32pp7",
            Some(1250),
            "USD",
        ),
        (
            "rainforest/refund.in_review.json",
            EventKind::Refund,
            Status::InReview,
            "rfd_2sPMefai6yWsyp4MSGUkAo32pp7",
            Some(1250),
            "USD",
        ),
        (
            "rainforest/refund.succeeded.json",
            EventKind::Refund,
            Status::Succeeded,
            "rfd_2sPMefai6yWsyp4MSGUkAo32pp7",
            Some(1250),
            "USD",
        ),
        (
            "rainforest/refund.failed.json",
            EventKind::Refund,
            Status::Failed,
            "rfd_2sPMefai6yWsyp4MSGUkAo32pp7",
            Some(1250),
            "USD",
        ),
        (
            "rainforest/refund.canceled.json",
            EventKind::Refund,
            Status::Canceled,
            "rfd_2sPMefai6yWsyp4MSGUkAo32pp7",
            Some(1250),
            "USD",
        ),
        ("webforce/refund-applied.ours.json", EventKind::Refund, Status::Succeeded, "TX-88812", Some(4999), "USD"),
        ("webforce/refund-applied.ours.form", EventKind::Refund, Status::Succeeded, "TX-88820", Some(1550), "USD"),
        (
            "webforce/approved-transaction.ours.json",
            EventKind::Payment,
            Status::Succeeded,
            "TX-88813",
            Some(1900),
            "USD",
        ),
        ("webforce/transaction-declined.ours.json", EventKind::Payment, Status::Failed, "TX-88814", Some(2900), "USD"),
        (
            "foloosi/transaction.success.json",
            EventKind::Payment,
            Status::Succeeded,
            "FLNIAREC61a859e4a8977",
            Some(10_000),
            "AED",
        ),
        (
            "foloosi/transaction.failed.ours.json",
            EventKind::Payment,
            Status::Failed,
            "FLNIAREC61a859e4a8978",
            Some(25_050),
            "AED",
        ),
        (
            "foloosi/transaction.refunded.ours.json",
            EventKind::Refund,
            Status::Succeeded,
            "FLNIAREC61a859e4a8977",
            Some(10_000),
            "AED",
        ),
    ];
    for (rel, kind, status, id, minor, currency) in expected {
        let h = Harness::new();
        let r = h.send_fixture(rel).await;
        assert_eq!(status_of(&r), "accepted", "{rel}: {}", r.body);
        let e = &h.store.events()[0];
        assert_eq!((e.kind, e.status, e.object_id.as_str()), (*kind, *status, *id), "{rel}");
        assert_eq!(e.amount.as_ref().map(|m| m.minor), *minor, "{rel}");
        assert_eq!(e.amount.as_ref().unwrap().currency, *currency, "{rel}");
        assert_eq!(e.raw_payload.as_bytes(), fixture(rel).as_slice(), "{rel}: raw payload kept byte for byte");
        assert!(e.idempotency_key.contains(*id));
    }
}

#[tokio::test]
async fn details_each_adapter_carries() {
    let h = Harness::new();
    h.send_fixture("memberful/order.refunded.json").await;
    h.send_fixture("conscent/refunded.subscription.json").await;
    h.send_fixture("rainforest/refund.failed.json").await;
    let events = h.store.events();
    let memberful = &events[0];
    assert!(memberful.revoke_access);
    assert_eq!(memberful.payor.email.as_deref(), Some("john.doe@example.com"));
    assert_eq!(memberful.order_ref.as_deref(), Some("4DACB7B0"));
    let conscent = &events[1];
    assert_eq!(conscent.merchant_id.as_deref(), Some("65015ff10070846629fb981e"));
    assert_eq!(conscent.gateway_refund_id.as_deref(), Some("rfnd_NgajgFeD4I04Ve"));
    assert_eq!(conscent.order_ref.as_deref(), Some("65e01798d03692125f1f33e5"));
    assert_eq!(conscent.product.as_deref(), Some("subscription"));
    assert_eq!(conscent.payor.phone.as_deref(), Some("8383884833"));
    let rainforest = &events[2];
    let refusal = rainforest.refusal.as_ref().unwrap();
    assert_eq!(refusal.code.as_deref(), Some("insufficient_funds"));
    assert_eq!(rainforest.merchant_id.as_deref(), Some("mid_2sPKnRjN5gT6Zs0cHUFbDoDt1nE"));
    assert_eq!(rainforest.order_ref.as_deref(), Some("pyi_2sPLxKfUrPqzMRmNRUZ3oVJiZfu"));
}

#[tokio::test]
async fn major_units_convert_by_currency_exponent() {
    // (currency, amount as sent, minor units expected): 2-decimal INR and AED, 0-decimal JPY, 3-decimal KWD.
    let cases: &[(&str, Value, i64)] = &[
        ("INR", serde_json::json!(1), 100),
        ("INR", serde_json::json!(249.5), 24_950),
        ("AED", serde_json::json!("100"), 10_000),
        ("JPY", serde_json::json!(500), 500),
        ("KWD", serde_json::json!("1.234"), 1_234),
    ];
    for (currency, amount, minor) in cases {
        let h = Harness::new();
        let mut body: Value = serde_json::from_slice(&fixture("conscent/refunded.pass.json")).unwrap();
        body["payload"]["refund"]["currency"] = Value::from(*currency);
        body["payload"]["refund"]["amount"] = amount.clone();
        let r = h.send_body(Provider::Conscent, "application/json", &serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status_of(&r), "accepted", "{currency} {amount}: {}", r.body);
        assert_eq!(h.store.events()[0].amount.as_ref().unwrap().minor, *minor, "conscent {currency} {amount}");

        let h = Harness::new();
        let mut body: Value = serde_json::from_slice(&fixture("foloosi/transaction.success.json")).unwrap();
        body["data"]["transfer"]["transaction_currency"] = Value::from(*currency);
        body["data"]["transfer"]["transaction_amount"] = Value::from(amount.to_string().trim_matches('"'));
        let r = h.send_body(Provider::Foloosi, "application/json", &serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status_of(&r), "accepted", "{currency} {amount}: {}", r.body);
        assert_eq!(h.store.events()[0].amount.as_ref().unwrap().minor, *minor, "foloosi {currency} {amount}");
    }
    // More decimals than the currency has is refused, never rounded.
    let h = Harness::new();
    let mut body: Value = serde_json::from_slice(&fixture("foloosi/transaction.success.json")).unwrap();
    body["data"]["transfer"]["transaction_currency"] = Value::from("JPY");
    body["data"]["transfer"]["transaction_amount"] = Value::from("10.5");
    let r = h.send_body(Provider::Foloosi, "application/json", &serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["field"], "data.transfer.transaction_amount");
}

#[tokio::test]
async fn conscent_basic_auth_is_the_alternative() {
    let h = Harness::with(&[("CONSCENT_BASIC_AUTH", "api-key:api-secret")]);
    let body = fixture("conscent/refunded.pass.json");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    headers.insert(http::header::AUTHORIZATION, "Basic YXBpLWtleTphcGktc2VjcmV0".parse().unwrap());
    assert_eq!(status_of(&h.send(Provider::Conscent, &headers, None, &body).await), "accepted");
    headers.insert(http::header::AUTHORIZATION, "Basic YXBpLWtleTpub3BlCg==".parse().unwrap());
    assert_eq!(h.send(Provider::Conscent, &headers, None, &body).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_providers_take_the_token_from_the_query_too() {
    let h = Harness::new();
    let body = fixture("webforce/refund-applied.ours.form");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
    let query = h.config.verifier(Provider::Webforce).unwrap().sign_query().unwrap();
    let r = h.send(Provider::Webforce, &headers, Some(&query), &body).await;
    assert_eq!(status_of(&r), "accepted", "{}", r.body);
    let r = h.send(Provider::Webforce, &headers, Some("token=guess"), &body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn http_level_refusals() {
    let h = Harness::with(&[("BODY_LIMIT_BYTES", "1024")]);
    let body = fixture("memberful/order.refunded.json");
    let headers = signed(&h.config, Provider::Memberful, "application/json", &body, now(), "x");
    let get = h
        .receiver
        .receive(
            Provider::Memberful,
            common::WebhookRequest { method: &Method::GET, headers: &headers, query: None, body: &[] },
        )
        .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.into_response().headers()["allow"], "POST");

    let big = vec![b' '; 1025];
    let r = h.send_body(Provider::Memberful, "application/json", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    let r = h.send_body(Provider::Memberful, "text/plain", &body).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Only WebforceHQ posts forms.
    let r = h.send_body(Provider::Memberful, "application/x-www-form-urlencoded", &body).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = h.send_body(Provider::Memberful, "application/json", b"\xff\xfe{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["field"], "body");

    let r = h
        .receiver
        .receive_route(
            "stripe",
            common::WebhookRequest { method: &Method::POST, headers: &headers, query: None, body: &body },
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let res = r.into_response();
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(h.store.events().is_empty());
}

#[tokio::test]
async fn a_failing_store_is_503_and_never_a_2xx() {
    for c in CASES {
        let h = Harness::new();
        h.store.set_failing(true);
        let r = h.send_fixture(c.refund).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", c.refund);
        assert_eq!(r.body["error"], "store_unavailable");
        assert!(r.stored.is_none());
        assert!(h.store.events().is_empty());
        // The provider's retry after recovery is stored normally.
        h.store.set_failing(false);
        assert_eq!(status_of(&h.send_fixture(c.refund).await), "accepted");
    }
}

#[tokio::test]
async fn every_fixture_gets_a_2xx() {
    for (_, rel) in support::all_fixtures() {
        let h = Harness::new();
        let r = h.send_fixture(&rel).await;
        assert_eq!(r.status, StatusCode::OK, "{rel}: {}", r.body);
    }
}
