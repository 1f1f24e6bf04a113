//! `refund-relay serve` end to end, as a new user drives it: the real binary on a free port,
//! fixtures posted with `refund-relay send`, answers read over HTTP, notifications read from
//! `notifications.jsonl`.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::runner::{BIN, Server, get, get_text, notifications, start};

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
    let (code, body) = refund_relay::sender::post(
        &format!("{}/webhooks/memberful", server.url),
        &[("Content-Type".into(), "application/json".into())],
        b"{}",
    )
    .unwrap();
    assert_eq!(code, 401);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "unauthorized");
    let big = vec![b'x'; 300 * 1024];
    let (code, _) = refund_relay::sender::post(&format!("{}/webhooks/memberful", server.url), &[], &big).unwrap();
    assert_eq!(code, 413);

    // Every answer above, counted as the Lambda functions count it for CloudWatch.
    let (status, content_type, text) = get_text(&format!("{}/metrics", server.url));
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let value = |series: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len()..].trim().parse().unwrap()
    };
    let webhooks = |provider: &str, outcome: &str| {
        value(&format!("refund_relay_webhooks_total{{provider=\"{provider}\",outcome=\"{outcome}\"}}"))
    };
    for provider in ["memberful", "conscent", "webforce", "foloosi"] {
        assert_eq!((webhooks(provider, "accepted"), webhooks(provider, "duplicate")), (1, 1), "{provider}");
    }
    assert_eq!((webhooks("rainforest", "accepted"), webhooks("rainforest", "duplicate")), (3, 1));
    assert_eq!(webhooks("memberful", "unauthorized"), 1);
    assert_eq!(webhooks("memberful", "rejected"), 1, "the 413");
    assert_eq!(webhooks("memberful", "held"), 0);
    for audience in ["internal", "merchant", "payor"] {
        let series = format!("refund_relay_notifications_total{{audience=\"{audience}\",result=\"published\"}}");
        assert_eq!(value(&series), 5, "{audience}");
    }
    assert_eq!(value("refund_relay_stale_events_total"), 1, "the late processing");
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

