//! Duplicate storms: 10,000 deliveries of 2,000 distinct events from all five providers,
//! shuffled, from 32 concurrent senders, through the local runner (embedded store) and through
//! the AWS path (DynamoDB store and stream on moto, the fan-out advancing aggregates in
//! DynamoDB). Exactly 2,000 events are stored, no event is notified twice, every object's
//! last-reached event is notified exactly once, and every object ends at its highest-ranked
//! status whatever the arrival order.
//!
//! The local runner's storm also carries 500 deliveries of 100 authenticated bodies no adapter
//! can read, from every provider: each is held exactly once and told to internal exactly once.
//!
//! `STORM_SEED` replays an arrival order; the seed in use is printed.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::event::{EventKind, Provider, Status};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{config, fixture};

const DISTINCT: usize = 2_000;
const DELIVERIES: usize = 10_000;
const SENDERS: usize = 32;
const RAINFOREST_REFUNDS: usize = 150;
const HELD_DISTINCT: usize = 100;
const HELD_DELIVERIES: usize = 500;

/// Authenticated but unreadable: malformed JSON, another media type, an unknown refund event,
/// each body distinct, from every provider in turn.
fn unreadable_bodies() -> Vec<(Provider, &'static str, Vec<u8>)> {
    (0..HELD_DISTINCT)
        .map(|i| {
            let provider = Provider::ALL[i % Provider::ALL.len()];
            match i % 3 {
                0 => (provider, "application/json", format!("{{\"storm\": {i}, oops").into_bytes()),
                1 => (provider, "text/csv", format!("storm,{i}").into_bytes()),
                _ => (
                    Provider::Rainforest,
                    "application/json",
                    edit("rainforest/refund.created.json", |v| {
                        v["event_type"] = json!("refund.reversed");
                        v["data"]["refund_id"] = json!(format!("rfd_held_{i}"));
                    }),
                ),
            }
        })
        .collect()
}

/// One distinct event: the body every delivery of it carries.
struct Event {
    provider: Provider,
    content_type: &'static str,
    body: Vec<u8>,
    kind: EventKind,
    object_id: String,
    status: Status,
}

fn edit(rel: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(rel)).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// 600 Rainforest events (150 refunds × created, processing, in_review, one terminal status)
/// and 350 each for the four other providers.
fn distinct_events() -> Vec<Event> {
    let mut out = Vec::with_capacity(DISTINCT);
    let json = "application/json";
    for r in 0..RAINFOREST_REFUNDS {
        let id = format!("rfd_storm_{r:04}");
        let terminal = [Status::Succeeded, Status::Failed, Status::Canceled][r % 3];
        for status in [Status::Created, Status::Processing, Status::InReview, terminal] {
            let body = edit(&format!("rainforest/refund.{status}.json"), |v| v["data"]["refund_id"] = json!(id));
            out.push(Event {
                provider: Provider::Rainforest,
                content_type: json,
                body,
                kind: EventKind::Refund,
                object_id: id.clone(),
                status,
            });
        }
    }
    let per = (DISTINCT - out.len()) / 4;
    for i in 0..per {
        let id = format!("STORM-{i:05}");
        let body = edit("memberful/order.refunded.json", |v| v["order"]["uuid"] = json!(id));
        out.push(Event {
            provider: Provider::Memberful,
            content_type: json,
            body,
            kind: EventKind::Refund,
            object_id: id,
            status: Status::Succeeded,
        });
        let id = format!("storm-refund-{i:05}");
        let body = edit("conscent/refunded.subscription.json", |v| v["payload"]["refund"]["_id"] = json!(id));
        out.push(Event {
            provider: Provider::Conscent,
            content_type: json,
            body,
            kind: EventKind::Refund,
            object_id: id,
            status: Status::Succeeded,
        });
        let id = format!("TX-STORM-{i:05}");
        let body = edit("webforce/refund-applied.ours.json", |v| v["transaction_id"] = json!(id));
        out.push(Event {
            provider: Provider::Webforce,
            content_type: json,
            body,
            kind: EventKind::Refund,
            object_id: id,
            status: Status::Succeeded,
        });
        let id = format!("FLSTORM{i:05}");
        let ok = i % 2 == 0;
        let body = edit("foloosi/transaction.success.json", |v| {
            v["data"]["transfer"]["transaction_no"] = json!(id);
            v["data"]["transfer"]["transaction_status"] = json!(if ok { "success" } else { "failure" });
        });
        let status = if ok { Status::Succeeded } else { Status::Failed };
        out.push(Event {
            provider: Provider::Foloosi,
            content_type: json,
            body,
            kind: EventKind::Payment,
            object_id: id,
            status,
        });
    }
    assert_eq!(out.len(), DISTINCT);
    out
}

