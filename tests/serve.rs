//! `refund-relay serve` end to end, as a new user drives it: the real binary on a free port,
//! fixtures posted with `refund-relay send`, answers read over HTTP, notifications read from
//! `notifications.jsonl`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_refund-relay");

/// The server process, stopped when the test ends however it ends.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("MEMBERFUL_WEBHOOK_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("refund-relay listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

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

fn get(url: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut res = agent.get(url).call().unwrap();
    (res.status().as_u16(), serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap())
}

fn notifications(data_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(data_dir.join("notifications.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits (bounded) until the outbox has written `n` notifications.
fn wait_for(data_dir: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = notifications(data_dir);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        ("rainforest", "rainforest/refund.in_review.json", 2),
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

    // The in-review refund: internal gets the [System Alert], the merchant a reassuring text, the payor nothing.
    let in_review: Vec<&Value> = sent.iter().filter(|n| n["attributes"]["status"] == "in_review").collect();
    let audiences: Vec<&str> = in_review.iter().map(|n| n["audience"].as_str().unwrap()).collect();
    assert_eq!(audiences, ["internal", "merchant"]);
    assert!(in_review[0]["message"]["text"].as_str().unwrap().starts_with("[System Alert] The below refund"));
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
    let sent = wait_for(dir.path(), expected + 3);
    assert_eq!(sent.len(), expected + 3, "succeeded notifies 3 audiences; the late processing none");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(notifications(dir.path()).len(), expected + 3);

    let (status, refund) = get(&format!("{}/refunds/rainforest/rfd_2sPMefai6yWsyp4MSGUkAo32pp7", server.url));
    assert_eq!(status, 200);
    assert_eq!(refund["status"], "succeeded");
    let history: Vec<&str> =
        refund["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["in_review", "processing", "succeeded"]);

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
