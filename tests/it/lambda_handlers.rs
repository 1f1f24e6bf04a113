//! The Lambda entry points in-process: API Gateway v2 events (as `refund-relay events` writes
//! them) through `handle_webhook`, and a stream batch through `handle_stream`.

use crate::support;

use std::sync::Arc;

use aws_adapters::lambda::{self, lambda_http};
use common::config::{Config, Secrets};
use common::event::Provider;
use common::fanout::Fanout;
use common::notify::{Audience, MemoryNotifier};
use common::receive::Receiver;
use common::store::MemoryStore;
use serde_json::Value;
use support::{env_with, fixtures_dir};

fn receiver(provider: Provider, extra: &[(&str, &str)]) -> (Receiver, Arc<MemoryStore>) {
    let config = Config::load(&[provider], Secrets::Required, &env_with(extra)).unwrap();
    let store = Arc::new(MemoryStore::new());
    (Receiver::new(&config, store.clone()), store)
}

async fn invoke(receiver: &Receiver, provider: Provider, event: &Value) -> (u16, Value) {
    let req = lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
    let res = lambda::handle_webhook(receiver, provider, req).await.unwrap();
    let status = res.status().as_u16();
    let body: Value = serde_json::from_slice(res.body().as_ref()).expect("a JSON body");
    (status, body)
}

fn read(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn fresh_events_valid_duplicate_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    refund_relay::lambda_events::write_all(dir.path(), &fixtures_dir(), support::now()).await.unwrap();
    for p in Provider::ALL {
        let (receiver, store) = receiver(p, &[]);
        let (status, body) = invoke(&receiver, p, &read(&dir.path().join(format!("{p}-valid.json")))).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("accepted")), "{p}: {body}");
        let (status, body) = invoke(&receiver, p, &read(&dir.path().join(format!("{p}-duplicate.json")))).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "{p}: {body}");
        let (status, _) = invoke(&receiver, p, &read(&dir.path().join(format!("{p}-bad-signature.json")))).await;
        assert_eq!(status, 401, "{p}");
        let query = dir.path().join(format!("{p}-valid-query-token.json"));
        if query.exists() {
            let (status, body) = invoke(&receiver, p, &read(&query)).await;
            assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "{p}: {body}");
        }
        assert_eq!(store.events().len(), 1, "{p}");
    }
}

/// The committed `events/` must stay valid: they are re-verified here with the replay window
/// the README documents for replaying them (`REPLAY_TOLERANCE_SECONDS=315360000`, ten years).
#[tokio::test]
async fn committed_events_still_verify() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut seen = 0;
    for p in Provider::ALL {
        let (receiver, _) = receiver(p, &[("REPLAY_TOLERANCE_SECONDS", "315360000")]);
        for (case, expected) in [("valid", 200), ("duplicate", 200), ("bad-signature", 401), ("valid-query-token", 200)]
        {
            let path = dir.join(format!("{p}-{case}.json"));
            if case == "valid-query-token" && !path.exists() {
                continue;
            }
            let (status, body) = invoke(&receiver, p, &read(&path)).await;
            assert_eq!(status, expected, "{}: {body}", path.display());
            seen += 1;
        }
    }
    // Every committed webhook event was checked: none is left behind by a provider or a case.
    let mut operator = 0;
    let committed = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).filter(|e| {
        let name = e.file_name().into_string().unwrap();
        if name.starts_with("operator-") {
            // The operator function's events read as its requests.
            serde_json::from_value::<common::operate::Request>(read(&e.path())).expect(&name);
            operator += 1;
        }
        name != "fanout-stream.json" && name != "reconcile-schedule.json" && !name.starts_with("operator-")
    });
    assert_eq!(seen, committed.count());
    assert_eq!(operator, 2, "redrive and reprocess dry runs");
}