/// `refund-relay` itself, with extra environment, in `dir`'s data directory; its stdout.
fn cli(args: &[&str], env: &[(&'static str, String)]) -> String {
    let out = Command::new(BIN).args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A held delivery as a local user meets it: 202, listed at `GET /held` and `held list`, its body
/// at `GET /held/{id}`, told to internal once however often it is resent, then stored by
/// `reprocess --data-dir` once Foloosi's confirming API is configured (the dry run first).
#[test]
fn held_deliveries_are_listed_told_once_and_reprocessed_locally() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let body = b"transaction_no=FLN9&order_id=order-9";
    let post = |server: &Server| {
        let config = support::config(&[]);
        let headers: Vec<(String, String)> = support::signed(
            &config,
            common::event::Provider::Foloosi,
            "application/x-www-form-urlencoded",
            body,
            support::now(),
            "x",
        )
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
        let (code, reply) =
            refund_relay::sender::post(&format!("{}/webhooks/foloosi", server.url), &headers, body).unwrap();
        (code, serde_json::from_str::<Value>(&reply).unwrap())
    };
    let held_id = {
        let server = start(dir.path());
        let (code, first) = post(&server);
        assert_eq!((code, first["reason"].as_str()), (202, Some("needs_confirmation: status")), "{first}");
        let (code, again) = post(&server);
        assert_eq!((code, &again["held_id"]), (202, &first["held_id"]));
        let told = support::runner::wait_for(dir.path(), 1, 10);
        assert_eq!(told.len(), 1, "told once: {told:?}");
        assert_eq!(
            (told[0]["audience"].as_str(), told[0]["attributes"]["kind"].as_str()),
            (Some("internal"), Some("held"))
        );

        let (code, list) = get(&format!("{}/held", server.url));
        assert_eq!(code, 200);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["status"], "held");
        assert_eq!(list[0]["provider"], "foloosi");
        let id = first["held_id"].as_str().unwrap().to_owned();
        let (code, one) = get(&format!("{}/held/{id}", server.url));
        assert_eq!(code, 200);
        assert!(one.get("body").is_none() && one["body_hidden"].is_string(), "no body unless asked: {one}");
        assert!(one["headers"].get("x-webhook-token").is_none(), "no credentials kept: {one}");
        assert_eq!(get(&format!("{}/held/hld_unknown", server.url)).0, 404);
        id
    };
    assert!(cli(&["held", "list", "--data-dir", &data], &[]).contains(&held_id));
    {
        let server = support::runner::start_with_args(dir.path(), &["--show-bodies"], &[]);
        let (code, one) = get(&format!("{}/held/{held_id}", server.url));
        assert_eq!((code, one["body"].as_str()), (200, std::str::from_utf8(body).ok()), "{one}");
    }

    let api = support::foloosi_api::FakeFoloosi::start();
    api.answer("FLN9", support::foloosi_api::Answer::Detail(support::foloosi_api::detail("success", "order-9", "9")));
    let env: Vec<(&'static str, String)> = api.env().into_iter().collect();
    let dry = cli(&["reprocess", "--data-dir", &data, "--dry-run"], &env);
    assert!(dry.contains("would be accepted") && dry.contains("1 would be stored"), "{dry}");
    let run = cli(&["reprocess", "--data-dir", &data], &env);
    assert!(run.contains("-> accepted as event evt_") && run.contains("1 stored"), "{run}");
    assert!(cli(&["reprocess", "--data-dir", &data], &env).contains("0 stored"), "a second run stores nothing");
    assert!(cli(&["held", "list", "--data-dir", &data], &[]).contains("\"resolved\""));
    // The reprocessed payment was told through the local outbox: internal, merchant and payor.
    let told = notifications(dir.path());
    assert_eq!(told.iter().filter(|n| n["attributes"]["kind"] == "payment").count(), 3, "{told:?}");
    let local = cli(&["refunds", "get", "foloosi", "FLN9", "--kind", "payment", "--data-dir", &data], &[]);
    let local: Value = serde_json::from_str(&local).unwrap();
    assert_eq!(local["events"][0]["amount"], serde_json::json!({ "minor": 900, "currency": "AED" }));
    let server = start(dir.path());
    let (code, payment) = get(&format!("{}/refunds/foloosi/FLN9?kind=payment", server.url));
    assert_eq!((code, payment["events"].as_array().map(Vec::len)), (200, Some(1)));
}

/// The operator's commands on the local runner's data directory: nothing is untold after the
/// outbox ran, a replay says so unless forced, and a merchant's events list oldest first.
#[test]
fn operators_replay_redrive_and_list_on_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let event_id = {
        let server = start(dir.path());
        let (ok, body) = send(&server, "conscent", "conscent/refunded.pass.json");
        assert!(ok, "{body}");
        assert_eq!(support::runner::wait_for(dir.path(), 3, 10).len(), 3);
        body["event_id"].as_str().unwrap().to_owned()
    };
    assert_eq!(cli(&["redrive", "--data-dir", &data], &[]), "", "the outbox told it already");
    // The object is in every notification; the event is found in its history.
    let object = "65e02242d03692125f1f3593";
    assert!(cli(&["replay", "conscent", object, &event_id, "--data-dir", &data], &[]).contains("already told"));
    assert_eq!(notifications(dir.path()).len(), 3);
    let forced = cli(&["replay", "conscent", object, &event_id, "--force", "--data-dir", &data], &[]);
    assert!(forced.contains("told 3 audience(s)"), "{forced}");
    assert_eq!(notifications(dir.path()).len(), 6);
    let listed = cli(&["refunds", "list", "--merchant", "65015ff10070846629fb981e", "--data-dir", &data], &[]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
}

/// What scripts (bench/, fuzz/make-corpus) read from the CLI instead of from Rust source.
#[test]
fn the_cli_describes_itself_and_signs_as_json() {
    let described: Value = serde_json::from_str(&cli(&["describe"], &[])).unwrap();
    let names: Vec<&str> = common::event::Provider::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(described["providers"], serde_json::json!(names));
    let secrets = described["dev_secrets"].as_object().unwrap();
    assert_eq!(secrets.len(), common::config::dev_secrets().count());
    for (var, value) in common::config::dev_secrets() {
        assert_eq!(secrets[var], value, "{var}");
    }
    assert_eq!(described["events_table"]["merchant_index"], common::store::layout::MERCHANT_INDEX);
    assert_eq!(described["events_table"]["held_index"], common::store::layout::HELD_INDEX);

    let fixture = support::fixtures_dir().join("rainforest/refund.succeeded.json");
    let at = support::now();
    let printed = cli(
        &[
            "sign",
            "rainforest",
            fixture.to_str().unwrap(),
            "--json",
            "--timestamp",
            &at.to_string(),
            "--delivery-id",
            "msg_x",
        ],
        &[],
    );
    let headers: serde_json::Map<String, Value> = serde_json::from_str(&printed).unwrap();
    assert_eq!(headers["svix-id"], "msg_x");
    let mut map = http::HeaderMap::new();
    for (k, v) in &headers {
        map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.as_str().unwrap().parse().unwrap());
    }
    let body = std::fs::read(&fixture).unwrap();
    let verifier = support::config(&[]).verifier(common::event::Provider::Rainforest).unwrap().clone();
    let presented = common::verify::Presented { headers: &map, query: None, body: &body };
    assert!(verifier.verify(&presented, at).is_ok(), "the printed headers verify: {printed}");
}

/// The runner's status line, for a request written by hand (so its `Host` and `Origin` are
/// whatever a browser on another site would send).
fn raw_status(server: &Server, request: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{reply}"))
}

/// A page on another site cannot use the local runner: a name DNS rebinding points at 127.0.0.1
/// is refused (421), and so is a cross-origin form post (403), before anything is stored. A name
/// given with `--allow-host` (a tunnel's) is answered.
#[test]
fn the_local_runner_answers_only_its_own_address_and_no_other_sites_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::runner::start_with_args(dir.path(), &["--allow-host", "relay.tunnel.example"], &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let get = |host: &str| {
        raw_status(&server, &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
    };
    assert_eq!(get(&format!("127.0.0.1:{port}")), 200);
    assert_eq!(get(&format!("localhost:{port}")), 200);
    assert_eq!(get("relay.tunnel.example"), 200);
    assert_eq!(get(&format!("evil.example:{port}")), 421, "DNS rebinding");
    assert_eq!(get("127.0.0.1:1"), 421, "another port");
    let body = "event=refund-applied&transaction_id=T1";
    let form = |origin: &str| {
        format!(
            "POST /webhooks/webforce?token=dev-webforce-token-not-for-production HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{origin}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(raw_status(&server, &form("Origin: http://evil.example\r\n")), 403);
    assert_eq!(raw_status(&server, &form("Sec-Fetch-Site: cross-site\r\n")), 403);
    assert!(
        notifications(dir.path()).is_empty()
            && cli(&["held", "list", "--data-dir", dir.path().to_str().unwrap()], &[]).is_empty()
    );
    // The same post from a tool (no Origin), or from the runner's own origin, goes through.
    assert_eq!(raw_status(&server, &form(&format!("Origin: http://127.0.0.1:{port}\r\n"))), 200);
    assert_eq!(raw_status(&server, &form("")), 200, "a duplicate, from a tool");
}

/// A data-protection request on the local runner: `erase --dry-run` counts, `erase` rewrites the
/// refund and the held delivery that mention the person, and no byte of their address is left in
/// the data directory's database or its write-ahead log (what was told stays with whoever was
/// told: `notifications.jsonl` here). A second run finds nothing.
#[test]
fn erase_leaves_no_copy_of_a_persons_address_in_the_local_store() {
    const ADDRESS: &str = "john.doe@example.com";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let held_body = b"transaction_no=FLN5&order_id=order-5&customer_email=john.doe%40example.com";
    {
        let server = start(dir.path());
        assert_eq!(send(&server, "memberful", "memberful/order.refunded.json").1["status"], "accepted");
        assert_eq!(send(&server, "conscent", "conscent/refunded.subscription.json").1["status"], "accepted");
        let config = support::config(&[]);
        let form = "application/x-www-form-urlencoded";
        let headers: Vec<(String, String)> =
            support::signed(&config, common::event::Provider::Foloosi, form, held_body, support::now(), "x")
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
        let (code, _) =
            refund_relay::sender::post(&format!("{}/webhooks/foloosi", server.url), &headers, held_body).unwrap();
        assert_eq!(code, 202);
        wait_for(dir.path(), 7);
    }
    let db = dir.path().join("events.sqlite3");
    let mentions = || {
        let mut bytes = std::fs::read(&db).unwrap();
        bytes.extend(std::fs::read(dir.path().join("events.sqlite3-wal")).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        text.contains(ADDRESS) || text.contains("john.doe%40example.com") || text.contains("john doe")
    };
    assert!(mentions(), "the test must be able to fail");

    let dry = cli(&["erase", "--payor-email", "John.Doe@Example.com", "--data-dir", &data, "--dry-run"], &[]);
    assert!(dry.contains("2 record(s) would be erased") && !dry.to_lowercase().contains(ADDRESS), "{dry}");
    assert!(mentions(), "a dry run writes nothing");
    let run = cli(&["erase", "--payor-email", "John.Doe@Example.com", "--data-dir", &data], &[]);
    assert!(run.contains("2 record(s) erased") && run.contains("held delivery"), "{run}");
    assert!(!mentions(), "a copy of the address is left in the database or its log");

    let refund =
        cli(&["refunds", "get", "memberful", "4DACB7B0-B728-0130-F9E8-102B343DC979", "--data-dir", &data], &[]);
    let refund: Value = serde_json::from_str(&refund).unwrap();
    assert_eq!(refund["events"][0]["amount"]["minor"], 9900, "the money stays: {refund}");
    assert!(cli(&["erase", "--payor-email", ADDRESS, "--data-dir", &data], &[]).contains("0 record(s) erased"));
    let db = String::from_utf8_lossy(&std::fs::read(&db).unwrap()).into_owned();
    assert!(db.contains("fvdzcxz@rsgfdcx.fvc"), "another person's refund (Conscent.ai's example) is untouched");
}
