//! `refund-relay serve` end to end, as a new user drives it: the real binary on a free port,
//! fixtures posted with `refund-relay send`, answers read over HTTP, notifications read from
//! `notifications.jsonl`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::runner::{BIN, Server, get, notifications, start};

fn send(server: &Server, provider: &str, rel: &str) -> (bool, Value) {
    let out = Command::new(BIN)
        .args(["send", provider])
        .arg(support::fixtures_dir().join(rel))
        .args(["--url", &server.url])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (code, body) = text.trim().split_once(' ').unwrap_or_else(|| panic!("send printed {text:?}"));
    assert_eq!(code == "200", out.status.success());
    (out.status.success(), serde_json::from_str(body).unwrap())
}

fn wait_for(data_dir: &Path, n: usize) -> Vec<Value> {
    support::runner::wait_for(data_dir, n, 10)
}

#[test]
fn a_new_user_sends_every_provider_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());

    let (_, health) = get(&format!("{}/healthz", server.url));
    assert_eq!(health["status"], "ok");

    let sends = [
        ("memberful", "memberful/order.refunded.json", 3),
        ("conscent", "conscent/refunded.pass.json", 3),
        // Rainforest's published table tells all three of a refund in review.
        ("rainforest", "rainforest/refund.in_review.json", 3),
        ("webforce", "webforce/refund-applied.ours.form", 3),
        ("foloosi", "foloosi/transaction.success.json", 3),
    ];
    let mut expected = 0;
    for (provider, rel, audiences) in sends {
        let (ok, body) = send(&server, provider, rel);
        assert!(ok, "{provider}: {body}");
        assert_eq!(body["status"], "accepted", "{provider}");
        let (ok, again) = send(&server, provider, rel);
        assert!(ok);
        assert_eq!(again["status"], "duplicate", "{provider}");
        assert_eq!(again["event_id"], body["event_id"]);
        expected += audiences;
    }
    let sent = wait_for(dir.path(), expected);
    assert_eq!(sent.len(), expected, "one notification per audience per event, none for duplicates");

    // The in-review refund: internal gets the [System Alert], the merchant a reassuring text, the
    // payor a neutral one.
    let in_review: Vec<&Value> = sent.iter().filter(|n| n["attributes"]["status"] == "in_review").collect();
    let audiences: Vec<&str> = in_review.iter().map(|n| n["audience"].as_str().unwrap()).collect();
    assert_eq!(audiences, ["internal", "merchant", "payor"]);
    assert!(in_review[0]["message"]["text"].as_str().unwrap().starts_with("[System Alert] The below refund"));
    assert!(in_review[2]["message"]["text"].as_str().unwrap().contains("is being reviewed"), "{}", in_review[2]);
    // Every notification says how its delivery proved its origin.
    for n in &sent {
        let want = match n["attributes"]["provider"].as_str().unwrap() {
            "webforce" | "foloosi" => "token",
            _ => "signature",
        };
        assert_eq!(n["attributes"]["proof"], want, "{n}");
    }
    // Personal data reaches the payor topic only.
    for n in &sent {
        let has_contact = n["message"].get("payor").is_some();
        assert_eq!(has_contact, n["audience"] == "payor", "{n}");
    }

    // A late `processing` after `in_review` is stored but tells nobody.
    let (ok, body) = send(&server, "rainforest", "rainforest/refund.processing.json");
    assert!(ok && body["status"] == "accepted");
    let (ok, _) = send(&server, "rainforest", "rainforest/refund.succeeded.json");
    assert!(ok);
    // Rainforest's table tells nobody of `succeeded`; the late `processing` is stale.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(notifications(dir.path()).len(), expected);

    let (status, refund) = get(&format!("{}/refunds/rainforest/rfd_2sPMefai6yWsyp4MSGUkAo32pp7", server.url));
    assert_eq!(status, 200);
    assert_eq!(refund["status"], "succeeded");
    let history: Vec<&str> =
        refund["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["in_review", "processing", "succeeded"]);
    // Each event shows its money.
    assert_eq!(refund["events"][0]["amount"], serde_json::json!({ "minor": 1250, "currency": "USD" }));

    let (status, payment) = get(&format!("{}/refunds/foloosi/FLNIAREC61a859e4a8977?kind=payment", server.url));
    assert_eq!((status, payment["status"].as_str()), (200, Some("succeeded")));
    let (status, missing) = get(&format!("{}/refunds/rainforest/rfd_unknown", server.url));
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found");

    // Refusals come back as JSON with the right status.
    let (code, body) = refund_relay::cli::post(
        &format!("{}/webhooks/memberful", server.url),
        &[("Content-Type".into(), "application/json".into())],
        b"{}",
    )
    .unwrap();
    assert_eq!(code, 401);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "unauthorized");
    let big = vec![b'x'; 300 * 1024];
    let (code, _) = refund_relay::cli::post(&format!("{}/webhooks/memberful", server.url), &[], &big).unwrap();
    assert_eq!(code, 413);
}

#[test]
fn stored_events_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = start(dir.path());
        let (_, body) = send(&server, "memberful", "memberful/order.refunded.json");
        assert_eq!(body["status"], "accepted");
        assert_eq!(wait_for(dir.path(), 3).len(), 3);
    }
    let server = start(dir.path());
    let (_, body) = send(&server, "memberful", "memberful/order.refunded.json");
    assert_eq!(body["status"], "duplicate", "the embedded store is durable");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(notifications(dir.path()).len(), 3, "no second notification after the restart");
}
