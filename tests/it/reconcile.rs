//! Reconciliation against a stand-in of Rainforest's API (`support::rainforest_api`), through the
//! operator command the CLI and the operator function run: what the webhooks missed is stored once
//! and told once (`proof=fetched`), what is known writes nothing, what cannot be read is held, and
//! an API that fails is counted and asked again, never a crash.

use crate::support;

use std::sync::Arc;

use common::event::{Proof, Provider, Status};
use common::notify::MemoryNotifier;
use common::operate::{Command, Operator, Report, Request};
use common::timestamp::Timestamp;
use support::rainforest_api::{FakeRainforest, Fault};
use support::{GENERAL_ROUTING, Harness};

const FIXTURE_REFUND: &str = "rfd_2sPMefai6yWsyp4MSGUkAo32pp7";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// The operator on the harness's store and configuration, with the fake's API and a notifier
/// whose messages the test reads.
fn operator(h: &Harness, api: &FakeRainforest) -> (Operator, Arc<MemoryNotifier>) {
    let env = support::env_of(&api.env().iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    let http = Arc::new(aws_adapters::http::HyperClient::new().unwrap());
    let apis = common::api::configured(&env, http).unwrap();
    let notifier = Arc::new(MemoryNotifier::new());
    (Operator::new(&h.config, h.store.clone(), notifier.clone()).with_apis(apis), notifier)
}

async fn reconcile(op: &Operator, dry_run: bool) -> Report {
    let command = Command::Reconcile {
        provider: None,
        since: at("2026-12-01T00:00:00Z"),
        until: at("2026-12-02T00:00:00Z"),
        dry_run,
    };
    op.run(Request { command, resume: None }, None).await.unwrap()
}

async fn redrive(op: &Operator) -> Report {
    op.run(Request { command: Command::Redrive { dry_run: false }, resume: None }, None).await.unwrap()
}

fn tally(report: &Report) -> String {
    report.reconciled.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// One refund came by webhook (known), one never did (missed: stored with proof `fetched`, told
/// once), one has a status no adapter reads (held), one is outside the window. A dry run says so
/// and writes nothing; a second sweep finds nothing new; the missed refund's webhook arriving
/// after the sweep is a duplicate.
#[tokio::test]
async fn a_refund_whose_webhook_never_came_is_stored_once_and_told_once() {
    let api = FakeRainforest::start();
    let h = Harness::with(&[("ROUTING_RAINFOREST", GENERAL_ROUTING)]);
    let pushed = h.send_fixture("rainforest/refund.succeeded.json").await;
    assert_eq!(pushed.body["status"], "accepted");
    api.add_refund(FIXTURE_REFUND, "SUCCEEDED", 1250, "2026-12-01T10:00:00Z");
    api.add_refund("rfd_missed", "SUCCEEDED", 500, "2026-12-01T11:00:00Z");
    api.add_refund("rfd_odd", "REVERSED_BY_BANK", 500, "2026-12-01T12:00:00Z");
    api.add_refund("rfd_later", "SUCCEEDED", 1, "2026-12-03T00:00:00Z");
    let (op, notifier) = operator(&h, &api);
    redrive(&op).await;
    let told_before = notifier.sent().len();

    let dry = reconcile(&op, true).await;
    let expected = "reconciled rainforest: 3 listed, 1 missed, 1 known, 1 held, 0 failed";
    assert_eq!(tally(&dry), expected, "{:?}", dry.lines);
    assert!(dry.lines.iter().any(|l| l.contains("rfd_missed") && l.contains("would be stored")), "{:?}", dry.lines);
    assert_eq!((h.store.events().len(), h.store.held_items().len()), (1, 0), "a dry run writes nothing");

    let run = reconcile(&op, false).await;
    assert_eq!(tally(&run), expected, "{:?}", run.lines);
    let events = h.store.events();
    let missed = events.iter().find(|e| e.object_id == "rfd_missed").expect("stored");
    assert_eq!(
        (missed.proof, missed.status, missed.amount.as_ref().map(|m| m.minor)),
        (Proof::Fetched, Status::Succeeded, Some(500))
    );
    assert_eq!(h.store.held_items().len(), 1);
    assert!(h.store.held_items()[0].reason.contains("event_type"), "{}", h.store.held_items()[0].reason);

    // Told once, to every audience of a success, through the outbox the webhooks use.
    redrive(&op).await;
    let told: Vec<_> =
        notifier.sent().into_iter().skip(told_before).filter(|n| n.event_id == missed.event_id.as_str()).collect();
    assert_eq!(told.len(), 3, "internal, merchant and payor");
    assert!(told.iter().all(|n| n.attributes.iter().any(|(k, v)| *k == "proof" && v == "fetched")));

    let again = reconcile(&op, false).await;
    assert_eq!(tally(&again), "reconciled rainforest: 3 listed, 0 missed, 2 known, 1 held, 0 failed");
    redrive(&op).await;
    assert_eq!(notifier.sent().iter().filter(|n| n.event_id == missed.event_id.as_str()).count(), 3, "told once");
    assert_eq!(h.store.events().len(), 2);

    // Its webhook, late: the same event, a duplicate.
    let mut body: serde_json::Value =
        serde_json::from_slice(&support::fixture("rainforest/refund.succeeded.json")).unwrap();
    body["data"]["refund_id"] = "rfd_missed".into();
    body["data"]["amount"] = 500.into();
    body["data"]["payin_id"] = "pyi_of_rfd_missed".into();
    let late = h.send_body(Provider::Rainforest, "application/json", &serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(late.body["status"], "duplicate", "{}", late.body);
}

/// More than a page: the second is asked from the first's `last_key`, and every refund is stored.
/// An empty window lists nothing.
#[tokio::test]
async fn every_page_is_read_and_an_empty_window_lists_nothing() {
    let api = FakeRainforest::start();
    let h = Harness::new();
    let n = common::providers::rainforest_api::PAGE_LIMIT + 1;
    for i in 0..n {
        api.add_refund(&format!("rfd_{i:04}"), "CREATED", 100, &format!("2026-12-01T10:{:02}:{:02}Z", i / 60, i % 60));
    }
    let (op, _) = operator(&h, &api);
    let report = reconcile(&op, false).await;
    assert_eq!(tally(&report), format!("reconciled rainforest: {n} listed, {n} missed, 0 known, 0 held, 0 failed"));
    assert_eq!(h.store.events().len(), n);
    let asked = api.asked();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[1].contains(&format!("start_key=rfd_{:04}", n - 2)), "{}", asked[1]);

    let command = Command::Reconcile {
        provider: Some(Provider::Rainforest),
        since: at("2027-01-01T00:00:00Z"),
        until: at("2027-01-02T00:00:00Z"),
        dry_run: false,
    };
    let empty = op.run(Request { command, resume: None }, None).await.unwrap();
    assert_eq!(tally(&empty), "reconciled rainforest: 0 listed, 0 missed, 0 known, 0 held, 0 failed");
}

/// 429 with `Retry-After` is waited out and the page asked again; a 500 or an answer that is not
/// Rainforest's envelope is counted as failed, stores nothing, and the next sweep goes on.
#[tokio::test]
async fn rate_limits_are_waited_out_and_failures_counted_not_crashed() {
    let api = FakeRainforest::start();
    let h = Harness::new();
    api.add_refund("rfd_1", "SUCCEEDED", 100, "2026-12-01T10:00:00Z");
    let (op, _) = operator(&h, &api);

    api.fail_next(Fault::RateLimited { retry_after: Some(1) });
    let started = std::time::Instant::now();
    let report = reconcile(&op, false).await;
    assert_eq!(tally(&report), "reconciled rainforest: 1 listed, 1 missed, 0 known, 0 held, 0 failed");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After was honoured");

    for fault in [Fault::Status(500), Fault::Malformed, Fault::Status(401)] {
        api.fail_next(fault);
        let report = reconcile(&op, false).await;
        assert_eq!(
            tally(&report),
            "reconciled rainforest: 0 listed, 0 missed, 0 known, 0 held, 1 failed",
            "{:?}",
            report.lines
        );
    }
    assert_eq!(h.store.events().len(), 1);
    let report = reconcile(&op, false).await;
    assert_eq!(tally(&report), "reconciled rainforest: 1 listed, 0 missed, 1 known, 0 held, 0 failed");
}

/// `refund-relay reconcile --data-dir` as an operator runs it: the summary line, and the missed
/// refund told through the local outbox; a dry run first; an unreachable API makes the command
/// fail, saying to run it again.
#[test]
fn the_cli_reconciles_the_local_store() {
    let api = FakeRainforest::start();
    api.add_refund("rfd_cli", "SUCCEEDED", 700, "2026-12-01T10:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let window = ["--since", "2026-12-01T00:00:00Z", "--until", "2026-12-02T00:00:00Z"];
    let run = |extra: &[&str], env: &[(&str, String)]| {
        let out = std::process::Command::new(support::runner::BIN)
            .args(["reconcile", "--data-dir", data])
            .args(window)
            .args(extra)
            .env("ROUTING_RAINFOREST", GENERAL_ROUTING)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let env = api.env();
    let (ok, dry) = run(&["--dry-run"], &env);
    assert!(ok && dry.contains("reconciled rainforest: 1 listed, 1 missed, 0 known, 0 held, 0 failed"), "{dry}");
    assert!(dry.contains("memberful: skipped") && dry.contains("WebforceHQ documents no list API"), "{dry}");
    assert!(support::runner::notifications(dir.path()).is_empty(), "a dry run tells nobody");
    let (ok, out) = run(&[], &env);
    assert!(ok && out.contains("rfd_cli succeeded: missed; stored"), "{out}");
    let told = support::runner::notifications(dir.path());
    assert_eq!(told.iter().filter(|n| n["attributes"]["proof"] == "fetched").count(), 3, "{told:?}");
    let (ok, out) = run(&[], &env);
    assert!(ok && out.contains("0 missed, 1 known"), "{out}");

    let mut gone = env.clone();
    gone[2].1 = "http://127.0.0.1:9".into();
    let (ok, out) = run(&["--provider", "rainforest"], &gone);
    assert!(!ok && out.contains("1 failed") && out.contains("run reconcile again"), "{out}");
}

/// The scheduled sweep keeps a checkpoint per provider: the first run looks back its first
/// window, the next from where that one ended less the overlap; a run out of time keeps its
/// window and page and the next goes on from there; a failed run leaves the checkpoint, so the
/// window is swept again.
#[tokio::test]
async fn scheduled_sweeps_go_on_from_their_checkpoint() {
    use common::reconcile::{Reconciler, Schedule};
    use common::store::EventStore;
    use std::time::Duration;

    let api = FakeRainforest::start();
    let h = Harness::new();
    let now = Timestamp::now();
    let ago = |secs: u64| now.minus(Duration::from_secs(secs)).to_string();
    let n = common::providers::rainforest_api::PAGE_LIMIT + 5;
    for i in 0..n {
        api.add_refund(&format!("rfd_{i:04}"), "CREATED", 100, &ago(7200 - i as u64));
    }
    api.add_refund("rfd_too_old", "CREATED", 100, &ago(2 * 24 * 3600));
    let env = support::env_of(&api.env().iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    let apis = common::api::configured(&env, Arc::new(aws_adapters::http::HyperClient::new().unwrap())).unwrap();
    let rainforest = apis[0].as_ref();
    let reconciler = Reconciler::new(common::Receiver::new(&h.config, h.store.clone()), h.store.clone());
    let schedule = Schedule::DEFAULT;

    // Out of time after its first page: the window and the page to go on from are kept.
    let stopped = reconciler.scheduled(rainforest, now, &schedule, &|| true).await.unwrap();
    assert_eq!((stopped.tally.listed, stopped.tally.missed), (200, 200));
    let saved = h.store.checkpoint(Provider::Rainforest).await.unwrap().expect("saved");
    let under_way = saved.under_way.expect("a window under way");
    let end = now.minus(schedule.settle);
    assert_eq!(
        (under_way.since, under_way.until),
        (end.minus(schedule.first_window), end),
        "ends before the settling time"
    );
    assert!(under_way.cursor.is_some());

    let rest = reconciler.scheduled(rainforest, now, &schedule, &|| false).await.unwrap();
    assert_eq!((rest.tally.listed, rest.tally.missed), (n - 200, n - 200), "{:?}", rest.lines);
    assert_eq!(h.store.events().len(), n, "the one older than the first window is not pulled");
    let done = h.store.checkpoint(Provider::Rainforest).await.unwrap().unwrap();
    assert_eq!((done.through, done.under_way.clone()), (end, None));

    // Later: from the last window's end less the overlap. A refund listed late (the list is
    // eventually consistent) is found in the overlap, and missed.
    let later = now;
    api.add_refund("rfd_new", "SUCCEEDED", 100, &ago(1200));
    api.fail_next(Fault::Status(503));
    let failed = reconciler.scheduled(rainforest, later, &schedule, &|| false).await.unwrap();
    assert_eq!(failed.tally.failed, 1);
    assert_eq!(h.store.checkpoint(Provider::Rainforest).await.unwrap().unwrap(), done, "a failed run moves nothing");
    let next = reconciler.scheduled(rainforest, later, &schedule, &|| false).await.unwrap();
    assert_eq!((next.tally.missed, next.tally.failed), (1, 0), "{:?}", next.lines);
    let asked = api.asked();
    let last = asked.last().unwrap();
    let start = end.minus(schedule.overlap).whole_seconds(true);
    assert!(last.contains(&format!("created_at.start={}", start.replace(':', "%3A"))), "{last}");
}