/// Every event once, the rest drawn at random: 10,000 deliveries, shuffled.
fn arrival_order() -> Vec<usize> {
    let seed: u64 =
        std::env::var("STORM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random());
    eprintln!("STORM_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> =
        (0..DISTINCT).chain((DISTINCT..DELIVERIES).map(|_| rng.random_range(0..DISTINCT))).collect();
    order.shuffle(&mut rng);
    order
}

#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    duplicate: AtomicUsize,
    held: AtomicUsize,
    other: AtomicUsize,
}

impl Tally {
    fn count(&self, status: u16, body: &Value) {
        match (status, body["status"].as_str()) {
            (200, Some("accepted")) => self.accepted.fetch_add(1, Ordering::SeqCst),
            (200, Some("duplicate")) => self.duplicate.fetch_add(1, Ordering::SeqCst),
            (202, Some("held")) => self.held.fetch_add(1, Ordering::SeqCst),
            _ => {
                eprintln!("unexpected answer {status} {body}");
                self.other.fetch_add(1, Ordering::SeqCst)
            }
        };
    }

    fn assert_exact(&self) {
        assert_eq!(self.other.load(Ordering::SeqCst), 0, "every delivery answered accepted or duplicate");
        assert_eq!(self.accepted.load(Ordering::SeqCst), DISTINCT, "each distinct event accepted exactly once");
        assert_eq!(self.duplicate.load(Ordering::SeqCst), DELIVERIES - DISTINCT);
    }
}

/// Headers for one delivery, signed now; Rainforest resends carry a new svix-id each time.
fn headers(cfg: &common::config::Config, e: &Event, n: usize) -> http::HeaderMap {
    support::signed(cfg, e.provider, e.content_type, &e.body, support::now(), &format!("msg_storm_{n}"))
}

/// The notification checks both runs share. `sent` is (event_id, audience) per notification.
fn assert_notified_once(events: &[Event], ids: &HashMap<usize, String>, sent: &[(String, String)]) {
    let routing = support::general_routing();
    let mut copies: HashMap<&(String, String), usize> = HashMap::new();
    for n in sent {
        *copies.entry(n).or_insert(0) += 1;
    }
    let doubled: Vec<_> = copies.iter().filter(|(_, c)| **c > 1).collect();
    assert!(doubled.is_empty(), "notified twice: {:?}", &doubled[..doubled.len().min(5)]);
    let by_event: HashMap<&str, HashSet<&str>> = sent.iter().fold(HashMap::new(), |mut m, (id, a)| {
        m.entry(id.as_str()).or_default().insert(a.as_str());
        m
    });
    for (i, e) in events.iter().enumerate() {
        let want: HashSet<&str> = routing.audiences(e.provider, e.status).iter().map(|a| a.as_str()).collect();
        let got = by_event.get(ids[&i].as_str()).cloned().unwrap_or_default();
        // The terminal (or only) event of an object always advances it: told exactly once. An
        // earlier status may arrive after a later one and rightly tell nobody.
        if e.status.is_terminal() || e.provider != Provider::Rainforest {
            assert_eq!(got, want, "{} {} {}", e.provider, e.object_id, e.status);
        } else {
            assert!(got.is_empty() || got == want, "{} {} {}: partial set {got:?}", e.provider, e.object_id, e.status);
        }
    }
}

/// The highest-ranked status of each object: what it must end at.
fn final_statuses(events: &[Event]) -> HashMap<(Provider, EventKind, String), Status> {
    let mut m: HashMap<(Provider, EventKind, String), Status> = HashMap::new();
    for e in events {
        let slot = m.entry((e.provider, e.kind, e.object_id.clone())).or_insert(e.status);
        if e.status.rank() > slot.rank() {
            *slot = e.status;
        }
    }
    m
}

fn event_ids(events: &[Event]) -> HashMap<usize, String> {
    let cfg = config(&[]);
    let store = Arc::new(common::store::MemoryStore::new());
    let receiver = common::receive::Receiver::new(&cfg, store);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let h = headers(&cfg, e, i);
            let r = rt.block_on(receiver.receive(
                e.provider,
                common::WebhookRequest { method: &http::Method::POST, headers: &h, query: None, body: &e.body },
            ));
            (i, r.body["event_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn storm_through_the_local_runner() {
    let events = distinct_events();
    let ids = event_ids(&events);
    // Indices past DISTINCT are unreadable bodies, mixed in at random.
    let unreadable = unreadable_bodies();
    let mut order = arrival_order();
    order.extend((0..HELD_DELIVERIES).map(|k| DISTINCT + k % HELD_DISTINCT));
    // Seeded from the order itself, so STORM_SEED replays this too.
    let seed = order[0] as u64;
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let dir = tempfile::tempdir().unwrap();
    let server = support::runner::start_with(dir.path(), &[("ROUTING_RAINFOREST", support::GENERAL_ROUTING)]);
    let cfg = config(&[]);
    let tally = Tally::default();
    let next = AtomicUsize::new(0);
    let url = |p: Provider| format!("{}/webhooks/{p}", server.url);
    std::thread::scope(|s| {
        for _ in 0..SENDERS {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = order.get(n) else { break };
                    let (provider, h, body) = match events.get(i) {
                        Some(e) => (e.provider, headers(&cfg, e, n), &e.body),
                        None => {
                            let (p, ct, body) = &unreadable[i - DISTINCT];
                            (*p, support::signed(&cfg, *p, ct, body, support::now(), &format!("msg_storm_{n}")), body)
                        }
                    };
                    let h: Vec<(String, String)> =
                        h.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect();
                    let (status, body) = refund_relay::sender::post(&url(provider), &h, body).unwrap();
                    tally.count(status, &serde_json::from_str(&body).unwrap_or(Value::Null));
                }
            });
        }
    });
    tally.assert_exact();
    assert_eq!(tally.held.load(Ordering::SeqCst), HELD_DELIVERIES, "every unreadable delivery answered held");
    let (_, held) = support::runner::get(&format!("{}/held", server.url));
    assert_eq!(held.as_array().unwrap().len(), HELD_DISTINCT, "each unreadable body held exactly once");

    // Every object's final status, and its full history (2,000 events in all).
    let mut stored = 0;
    for ((provider, kind, id), status) in final_statuses(&events) {
        let (code, record) =
            support::runner::get(&format!("{}/refunds/{provider}/{id}?kind={}", server.url, kind.as_str()));
        assert_eq!(code, 200, "{provider} {id}");
        stored += record["events"].as_array().unwrap().len();
        // The aggregate moves when the outbox catches up; wait for it below if it has not yet.
        let _ = status;
    }
    assert_eq!(stored, DISTINCT, "exactly 2,000 events stored");

    let minimum: usize = events
        .iter()
        .filter(|e| e.status.is_terminal() || e.provider != Provider::Rainforest)
        .map(|e| support::general_routing().audiences(e.provider, e.status).len())
        .sum::<usize>()
        + HELD_DISTINCT;
    let sent = support::runner::wait_for(dir.path(), minimum, 300);
    // Each held delivery told to internal once (`assert_notified_once` below sees no pair twice).
    let held_told: HashSet<&str> =
        sent.iter().filter(|n| n["attributes"]["kind"] == "held").map(|n| n["event_id"].as_str().unwrap()).collect();
    assert_eq!(held_told.len(), HELD_DISTINCT);
    assert!(sent.iter().filter(|n| n["attributes"]["kind"] == "held").all(|n| n["audience"] == "internal"));
    let pairs: Vec<(String, String)> = sent
        .iter()
        .map(|n| (n["event_id"].as_str().unwrap().to_owned(), n["audience"].as_str().unwrap().to_owned()))
        .collect();
    assert_notified_once(&events, &ids, &pairs);
    for ((provider, kind, id), status) in final_statuses(&events) {
        let (_, record) =
            support::runner::get(&format!("{}/refunds/{provider}/{id}?kind={}", server.url, kind.as_str()));
        assert_eq!(record["status"], status.as_str(), "{provider} {id}");
    }
    eprintln!(
        "local runner: {} deliveries, {DISTINCT} stored, {HELD_DISTINCT} held, {} notifications",
        DELIVERIES + HELD_DELIVERIES,
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_through_dynamodb_and_the_stream_fanout() {
    use aws_adapters::dynamodb::DynamoStore;
    use common::fanout::Fanout;
    use common::store::EventStore;
    use futures::StreamExt;
    use support::aws as moto;

    let Some(endpoint) = moto::endpoint() else { return };
    let events = Arc::new(distinct_events());
    let ids = tokio::task::spawn_blocking({
        let events = events.clone();
        move || event_ids(&events)
    })
    .await
    .unwrap();
    let order = arrival_order();
    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("storm");
    moto::create_table(&ddb, &table).await;
    let store = Arc::new(DynamoStore::new(ddb.clone(), &table, std::time::Duration::from_secs(86_400)));
    let cfg = config(&[]);
    let receiver = common::receive::Receiver::new(&cfg, store.clone());
    let tally = Tally::default();
    let started = std::time::Instant::now();
    futures::stream::iter(order.iter().enumerate())
        .for_each_concurrent(SENDERS, |(n, &i)| {
            let (e, receiver, cfg, tally) = (&events[i], &receiver, &cfg, &tally);
            async move {
                let h = headers(cfg, e, n);
                let r = receiver
                    .receive(
                        e.provider,
                        common::WebhookRequest { method: &http::Method::POST, headers: &h, query: None, body: &e.body },
                    )
                    .await;
                tally.count(r.status.as_u16(), &r.body);
            }
        })
        .await;
    eprintln!("moto: {DELIVERIES} deliveries in {:.1} s", started.elapsed().as_secs_f64());
    tally.assert_exact();
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, DISTINCT);

    // The stream, in Lambda-sized batches, through the fan-out, whose aggregate updates go to
    // DynamoDB. Its messages are recorded in memory: SNS delivery itself (attributes, filter
    // policies, SQS) is proven in tests/it/aws.rs, and 5,000 publishes through moto would cost this
    // test minutes without proving more about "once".
    let notifier = Arc::new(common::notify::MemoryNotifier::new());
    let fanout = Fanout::new(store.clone(), notifier.clone(), support::general_routing(), "Storm".into());
    let mut batch = moto::stream_batch(&sdk, &ddb, &table).await;
    let inserts = batch.records.iter().filter(|r| r.event_name == "INSERT").count();
    assert!(inserts >= DISTINCT, "{inserts} inserts on the stream");
    // Batches of 100, four at a time, as a stream with a parallelization factor would deliver
    // them: the guarantees must not depend on the order events reach the fan-out.
    let records = std::mem::take(&mut batch.records);
    futures::stream::iter(records.chunks(100))
        .for_each_concurrent(4, |chunk| {
            let mut batch = batch.clone();
            batch.records = chunk.to_vec();
            let fanout = &fanout;
            async move {
                let res = aws_adapters::lambda::handle_stream(fanout, batch).await;
                assert!(res.batch_item_failures.is_empty(), "{res:?}");
            }
        })
        .await;
    let pairs: Vec<(String, String)> =
        notifier.sent().iter().map(|n| (n.event_id.clone(), n.audience.as_str().to_owned())).collect();
    assert_notified_once(&events, &ids, &pairs);
    for ((provider, kind, id), status) in final_statuses(&events) {
        let record = store.object(provider, kind, &id).await.unwrap().unwrap();
        assert_eq!(record.status, Some(status), "{provider} {id}");
    }
    eprintln!(
        "moto: {DISTINCT} stored, {} notifications, {:.1} s in all",
        pairs.len(),
        started.elapsed().as_secs_f64()
    );
}
