//! Faults on the way: a store that is down, throttled, or loses its answer after writing; SNS
//! failing for part of a stream batch. Nothing is lost, nothing is doubled, no false 2xx.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;

use aws_adapters::lambda::{self, StreamEvent};
use common::config::{Config, Secrets};
use common::event::Provider;
use common::fanout::Fanout;
use common::notify::Audience;
use common::receive::Receiver;
use common::store::{MemoryStore, layout};
use http::StatusCode;
use serde_json::json;
use support::faults::{FlakyNotifier, FlakyStore, StoreFault};
use support::{Harness, env_with, fixture};

fn flaky_receiver() -> (Receiver, Arc<FlakyStore<MemoryStore>>, Harness) {
    let store = Arc::new(FlakyStore::new(MemoryStore::new()));
    let config = Config::load(&Provider::ALL, Secrets::Required, &env_with(&[])).unwrap();
    // The harness only signs here; the receiver under test stores through the flaky store.
    (Receiver::new(&config, store.clone()), store, Harness::new())
}

/// Every fixture the manifest says is stored, as (provider, path): ignored and held ones write
/// no event, so a store fault means something else for them.
fn refund_fixtures() -> Vec<(Provider, String)> {
    support::accepted_fixtures()
}

#[tokio::test]
async fn a_down_or_throttled_store_never_gets_a_2xx() {
    let (receiver, store, signer) = flaky_receiver();
    let mut answered = HashMap::new();
    for fault in [StoreFault::Unavailable, StoreFault::Throttled] {
        store.set(fault);
        for round in 0..20 {
            for (provider, rel) in refund_fixtures() {
                let body = fixture(&rel);
                let headers = support::signed(
                    &signer.config,
                    provider,
                    support::content_type_of(&rel),
                    &body,
                    support::now(),
                    &format!("msg_{round}"),
                );
                let r = receiver
                    .receive(
                        provider,
                        common::WebhookRequest {
                            method: &http::Method::POST,
                            headers: &headers,
                            query: support::fixture_query(&rel).as_deref(),
                            body: &body,
                        },
                    )
                    .await;
                *answered.entry(r.status.as_u16()).or_insert(0) += 1;
            }
        }
    }
    let total: usize = answered.values().sum();
    assert!(total >= 600, "{total} deliveries tried");
    assert_eq!(answered.get(&503).copied(), Some(total), "every delivery answered 503: {answered:?}");
    assert!(store.inner.events().is_empty());
    let false_2xx = answered.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum::<usize>();
    assert_eq!(false_2xx, 0);
}

#[tokio::test]
async fn a_crash_between_store_and_answer_makes_the_retry_a_duplicate() {
    let (receiver, store, signer) = flaky_receiver();
    for (provider, rel) in refund_fixtures() {
        let body = fixture(&rel);
        let query = support::fixture_query(&rel);
        let send = |id: &str| {
            let headers =
                support::signed(&signer.config, provider, support::content_type_of(&rel), &body, support::now(), id);
            let receiver = &receiver;
            let body = &body;
            let query = query.as_deref();
            async move {
                receiver
                    .receive(
                        provider,
                        common::WebhookRequest { method: &http::Method::POST, headers: &headers, query, body },
                    )
                    .await
            }
        };
        let before = store.inner.events().len();
        store.set(StoreFault::LoseAnswer);
        let lost = send("msg_a").await;
        assert_eq!(lost.status, StatusCode::SERVICE_UNAVAILABLE, "{rel}: the provider must retry");
        store.set(StoreFault::Healthy);
        let retry = send("msg_b").await;
        // Fixtures that share an event (a refund fixture re-sent under another name) may be duplicates already.
        assert_eq!(retry.status, StatusCode::OK, "{rel}");
        assert_eq!(retry.body["status"], "duplicate", "{rel}: the retry finds the write that landed");
        assert!(store.inner.events().len() <= before + 1, "{rel}: one event, not two");
    }
}