#[tokio::test]
async fn the_stream_event_fans_out_and_reports_failures_by_sequence_number() {
    let payload = read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/fanout-stream.json"));
    let batch: lambda::StreamEvent = serde_json::from_value(payload.clone()).unwrap();
    let inserts = payload["Records"].as_array().unwrap().iter().filter(|r| r["eventName"] == "INSERT").count();
    assert_eq!(inserts, Provider::ALL.len(), "one event per provider");
    let (events, told) = (inserts as u64, 3 * inserts);

    let store = Arc::new(MemoryStore::new());
    let notifier = Arc::new(MemoryNotifier::new());
    let fanout = Fanout::new(store.clone(), notifier.clone(), support::general_routing(), "Test".into());
    let res = lambda::handle_stream(&fanout, batch.clone()).await;
    assert!(res.batch_item_failures.is_empty());
    // Terminal `succeeded` events, each to internal, merchant and payor.
    assert_eq!(notifier.sent().len(), told);
    // The invocation's counts, which `run_fanout` writes as its EMF documents.
    let counts = fanout.metrics().take();
    for a in 0..Audience::ALL.len() {
        assert_eq!(counts.notifications[a], [events, 0], "{:?} published, failed", Audience::ALL[a]);
    }
    assert_eq!((counts.stale_events, counts.skipped_records), (0, 0));
    assert_eq!(counts.fanout_emf(0).len(), 3, "one document per audience");

    // A redelivery of the whole batch publishes nothing: every event was told in full.
    let res = lambda::handle_stream(&fanout, batch.clone()).await;
    assert!(res.batch_item_failures.is_empty());
    assert_eq!(notifier.sent().len(), told);

    // SNS down: every insert is reported, by its sequence number, and the MODIFY is not.
    let failing = Arc::new(MemoryNotifier::new());
    failing.set_failing(true);
    let fanout = Fanout::new(Arc::new(MemoryStore::new()), failing, support::general_routing(), "Test".into());
    let res = lambda::handle_stream(&fanout, batch.clone()).await;
    // Each event stops at its first audience (internal), and nothing later is tried.
    let counts = fanout.metrics().take();
    assert_eq!(counts.notifications, [[0, events], [0, 0], [0, 0]]);
    let ids: Vec<&str> = res.batch_item_failures.iter().filter_map(|f| f.item_identifier.as_deref()).collect();
    let inserted: Vec<String> = (0..inserts as u64).map(|i| (100_000_000_000 + i).to_string()).collect();
    assert_eq!(ids, inserted);
    let json = serde_json::to_value(&res).unwrap();
    assert_eq!(json["batchItemFailures"][0]["itemIdentifier"], "100000000000");

    // A record whose event cannot be read is skipped (retrying would block the shard), and
    // counted: the alarm on SkippedRecords is the only way anyone hears of it.
    let mut unreadable = payload.clone();
    unreadable["Records"][0]["dynamodb"]["NewImage"]["event"]["S"] = "not JSON".into();
    let unreadable: lambda::StreamEvent = serde_json::from_value(unreadable).unwrap();
    let fanout = Fanout::new(Arc::new(MemoryStore::new()), notifier.clone(), support::general_routing(), "Test".into());
    let res = lambda::handle_stream(&fanout, unreadable).await;
    assert!(res.batch_item_failures.is_empty());
    let counts = fanout.metrics().take();
    assert_eq!(counts.skipped_records, 1);
    let others = 3 * (events - 1);
    assert_eq!(counts.notifications.iter().map(|[published, _]| published).sum::<u64>(), others, "the others");
}

#[tokio::test]
async fn functions_refuse_to_start_without_their_configuration() {
    let none = |_: &str| None;
    for p in Provider::ALL {
        let Err(e) = lambda::webhook_receiver(p, &none).await else { panic!("{p} started without a secret") };
        assert!(e.to_string().contains(p.as_str()), "{e}");
    }
    // With its secret but no table, still no.
    let only_secret = env_with(&[("ALLOW_DEVELOPMENT_SECRETS", "true")]);
    let Err(e) = lambda::webhook_receiver(Provider::Memberful, &only_secret).await else {
        panic!("started without a table")
    };
    assert!(e.to_string().contains("EVENTS_TABLE"));
    let Err(e) = lambda::fanout_from_env(&env_with(&[("EVENTS_TABLE", "t")])).await else {
        panic!("fan-out started without topics")
    };
    assert!(e.to_string().contains("TOPIC_ARN"));
}