/// The stream records Lambda would deliver for `events` (one INSERT each).
fn stream_of(events: &[common::RefundEvent]) -> StreamEvent {
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            refund_relay::lambda_events::stream_record(
                i,
                "INSERT",
                layout::dynamodb_json(&layout::EventItem::new(e, 0)).unwrap(),
                0,
            )
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// `n` distinct Conscent.ai refunds (the fixture under new ids), each accepted by `h`.
async fn store_refunds(h: &Harness, n: usize) {
    for i in 0..n {
        let mut body: serde_json::Value = serde_json::from_slice(&fixture("conscent/refunded.pass.json")).unwrap();
        body["payload"]["refund"]["_id"] = json!(format!("refund-{i}"));
        let r = h.send_body(Provider::Conscent, "application/json", &serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(r.body["status"], "accepted");
    }
}

/// The records of `batch` reported as failed (a partial redelivery, for tests of what is retried).
fn retry_of(batch: &StreamEvent, reported: &[String]) -> StreamEvent {
    let mut retry = batch.clone();
    retry.records.retain(|r| reported.contains(r.change.sequence_number.as_ref().unwrap()));
    retry
}

/// What Lambda really redelivers for a DynamoDB stream with `ReportBatchItemFailures`: the batch
/// from the lowest reported sequence number on, so every later record comes back too.
fn lambda_retry_of(batch: &StreamEvent, reported: &[String]) -> StreamEvent {
    let lowest = reported.iter().map(|s| s.parse::<u128>().unwrap()).min().expect("something was reported");
    let mut retry = batch.clone();
    retry.records.retain(|r| r.change.sequence_number.as_ref().unwrap().parse::<u128>().unwrap() >= lowest);
    retry
}

/// Lambda hands back every record after the first failure, including ones whose audiences were
/// all told. Those publish nothing again: a payor on e-mail or SMS cannot dedupe. The failed
/// record tells only the audiences it had not reached: each was marked right after its publish.
#[tokio::test]
async fn a_retried_batch_tells_no_audience_twice_of_a_record_already_told() {
    let h = Harness::new();
    store_refunds(&h, 10).await;
    let events = h.store.events();
    let batch = stream_of(&events);
    let notifier = Arc::new(FlakyNotifier::default());
    let fanout = Fanout::new(Arc::new(MemoryStore::new()), notifier.clone(), support::general_routing(), "Test".into());

    notifier.fail_for([events[3].event_id.clone()], Audience::Merchant);
    let reported = sequence_numbers(&lambda::handle_stream(&fanout, batch.clone()).await);
    assert_eq!(reported, ["100000000003"]);
    notifier.recover();
    let retry = lambda_retry_of(&batch, &reported);
    assert_eq!(retry.records.len(), 7, "records 3 to 9 come back");
    assert!(lambda::handle_stream(&fanout, retry.clone()).await.batch_item_failures.is_empty());
    // And Lambda may deliver the same batch once more (a timeout after success): still nothing.
    assert!(lambda::handle_stream(&fanout, retry).await.batch_item_failures.is_empty());

    let mut copies: HashMap<(String, Audience), usize> = HashMap::new();
    for n in notifier.published.lock().unwrap().iter() {
        *copies.entry((n.event_id.clone(), n.audience)).or_insert(0) += 1;
    }
    for (i, e) in events.iter().enumerate() {
        for a in [Audience::Internal, Audience::Merchant, Audience::Payor] {
            let n = copies.get(&(e.event_id.to_string(), a)).copied().unwrap_or(0);
            assert_eq!(n, 1, "event {i} {a:?}");
        }
    }
}

#[tokio::test]
async fn sns_failing_for_part_of_a_batch_reports_exactly_those_records_and_recovers() {
    // 60 distinct refunds stored, then fanned out in one stream batch.
    let h = Harness::new();
    store_refunds(&h, 60).await;
    let events = h.store.events();
    let batch = stream_of(&events);
    let notifier = Arc::new(FlakyNotifier::default());
    let fanout = Fanout::new(Arc::new(MemoryStore::new()), notifier.clone(), support::general_routing(), "Test".into());

    // SNS refuses the merchant message of every third event: internal was already published.
    let failing: Vec<String> = events.iter().step_by(3).map(|e| e.event_id.to_string()).collect();
    notifier.fail_for(failing.clone(), Audience::Merchant);
    let res = lambda::handle_stream(&fanout, batch.clone()).await;
    let reported = sequence_numbers(&res);
    let expected: Vec<String> = (0..60).step_by(3).map(|i| format!("{}", 100_000_000_000u64 + i as u64)).collect();
    assert_eq!(reported, expected, "exactly the failed records");

    // Recovery: Lambda retries the failed records.
    notifier.recover();
    let retry = retry_of(&batch, &reported);
    assert_eq!(retry.records.len(), 20);
    assert!(lambda::handle_stream(&fanout, retry).await.batch_item_failures.is_empty());

    let mut copies: HashMap<(String, Audience), usize> = HashMap::new();
    for n in notifier.published.lock().unwrap().iter() {
        *copies.entry((n.event_id.clone(), n.audience)).or_insert(0) += 1;
    }
    for e in &events {
        for a in [Audience::Internal, Audience::Merchant, Audience::Payor] {
            let n = copies.get(&(e.event_id.to_string(), a)).copied().unwrap_or(0);
            let retried = failing.contains(&e.event_id.to_string());
            // Everything was published once: the retried events' internal message, published
            // before the failure, was marked told and not published again.
            assert_eq!(n, 1, "{} {a:?} (retried: {retried})", e.event_id);
        }
    }
}

fn sequence_numbers(res: &lambda::BatchResponse) -> Vec<String> {
    res.batch_item_failures.iter().filter_map(|f| f.item_identifier.clone()).collect()
}

/// The event ids `notifier` published, in publishing order, keeping only those in `of`.
fn published_ids(notifier: &FlakyNotifier, of: &[&str]) -> Vec<String> {
    notifier
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.event_id.clone())
        .filter(|id| of.contains(&id.as_str()))
        .collect()
}

#[tokio::test]
async fn a_failed_event_holds_back_the_later_events_of_its_object_and_no_other_object() {
    let h = Harness::new();
    for rel in ["rainforest/refund.created.json", "conscent/refunded.pass.json", "rainforest/refund.succeeded.json"] {
        assert_eq!(h.send_fixture(rel).await.body["status"], "accepted", "{rel}");
    }
    let events = h.store.events();
    let (created, other, succeeded) = (&events[0].event_id, &events[1].event_id, &events[2].event_id);
    let batch = stream_of(&events);
    let notifier = Arc::new(FlakyNotifier::default());
    let fanout = Fanout::new(Arc::new(MemoryStore::new()), notifier.clone(), support::general_routing(), "Test".into());

    notifier.fail_for([created.clone()], Audience::Merchant);
    let res = lambda::handle_stream(&fanout, batch.clone()).await;
    let reported = sequence_numbers(&res);
    assert_eq!(reported, ["100000000000", "100000000002"], "the failed record and the later one of its refund");
    assert_eq!(published_ids(&notifier, &[other]).len(), 3, "the other object is told in full");
    assert!(published_ids(&notifier, &[succeeded]).is_empty(), "`succeeded` waits for `created`");

    notifier.recover();
    assert!(lambda::handle_stream(&fanout, retry_of(&batch, &reported)).await.batch_item_failures.is_empty());
    // `created` (internal before the failure, merchant on the retry: each once), then
    // `succeeded`, never interleaved.
    let order = published_ids(&notifier, &[created, succeeded]);
    let (c, s) = (created.as_str(), succeeded.as_str());
    assert_eq!(order, [c, c, s, s, s]);
}

#[tokio::test]
async fn a_batch_delivers_different_objects_concurrently_and_one_objects_events_in_stream_order() {
    let h = Harness::new();
    store_refunds(&h, 8).await;
    for rel in
        ["rainforest/refund.created.json", "rainforest/refund.processing.json", "rainforest/refund.succeeded.json"]
    {
        assert_eq!(h.send_fixture(rel).await.body["status"], "accepted", "{rel}");
    }
    let events = h.store.events();
    let notifier = Arc::new(FlakyNotifier::default());
    *notifier.delay.lock().unwrap() = Some(std::time::Duration::from_millis(5));
    let fanout = Fanout::new(Arc::new(MemoryStore::new()), notifier.clone(), support::general_routing(), "Test".into());

    assert!(lambda::handle_stream(&fanout, stream_of(&events)).await.batch_item_failures.is_empty());
    assert_eq!(notifier.published.lock().unwrap().len(), 8 * 3 + (2 + 1 + 3), "every audience of every event");
    let most = notifier.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most > 1, "different objects were told one after another ({most} in flight at most)");
    // One refund's statuses: each event's messages all go out before the next event's.
    let statuses: Vec<&str> = events[8..].iter().map(|e| e.event_id.as_str()).collect();
    let mut order = published_ids(&notifier, &statuses);
    order.dedup();
    assert_eq!(order, statuses, "created, processing, succeeded, in that order");
}
