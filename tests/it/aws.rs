//! The AWS path on a real wire protocol: the DynamoDB store, the stream fan-out and SNS → SQS,
//! all through the real SDK clients against moto's server (`scripts/test` starts it).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use aws_adapters::dynamodb::DynamoStore;
use aws_adapters::lambda;
use aws_adapters::sns::SnsNotifier;
use common::event::{EventKind, Provider, Status};
use common::fanout::Fanout;
use common::operate::{self, Operator};
use common::receive::Receiver;
use common::store::EventStore;
use http::StatusCode;
use serde_json::Value;
use support::aws::{self as moto, OperationLog};
use support::{config, fixture, now, signed};

const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

struct Stack {
    sdk: aws_config::SdkConfig,
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    ops: OperationLog,
    receiver: Receiver,
    store: Arc<DynamoStore>,
}

impl Stack {
    /// The fan-out as the Lambda builds it: this stack's store, the real SNS client.
    fn sns_fanout(&self, topics: &aws_adapters::sns::TopicArns) -> Fanout {
        let sns = SnsNotifier::new(aws_sdk_sns::Client::new(&self.sdk), topics.clone());
        Fanout::new(self.store.clone(), Arc::new(sns), support::general_routing(), "PlatformPay".into())
    }
}

async fn stack(endpoint: &str) -> Stack {
    let sdk = moto::sdk(endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("events");
    moto::create_table(&ddb, &table).await;
    let ops = OperationLog::default();
    let store = Arc::new(DynamoStore::new(moto::counted_dynamodb(&sdk, &ops), &table, RETENTION));
    let receiver = Receiver::new(&config(&[]), store.clone());
    Stack { sdk, ddb, table, ops, receiver, store }
}

async fn deliver(s: &Stack, rel: &str) -> common::Receipt {
    let provider: Provider = rel.split('/').next().unwrap().parse().unwrap();
    let body = fixture(rel);
    let headers = signed(&config(&[]), provider, support::content_type_of(rel), &body, now(), &moto::unique("msg"));
    s.receiver
        .receive(
            provider,
            common::WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &body },
        )
        .await
}

#[tokio::test]
async fn one_webhook_is_one_conditional_put_and_duplicates_stay_one_item() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;

    let first = deliver(&s, "rainforest/refund.succeeded.json").await;
    assert_eq!(first.body["status"], "accepted", "{}", first.body);
    assert_eq!(*s.ops.0.lock().unwrap(), ["PutItem"], "exactly one write and no read per webhook");

    // A retry, a manual resend (new svix-id) and eight concurrent deliveries: still one item.
    let again = deliver(&s, "rainforest/refund.succeeded.json").await;
    assert_eq!(again.body["status"], "duplicate");
    let concurrent = futures::future::join_all((0..8).map(|_| deliver(&s, "rainforest/refund.succeeded.json"))).await;
    assert!(concurrent.iter().all(|r| r.status == StatusCode::OK && r.body["status"] == "duplicate"));
    assert_eq!(moto::item_count(&s.ddb, &s.table, "EVT#").await, 1);
    assert!(s.ops.0.lock().unwrap().iter().all(|op| op == "PutItem"));

    // The item keeps the raw payload packed, and gives it back byte for byte, with a TTL.
    let item = s.ddb.scan().table_name(&s.table).send().await.unwrap().items.unwrap().remove(0);
    assert!(item.contains_key("raw_packed") && !item.contains_key("raw_payload"), "{item:?}");
    let stored = DynamoStore::from_item(&item).unwrap();
    assert_eq!(stored.raw_payload.as_bytes(), fixture("rainforest/refund.succeeded.json"));
    let expires: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    assert!((expires - now() - RETENTION.as_secs() as i64).abs() < 60);
    assert_eq!(item["merchant_pk"].as_s().unwrap(), "MERCHANT#mid_2sPKnRjN5gT6Zs0cHUFbDoDt1nE");
    assert_eq!(DynamoStore::from_item(&item).unwrap().event_id, first.body["event_id"].as_str().unwrap());
}

#[tokio::test]
async fn a_merchants_events_list_from_the_index_in_time_order_without_raw_payloads() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let mut ids = Vec::new();
    for rel in ["rainforest/refund.created.json", "rainforest/refund.succeeded.json"] {
        let receipt = deliver(&s, rel).await;
        assert_eq!(receipt.body["status"], "accepted", "{rel}");
        ids.push(receipt.body["event_id"].as_str().unwrap().to_owned());
    }
    // A Memberful event names no merchant, so it stays out of the index.
    assert_eq!(deliver(&s, "memberful/order.refunded.json").await.body["status"], "accepted");

    let page = s
        .ddb
        .query()
        .table_name(&s.table)
        .index_name(common::store::layout::MERCHANT_INDEX)
        .key_condition_expression("merchant_pk = :m")
        .expression_attribute_values(
            ":m",
            aws_sdk_dynamodb::types::AttributeValue::S("MERCHANT#mid_2sPKnRjN5gT6Zs0cHUFbDoDt1nE".into()),
        )
        .send()
        .await
        .unwrap();
    let items = page.items.unwrap();
    let listed: Vec<_> = items.iter().map(|i| DynamoStore::from_item(i).unwrap().event_id).collect();
    assert_eq!(listed, ids, "both events, oldest first");
    for item in &items {
        // The canonical event is projected (amount, status, payor); the raw payload is not.
        let event = DynamoStore::from_item(item).unwrap();
        assert_eq!(event.amount.as_ref().map(|a| a.minor), Some(1250), "{item:?}");
        assert!(!item.contains_key("raw_payload"), "the index copies no raw payload: {item:?}");
    }
}

fn audience_counts(messages: &[(Value, std::collections::HashMap<String, String>)]) -> Vec<String> {
    let mut v: Vec<String> = messages
        .iter()
        .map(|(b, _)| format!("{}:{}", b["provider"].as_str().unwrap(), b["status"].as_str().unwrap()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_stream_fans_out_to_the_audiences_the_routing_table_names() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    for rel in [
        "memberful/order.refunded.json",
        "conscent/refunded.subscription.json",
        "rainforest/refund.in_review.json",
        "webforce/refund-applied.ours.json",
        "foloosi/transaction.success.json",
    ] {
        assert_eq!(deliver(&s, rel).await.body["status"], "accepted", "{rel}");
    }
    let topics = moto::topics_with_queues(&s.sdk).await;
    // A subscriber that wants only Rainforest's merchant messages filters on attributes.
    let rainforest_only =
        moto::subscribe_queue(&s.sdk, &topics.arns.merchant, Some(r#"{"provider":["rainforest"]}"#)).await;
    let fanout = s.sns_fanout(&topics.arns);
    let batch = moto::stream_batch(&s.sdk, &s.ddb, &s.table).await;
    assert_eq!(batch.records.iter().filter(|r| r.event_name == "INSERT").count(), 5);
    let res = lambda::handle_stream(&fanout, batch).await;
    assert!(res.batch_item_failures.is_empty(), "{res:?}");

    let internal = moto::drain(&s.sdk, &topics.queues["internal"]).await;
    let merchant = moto::drain(&s.sdk, &topics.queues["merchant"]).await;
    let payor = moto::drain(&s.sdk, &topics.queues["payor"]).await;
    let all5 = [
        "conscent:succeeded",
        "foloosi:succeeded",
        "memberful:succeeded",
        "rainforest:in_review",
        "webforce:succeeded",
    ];
    assert_eq!(audience_counts(&internal), all5);
    assert_eq!(audience_counts(&merchant), all5);
    // In review tells the payor nothing.
    assert_eq!(
        audience_counts(&payor),
        ["conscent:succeeded", "foloosi:succeeded", "memberful:succeeded", "webforce:succeeded"]
    );
    let filtered = moto::drain(&s.sdk, &rainforest_only).await;
    assert_eq!(audience_counts(&filtered), ["rainforest:in_review"]);
    assert!(filtered[0].0["text"].as_str().unwrap().contains("PlatformPay has flagged"));

    for (body, attrs) in internal.iter().chain(&merchant).chain(&payor) {
        for key in ["provider", "kind", "event_type", "status", "audience", "merchant_id", "proof"] {
            assert!(attrs.contains_key(key), "attribute {key} missing: {attrs:?}");
        }
        assert_eq!(attrs["audience"], body["audience"].as_str().unwrap());
        // A subscriber can refuse to fulfil an order on a token alone.
        let proof = match attrs["provider"].as_str() {
            "webforce" | "foloosi" => "token",
            _ => "signature",
        };
        assert_eq!((attrs["proof"].as_str(), body["proof"].as_str()), (proof, Some(proof)), "{attrs:?}");
        assert!(body["event_id"].as_str().unwrap().starts_with("evt_"));
        assert!(body["text"].is_string());
        assert!(body.get("raw_payload").is_none());
    }
    // Personal data reaches the payor topic only.
    for (body, _) in internal.iter().chain(&merchant) {
        assert!(!body.to_string().contains('@'), "contact data outside the payor topic: {body}");
    }
    let memberful = payor.iter().find(|(b, _)| b["provider"] == "memberful").unwrap();
    assert_eq!(memberful.0["payor"]["email"], "john.doe@example.com");
    // Memberful's example keeps its subscription active: the merchant is not told to revoke access.
    assert!(merchant.iter().any(|(b, _)| b["provider"] == "memberful" && b["access_revocation"] == false));
}

#[tokio::test]
async fn out_of_order_statuses_end_at_the_highest_rank_and_stale_ones_notify_nobody() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    for rel in [
        "rainforest/refund.succeeded.json",
        "rainforest/refund.processing.json",
        "rainforest/refund.created.json",
        "rainforest/refund.in_review.json",
        "rainforest/refund.failed.json",
    ] {
        assert_eq!(deliver(&s, rel).await.body["status"], "accepted", "{rel}");
    }
    let topics = moto::topics_with_queues(&s.sdk).await;
    let fanout = s.sns_fanout(&topics.arns);
    let batch = moto::stream_batch(&s.sdk, &s.ddb, &s.table).await;
    assert!(lambda::handle_stream(&fanout, batch.clone()).await.batch_item_failures.is_empty());

    let record = s
        .store
        .object(Provider::Rainforest, EventKind::Refund, "rfd_2sPMefai6yWsyp4MSGUkAo32pp7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, Some(Status::Succeeded));
    assert_eq!(record.events.len(), 5, "every event is kept for audit");
    let internal = moto::drain(&s.sdk, &topics.queues["internal"]).await;
    assert_eq!(audience_counts(&internal), ["rainforest:succeeded"], "only the first terminal status is told");

    // The stream redelivers the batch (a retry): the told event is not told again.
    assert!(lambda::handle_stream(&fanout, batch).await.batch_item_failures.is_empty());
    let again = moto::drain(&s.sdk, &topics.queues["internal"]).await;
    assert!(again.is_empty(), "told again: {again:?}");
}

#[tokio::test]
async fn a_stopped_moto_is_503_on_receive_and_failed_records_in_the_fanout() {
    let Some(_) = moto::endpoint() else { return };
    let Some(mut own) = moto::OwnMoto::start() else { panic!("MOTO_SERVER must name moto_server for the outage test") };
    let s = stack(&own.endpoint).await;
    assert_eq!(deliver(&s, "memberful/order.refunded.json").await.body["status"], "accepted");
    assert_eq!(deliver(&s, "conscent/refunded.pass.json").await.body["status"], "accepted");
    let topics = moto::topics_with_queues(&s.sdk).await;
    let batch = moto::stream_batch(&s.sdk, &s.ddb, &s.table).await;
    let sequence: Vec<String> = batch
        .records
        .iter()
        .filter(|r| r.event_name == "INSERT")
        .map(|r| r.change.sequence_number.clone().unwrap())
        .collect();
    assert_eq!(sequence.len(), 2);

    own.stop();
    for rel in ["rainforest/refund.succeeded.json", "memberful/order.refunded.json"] {
        let r = deliver(&s, rel).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{rel}: {}", r.body);
        assert_eq!(r.body["error"], "store_unavailable");
    }
    let fanout = s.sns_fanout(&topics.arns);
    let res = lambda::handle_stream(&fanout, batch).await;
    let failed: Vec<String> = res.batch_item_failures.into_iter().filter_map(|f| f.item_identifier).collect();
    assert_eq!(failed, sequence, "exactly the records that could not be delivered");
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn deliver_body(s: &Stack, provider: Provider, content_type: &str, body: &[u8]) -> common::Receipt {
    let headers = signed(&config(&[]), provider, content_type, body, now(), &moto::unique("msg"));
    s.receiver
        .receive(provider, common::WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body })
        .await
}

/// The operator function's core on this stack: the table, real SNS topics, `extra` settings.
fn operator(s: &Stack, topics: &aws_adapters::sns::TopicArns, extra: &[(&str, &str)]) -> Operator {
    let sns = SnsNotifier::new(aws_sdk_sns::Client::new(&s.sdk), topics.clone());
    Operator::new(&config(extra), s.store.clone(), Arc::new(sns))
}

async fn run(op: &Operator, command: operate::Command) -> operate::Report {
    op.run(operate::Request { command, resume: None }, None).await.unwrap()
}

/// `refund-relay`'s output when it fails.
fn cli_fails(endpoint: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refund-relay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `refund-relay` against moto's DynamoDB, as an operator runs it.
fn cli(endpoint: &str, args: &[&str], env: &[(&'static str, String)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refund-relay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A held delivery on DynamoDB: one item (one PutItem, held once however often it is resent),
/// the internal audience told once through the stream, and the operator's `reprocess` storing it
/// once the configuration can read it. From a shell, `reprocess --table` refuses.
#[tokio::test]
async fn held_deliveries_on_dynamodb_are_told_once_and_reprocessed() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let body = b"transaction_no=FLN8&order_id=order-8";
    let r = deliver_body(&s, Provider::Foloosi, FORM, body).await;
    assert_eq!((r.status, &r.body["reason"]), (StatusCode::ACCEPTED, &Value::from("needs_confirmation: status")));
    assert_eq!(*s.ops.0.lock().unwrap(), ["PutItem"], "holding is one write too");
    let again = deliver_body(&s, Provider::Foloosi, FORM, body).await;
    assert_eq!(again.body["held_id"], r.body["held_id"]);
    assert_eq!(moto::item_count(&s.ddb, &s.table, "HELD").await, 1);
    assert_eq!(moto::item_count(&s.ddb, &s.table, "EVT#").await, 0);

    let topics = moto::topics_with_queues(&s.sdk).await;
    let fanout = s.sns_fanout(&topics.arns);
    let res = lambda::handle_stream(&fanout, moto::stream_batch(&s.sdk, &s.ddb, &s.table).await).await;
    assert!(res.batch_item_failures.is_empty(), "{res:?}");
    let internal = moto::drain(&s.sdk, &topics.queues["internal"]).await;
    assert_eq!(internal.len(), 1, "told once: {internal:?}");
    assert_eq!(internal[0].1["kind"], "held");
    assert!(internal[0].0["text"].as_str().unwrap().contains("foloosi delivery could not be read"));
    assert!(moto::drain(&s.sdk, &topics.queues["merchant"]).await.is_empty());

    let listed = cli(&endpoint, &["held", "list", "--table", &s.table], &[]);
    assert!(listed.contains(r.body["held_id"].as_str().unwrap()) && listed.contains("\"held\""), "{listed}");

    let refused = cli_fails(&endpoint, &["reprocess", "--table", &s.table]);
    assert!(refused.contains("--stack"), "{refused}");

    let api = support::foloosi_api::FakeFoloosi::start();
    api.answer("FLN8", support::foloosi_api::Answer::Detail(support::foloosi_api::detail("success", "order-8", "8")));
    let env = api.env();
    let op = operator(&s, &topics.arns, &env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    let reprocess = |dry_run| operate::Command::Reprocess { provider: None, dry_run };
    let dry = run(&op, reprocess(true)).await;
    assert!(dry.lines[0].contains("would be accepted") && dry.lines[0].contains("succeeded"), "{dry:?}");
    assert_eq!(moto::item_count(&s.ddb, &s.table, "EVT#").await, 0, "a dry run writes nothing");
    let done = run(&op, reprocess(false)).await;
    assert!(done.lines[0].contains("-> accepted as event evt_"), "{done:?}");
    assert_eq!(done.stored, 1);
    assert_eq!(moto::item_count(&s.ddb, &s.table, "EVT#").await, 1);
    let listed = cli(&endpoint, &["held", "list", "--table", &s.table], &[]);
    assert!(listed.contains("\"resolved\""), "{listed}");
    let twice = run(&op, reprocess(false)).await;
    assert_eq!((twice.stored, twice.lines.len()), (0, 0), "{twice:?}");
    assert_eq!(moto::item_count(&s.ddb, &s.table, "EVT#").await, 1, "reprocessing twice stores once");
    // Resolved, it expires as events do; while held it had no expiry at all.
    let held = s.ddb.scan().table_name(&s.table).send().await.unwrap().items.unwrap();
    let held = held.iter().find(|i| i["sk"].as_s().unwrap() == "HELD").unwrap();
    let expires: i64 = held["expires_at"].as_n().unwrap().parse().unwrap();
    assert!((expires - now() - RETENTION.as_secs() as i64).abs() < 60, "{held:?}");

    // The operator looks the payment up in the same table, with its money.
    let got = cli(&endpoint, &["refunds", "get", "foloosi", "FLN8", "--kind", "payment", "--table", &s.table], &[]);
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["events"][0]["status"], "succeeded");
    assert_eq!(got["events"][0]["amount"], serde_json::json!({ "minor": 800, "currency": "AED" }));
}

/// Same identity, other content: the stored item comes back with the failed condition, so a
/// conflict costs the one request a duplicate costs.
#[tokio::test]
async fn a_conflict_is_told_from_a_duplicate_in_one_request() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    assert_eq!(deliver(&s, "conscent/refunded.pass.json").await.body["status"], "accepted");
    s.ops.0.lock().unwrap().clear();
    assert_eq!(deliver(&s, "conscent/refunded.pass.json").await.body["status"], "duplicate");
    assert_eq!(*s.ops.0.lock().unwrap(), ["PutItem"], "a duplicate is one request");
    s.ops.0.lock().unwrap().clear();
    let mut other: Value = serde_json::from_slice(&fixture("conscent/refunded.pass.json")).unwrap();
    other["payload"]["refund"]["amount"] = Value::from(7);
    let r = deliver_body(&s, Provider::Conscent, "application/json", &serde_json::to_vec(&other).unwrap()).await;
    assert_eq!((r.status, &r.body["reason"]), (StatusCode::ACCEPTED, &Value::from("conflict")));
    assert_eq!(*s.ops.0.lock().unwrap(), ["PutItem", "PutItem"], "the event's write, then the held item's");
    assert_eq!(moto::item_count(&s.ddb, &s.table, "EVT#").await, 1, "the stored event is untouched");
    assert_eq!(moto::item_count(&s.ddb, &s.table, "HELD").await, 1);
}

/// `len` characters of base64's alphabet from a xorshift generator: text DEFLATE packs by a
/// quarter at most.
fn incompressible(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// DynamoDB's limits, checked before the write, on the real protocol: an id beyond the
/// partition key's 2,048 bytes is held (the write could never succeed), and a notification
/// beyond SNS's 256 KiB is shortened, keeping its event id.
#[tokio::test]
async fn store_and_message_limits_hold_or_shorten_instead_of_failing_forever() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let mut long_id: Value = serde_json::from_slice(&fixture("rainforest/refund.failed.json")).unwrap();
    long_id["data"]["refund_id"] = Value::from("r".repeat(3000));
    let r = deliver_body(&s, Provider::Rainforest, "application/json", &serde_json::to_vec(&long_id).unwrap()).await;
    assert_eq!((r.status, &r.body["reason"]), (StatusCode::ACCEPTED, &Value::from("too_large_for_store: object_id")));
    assert_eq!(moto::item_count(&s.ddb, &s.table, "HELD").await, 1);
    // 250 KB of refusal text that DEFLATE cannot pack much is in the item twice (the raw payload
    // and the canonical event): past the 400 KB item limit, so the write could never succeed, and
    // the delivery is held whole.
    let noise = incompressible(250_000);
    let mut huge: Value = serde_json::from_slice(&fixture("rainforest/refund.failed.json")).unwrap();
    huge["data"]["refusal_desc"] = Value::from(noise.clone());
    let huge = serde_json::to_vec(&huge).unwrap();
    let r = deliver_body(&s, Provider::Rainforest, "application/json", &huge).await;
    assert_eq!((r.status, &r.body["reason"]), (StatusCode::ACCEPTED, &Value::from("too_large_for_store: body")));
    assert_eq!(moto::item_count(&s.ddb, &s.table, "HELD").await, 2);
    // The check is DynamoDB's own limit: the event item it refused to write, put directly, fails.
    let mut event: common::RefundEvent = serde_json::from_value(serde_json::json!({
        "event_id": "evt_x", "idempotency_key": "k", "provider": "rainforest", "kind": "refund",
        "event_type": "refund.failed", "status": "failed", "object_id": "rfd_huge",
        "received_at": "2026-12-01T00:00:00Z", "raw_payload": "",
    }))
    .unwrap();
    event.raw_payload = String::from_utf8(huge).unwrap();
    event.reason = Some(noise);
    assert!(s.store.put_if_absent(&event).await.is_err(), "moto refuses an item over 400 KB");

    // 200 KB of refusal text reaches the notification twice (the field and the text).
    let mut wordy: Value = serde_json::from_slice(&fixture("rainforest/refund.failed.json")).unwrap();
    wordy["data"]["refusal_desc"] = Value::from("d".repeat(200_000));
    let r = deliver_body(&s, Provider::Rainforest, "application/json", &serde_json::to_vec(&wordy).unwrap()).await;
    assert_eq!(r.body["status"], "accepted", "{}", r.body);
    let event = r.stored.unwrap();
    let n = &common::notify::notifications(&event, &support::general_routing(), "PlatformPay")[0];
    let size = n.body.to_string().len() + n.attributes.iter().map(|(k, v)| k.len() + 6 + v.len()).sum::<usize>();
    assert!(size <= common::notify::MAX_MESSAGE_BYTES, "{size}");
    assert_eq!(n.body["event_id"], event.event_id.as_str());
    assert_eq!(n.body["truncated"], true);
    let topics = moto::topics_with_queues(&s.sdk).await;
    let fanout = s.sns_fanout(&topics.arns);
    let res = lambda::handle_stream(&fanout, moto::stream_batch(&s.sdk, &s.ddb, &s.table).await).await;
    assert!(res.batch_item_failures.is_empty(), "{res:?}");
    let internal = moto::drain(&s.sdk, &topics.queues["internal"]).await;
    assert!(internal.iter().any(|(b, _)| b["event_id"] == event.event_id.as_str()), "published within SNS's limit");
}

/// Lambda redelivers a whole stream batch (a timeout after success, or the records after a
/// failure): on DynamoDB the told marker answers from the same conditional UpdateItem, and no
/// audience hears of an event twice.
#[tokio::test]
async fn a_redelivered_stream_batch_publishes_nothing_again() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    for rel in ["conscent/refunded.pass.json", "memberful/order.refunded.json", "foloosi/transaction.success.json"] {
        assert_eq!(deliver(&s, rel).await.body["status"], "accepted", "{rel}");
    }
    let topics = moto::topics_with_queues(&s.sdk).await;
    let fanout = s.sns_fanout(&topics.arns);
    let batch = moto::stream_batch(&s.sdk, &s.ddb, &s.table).await;
    s.ops.0.lock().unwrap().clear();
    assert!(lambda::handle_stream(&fanout, batch.clone()).await.batch_item_failures.is_empty());
    // Per event: the advance, a marker after each of its three audiences, and the told marker.
    assert_eq!(s.ops.0.lock().unwrap().iter().filter(|op| *op == "UpdateItem").count(), 15);
    s.ops.0.lock().unwrap().clear();
    assert!(lambda::handle_stream(&fanout, batch).await.batch_item_failures.is_empty());
    assert_eq!(*s.ops.0.lock().unwrap(), ["UpdateItem"; 3], "one conditional request per record, nothing else");
    for audience in ["internal", "merchant", "payor"] {
        assert_eq!(moto::drain(&s.sdk, &topics.queues[audience]).await.len(), 3, "{audience}: each event once");
    }
}

/// After a fan-out outage the operator tells what nobody was told (`redrive`, with a dry run
/// first), tells one event again on request (`replay`, which refuses to repeat itself without
/// `force`, and finds the event with one Query of its object, never a Scan), and a merchant's
/// refunds list from the index.
#[tokio::test]
async fn operators_redrive_replay_and_list_from_the_table() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let (mut ids, mut stored) = (Vec::new(), Vec::new());
    for rel in ["conscent/refunded.pass.json", "memberful/order.refunded.json", "rainforest/refund.failed.json"] {
        let r = deliver(&s, rel).await;
        assert_eq!(r.body["status"], "accepted", "{rel}");
        ids.push(r.body["event_id"].as_str().unwrap().to_owned());
        stored.push(r.stored.unwrap());
    }
    let topics = moto::topics_with_queues(&s.sdk).await;
    let op = operator(&s, &topics.arns, &[]);
    // The stream never ran (the outage): every event is untold.
    let dry = run(&op, operate::Command::Redrive { dry_run: true }).await;
    assert_eq!(dry.lines.len(), 3, "{dry:?}");
    // Conscent.ai and Memberful tell all three; Rainforest's own table tells nobody of `failed`.
    assert!(dry.lines.iter().any(|l| l.contains("would tell nobody (rainforest refund")), "{dry:?}");
    assert_eq!(dry.lines.iter().filter(|l| l.contains("would tell internal, merchant, payor")).count(), 2);
    assert!(moto::drain(&s.sdk, &topics.queues["internal"]).await.is_empty(), "a dry run tells nobody");

    s.ops.0.lock().unwrap().clear();
    let redrive = run(&op, operate::Command::Redrive { dry_run: false }).await;
    assert_eq!((redrive.lines.len(), redrive.failed), (3, 0), "{redrive:?}");
    // A page of keys and markers (a projection); per object with no aggregate on the page, its
    // markers; each untold event read whole once.
    let ops = s.ops.0.lock().unwrap().clone();
    assert_eq!(ops.iter().filter(|o| *o == "Scan").count(), 1, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| *o == "GetItem").count(), 3 + 3, "{ops:?}");
    assert!(ops.iter().all(|o| ["Scan", "GetItem", "UpdateItem"].contains(&o.as_str())), "{ops:?}");
    assert_eq!(moto::drain(&s.sdk, &topics.queues["payor"]).await.len(), 2);
    assert_eq!(moto::drain(&s.sdk, &topics.queues["internal"]).await.len(), 2);
    assert!(run(&op, operate::Command::Redrive { dry_run: false }).await.lines.is_empty(), "nothing untold any more");

    let conscent = stored[0].clone();
    let got = s.store.object_event(Provider::Conscent, EventKind::Refund, "x", &ids[0]).await.unwrap();
    assert_eq!(got, None, "another object's partition does not hold it");
    let replay = |force| operate::Command::Replay {
        provider: Provider::Conscent,
        kind: EventKind::Refund,
        object_id: conscent.object_id.clone(),
        event_ids: vec![ids[0].clone()],
        force,
    };
    s.ops.0.lock().unwrap().clear();
    let again = run(&op, replay(false)).await;
    assert!(again.lines[0].contains("already told"), "{again:?}");
    assert_eq!(*s.ops.0.lock().unwrap(), ["Query", "UpdateItem"], "one Query finds the event; no Scan");
    assert!(moto::drain(&s.sdk, &topics.queues["payor"]).await.is_empty(), "a replay does not repeat itself");
    let forced = run(&op, replay(true)).await;
    assert!(forced.lines[0].contains("told 3 audience(s)"), "{forced:?}");
    assert_eq!(moto::drain(&s.sdk, &topics.queues["payor"]).await.len(), 1);
    let unknown = op
        .run(
            operate::Request {
                command: operate::Command::Replay {
                    provider: Provider::Conscent,
                    kind: EventKind::Refund,
                    object_id: conscent.object_id.clone(),
                    event_ids: vec!["evt_unknown".into()],
                    force: false,
                },
                resume: None,
            },
            None,
        )
        .await;
    assert!(unknown.unwrap_err().to_string().contains("no event evt_unknown"));
    // From a shell the write commands refuse the table, naming what to use.
    for args in [&["redrive", "--table", &s.table][..], &["replay", "conscent", "o", "evt_1", "--table", &s.table]] {
        let refused = cli_fails(&endpoint, args);
        assert!(refused.contains("--stack"), "{refused}");
    }

    let listed =
        cli(&endpoint, &["refunds", "list", "--merchant", "mid_2sPKnRjN5gT6Zs0cHUFbDoDt1nE", "--table", &s.table], &[]);
    let rows: Vec<Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!((rows[0]["provider"].as_str(), rows[0]["status"].as_str()), (Some("rainforest"), Some("failed")));
    assert_eq!(rows[0]["amount"]["minor"], 1250);
    let later = cli(
        &endpoint,
        &[
            "refunds",
            "list",
            "--merchant",
            "mid_2sPKnRjN5gT6Zs0cHUFbDoDt1nE",
            "--since",
            "2999-01-01T00:00:00Z",
            "--table",
            &s.table,
        ],
        &[],
    );
    assert_eq!(later, "");
}

/// Each audience is marked told right after its publish: when the event's told marker is lost
/// after the payor was told, the retry publishes to nobody, and the payor hears of it once.
#[tokio::test]
async fn a_retry_after_the_last_publish_tells_the_payor_once() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let r = deliver(&s, "conscent/refunded.pass.json").await;
    let event = r.stored.expect("stored");
    let topics = moto::topics_with_queues(&s.sdk).await;
    let store = Arc::new(support::faults::FlakyStore::new(DynamoStore::new(s.ddb.clone(), &s.table, RETENTION)));
    let sns = SnsNotifier::new(aws_sdk_sns::Client::new(&s.sdk), topics.arns.clone());
    let fanout = Fanout::new(store.clone(), Arc::new(sns), support::general_routing(), "PlatformPay".into());
    store.fail_next_final_mark();
    assert!(fanout.deliver(&event).await.is_err(), "the told marker was lost");
    let retried = fanout.deliver(&event).await.unwrap();
    assert_eq!(retried, common::fanout::Delivery::Notified(vec![]), "every audience was marked: nothing again");
    assert_eq!(fanout.deliver(&event).await.unwrap(), common::fanout::Delivery::AlreadyTold);
    for audience in ["internal", "merchant", "payor"] {
        assert_eq!(moto::drain(&s.sdk, &topics.queues[audience]).await.len(), 1, "{audience} told once");
    }
}

/// Held items spread over several index partitions per provider; a listing of 1,000 of them is
/// index Queries only (no body is read: the index does not keep it) and pages; and past its
/// provider's cap a new held delivery is answered 503 and counted, while other providers still
/// hold theirs.
#[tokio::test]
async fn held_items_spread_list_without_bodies_and_stop_at_the_cap() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let body = |i: usize| format!("{{\"not a refund\": {i}, \"pad\": \"{}\"}}", "x".repeat(2000));
    for i in 0..1000 {
        let held = common::held::HeldDelivery::new(
            Provider::ALL[i % Provider::ALL.len()],
            common::timestamp::Timestamp::now(),
            &http::HeaderMap::new(),
            None,
            body(i).as_bytes(),
            &common::verify::Verified::default(),
            &common::held::HoldReason::bare(common::held::HoldCode::Malformed),
        );
        s.store.hold(&held).await.unwrap();
    }
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = s.ddb.scan().table_name(&s.table).set_exclusive_start_key(start).send().await.unwrap();
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let shards: std::collections::BTreeSet<&str> =
        items.iter().filter_map(|i| i.get("held_shard").and_then(|v| v.as_s().ok()).map(String::as_str)).collect();
    assert_eq!(shards.len(), Provider::ALL.len() * common::store::layout::HELD_SHARDS as usize, "{shards:?}");
    // What the index gives back has no body.
    let page = s
        .ddb
        .query()
        .table_name(&s.table)
        .index_name(common::store::layout::HELD_INDEX)
        .key_condition_expression("held_shard = :s")
        .expression_attribute_values(
            ":s",
            aws_sdk_dynamodb::types::AttributeValue::S(shards.first().unwrap().to_string()),
        )
        .send()
        .await
        .unwrap();
    assert!(page.items().iter().all(|i| !i.contains_key("body") && i.contains_key("reason")), "{:?}", page.items()[0]);

    s.ops.0.lock().unwrap().clear();
    let (mut listed, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = s.store.held(None, after, 300).await.unwrap();
        listed.extend(page.items);
        pages += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((listed.len(), pages), (1000, 4));
    let ids: std::collections::BTreeSet<&str> = listed.iter().map(|h| h.held_id.as_str()).collect();
    assert_eq!(ids.len(), 1000, "every item once");
    assert!(listed.windows(2).all(|w| (w[0].received_at, &w[0].held_id) >= (w[1].received_at, &w[1].held_id)));
    assert!(s.ops.0.lock().unwrap().iter().all(|o| o == "Query"), "index Queries only: no GetItem, no Scan");

    // The cap: three new held items a minute for Foloosi, then 503.
    let capped = Arc::new(DynamoStore::new(s.ddb.clone(), &s.table, RETENTION).with_held_cap(3));
    let receiver = Receiver::new(&config(&[]), capped);
    let second = time::OffsetDateTime::now_utc().second();
    if second > 50 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await; // one minute's counter throughout
    }
    let send = |provider: Provider, i: usize| {
        let receiver = receiver.clone();
        async move {
            let body = format!("transaction_no=FLN{i}&order_id=flood-{i}");
            let headers = signed(&config(&[]), provider, FORM, body.as_bytes(), now(), &moto::unique("msg"));
            let req = common::WebhookRequest {
                method: &http::Method::POST,
                headers: &headers,
                query: None,
                body: body.as_bytes(),
            };
            receiver.receive(provider, req).await
        }
    };
    for i in 0..3 {
        assert_eq!(send(Provider::Foloosi, i).await.status, StatusCode::ACCEPTED);
    }
    let over = send(Provider::Foloosi, 3).await;
    assert_eq!(
        (over.status, over.outcome),
        (StatusCode::SERVICE_UNAVAILABLE, common::metrics::WebhookOutcome::HeldOverCap)
    );
    assert_eq!(over.body["error"], "held_cap_reached");
    let webforce = send(Provider::Webforce, 4).await;
    assert_eq!(webforce.status, StatusCode::ACCEPTED, "another provider's cap is its own: {}", webforce.body);
}

/// A webhook function whose secret is named by `MEMBERFUL_WEBHOOK_SECRET_ARN`, on moto's Secrets
/// Manager: read at start-up, rotated through `old,new` to `new` without a restart, and still
/// verifying with what it read while the secret cannot be read.
#[tokio::test]
async fn a_secret_in_secrets_manager_rotates_without_a_restart() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    let sm = aws_sdk_secretsmanager::Client::new(&s.sdk);
    const OLD: &str = "memberful-secret-before-the-rotation";
    const NEW: &str = "memberful-secret-after-the-rotation";
    let arn = sm.create_secret().name(moto::unique("memberful")).secret_string(OLD).send().await.unwrap().arn.unwrap();
    let env = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("EVENTS_TABLE", s.table.as_str()), ("SECRETS_TTL_SECONDS", "1")];
        pairs.extend_from_slice(extra);
        support::env_of(&pairs)
    };
    let receiver =
        lambda::webhook_receiver_with(Provider::Memberful, &env(&[("MEMBERFUL_WEBHOOK_SECRET_ARN", &arn)]), &s.sdk)
            .await
            .expect("starts with the secret read from Secrets Manager");
    let body = fixture("memberful/order.refunded.json");
    let send = |secret: &'static str| {
        let headers = signed(
            &config(&[("MEMBERFUL_WEBHOOK_SECRET", secret)]),
            Provider::Memberful,
            "application/json",
            &body,
            now(),
            "msg",
        );
        let receiver = receiver.clone();
        let body = body.clone();
        async move {
            let req =
                common::WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &body };
            receiver.receive(Provider::Memberful, req).await.status
        }
    };
    let ttl = || tokio::time::sleep(Duration::from_millis(1100));
    assert_eq!(send(OLD).await, StatusCode::OK);
    assert_eq!(send(NEW).await, StatusCode::UNAUTHORIZED, "not in the store yet");

    sm.put_secret_value().secret_id(&arn).secret_string(format!("{OLD},{NEW}")).send().await.unwrap();
    ttl().await;
    assert_eq!(send(NEW).await, StatusCode::OK, "read again after the TTL");
    assert_eq!(send(OLD).await, StatusCode::OK, "both, while the secret lists both");

    sm.put_secret_value().secret_id(&arn).secret_string(NEW).send().await.unwrap();
    ttl().await;
    assert_eq!(send(OLD).await, StatusCode::UNAUTHORIZED, "the old secret is gone");
    assert_eq!(send(NEW).await, StatusCode::OK);

    // Secrets Manager cannot give the secret any more: what was read stays in use.
    sm.delete_secret().secret_id(&arn).force_delete_without_recovery(true).send().await.unwrap();
    ttl().await;
    assert_eq!(send(NEW).await, StatusCode::OK);

    // At start-up a secret that cannot be read, or a variable set both ways, stops the function.
    let e = lambda::webhook_receiver_with(Provider::Memberful, &env(&[("MEMBERFUL_WEBHOOK_SECRET_ARN", &arn)]), &s.sdk)
        .await
        .err()
        .expect("a deleted secret");
    assert!(e.to_string().contains("MEMBERFUL_WEBHOOK_SECRET"), "{e}");
    let both = env(&[("MEMBERFUL_WEBHOOK_SECRET_ARN", &arn), ("MEMBERFUL_WEBHOOK_SECRET", NEW)]);
    assert!(lambda::webhook_receiver_with(Provider::Memberful, &both, &s.sdk).await.is_err());
}

/// The functions' HTTPS client looks host names up itself, on the runtime's thread rather than
/// tokio's blocking pool: a store named `localhost`, not an address, is reached through it.
#[tokio::test]
async fn the_functions_client_reaches_a_store_by_host_name() {
    let Some(endpoint) = moto::endpoint() else { return };
    let by_name = endpoint.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(by_name, endpoint, "the shared server listens on 127.0.0.1: {endpoint}");
    let sdk = moto::loader(&by_name).http_client(lambda::https_client(lambda::SdkSetup::Lambda)).load().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("by-name");
    moto::create_table(&ddb, &table).await;
    let store = DynamoStore::new(ddb.clone(), &table, RETENTION);
    let receiver = Receiver::new(&config(&[]), Arc::new(store));
    let body = fixture("memberful/order.refunded.json");
    let headers = signed(&config(&[]), Provider::Memberful, "application/json", &body, now(), "msg-by-name");
    let receipt = receiver
        .receive(
            Provider::Memberful,
            common::WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &body },
        )
        .await;
    assert_eq!(receipt.body["status"], "accepted", "{}", receipt.body);
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, 1);
}

/// Erasure on DynamoDB: the refund whose payload (packed with a dictionary) and payor carry the
/// address, and the held body that mentions it, are rewritten in place: TTL, keys and the
/// other person's refund unchanged, nobody told again (the fan-out reads only INSERTs), and a
/// scan of the table decodes no copy of the address.
#[tokio::test]
async fn erase_rewrites_packed_payloads_and_held_bodies_in_dynamodb() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    for rel in ["memberful/order.refunded.json", "conscent/refunded.subscription.json"] {
        assert_eq!(deliver(&s, rel).await.status, StatusCode::OK, "{rel}");
    }
    let held = b"transaction_no=FLN5&order_id=order-5&customer_email=John.Doe%40example.com";
    assert_eq!(deliver_body(&s, Provider::Foloosi, FORM, held).await.status, StatusCode::ACCEPTED);
    let scan = || async {
        let items = s.ddb.scan().table_name(&s.table).consistent_read(true).send().await.unwrap().items.unwrap();
        let mut texts = Vec::new();
        for item in &items {
            match item["sk"].as_s().unwrap().as_str() {
                "HELD" => {
                    texts.push(String::from_utf8_lossy(&DynamoStore::held_from_item(item).unwrap().body).into_owned())
                }
                sk if sk.starts_with("EVT#") => {
                    let e = DynamoStore::from_item(item).unwrap();
                    texts.push(format!("{} {:?} {:?}", e.raw_payload, e.payor.email, e.payor.phone));
                }
                _ => {}
            }
        }
        (items, texts.join("\n").to_lowercase())
    };
    let (before, text) = scan().await;
    assert!(text.contains("john.doe@example.com") && text.contains("john.doe%40example.com"));

    let op = Operator::new(&config(&[]), s.store.clone(), Arc::new(common::notify::MemoryNotifier::new()));
    let who = common::erase::PayorEmail::new("john.doe@EXAMPLE.com").unwrap();
    let dry = run(&op, operate::Command::Erase { payor_email: who.clone(), dry_run: true }).await;
    assert_eq!(dry.erased, 2, "{:?}", dry.lines);
    assert_eq!(scan().await.0, before, "a dry run writes nothing");
    let done = run(&op, operate::Command::Erase { payor_email: who.clone(), dry_run: false }).await;
    assert_eq!(done.erased, 2, "{:?}", done.lines);

    let (after, text) = scan().await;
    assert!(!text.contains("john.doe") && !text.contains("john doe") && !text.contains("555-12345"), "{text}");
    assert!(text.contains("fvdzcxz@rsgfdcx.fvc"), "another person's refund is untouched");
    assert_eq!(after.len(), before.len());
    let memberful = |items: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>]| {
        items
            .iter()
            .find(|i| {
                i["pk"].as_s().unwrap().starts_with("OBJ#memberful") && i["sk"].as_s().unwrap().starts_with("EVT#")
            })
            .cloned()
            .unwrap()
    };
    let (was, is) = (memberful(&before), memberful(&after));
    assert_eq!(was.get("expires_at"), is.get("expires_at"), "the TTL stays");
    assert!(is.contains_key("raw_packed") || is.contains_key("raw_payload"));
    let erased = DynamoStore::from_item(&is).unwrap();
    let stored = DynamoStore::from_item(&was).unwrap();
    assert!(erased.same_content(&stored) && erased.amount == stored.amount, "the refund itself stays");
    let again = run(&op, operate::Command::Erase { payor_email: who, dry_run: false }).await;
    assert_eq!(again.erased, 0, "{:?}", again.lines);
}

/// Reconciliation's lookup on DynamoDB: keys-only `BatchGetItem`s, 100 keys a request, that
/// answer exactly the stored events among 150, and write nothing.
#[tokio::test]
async fn existing_finds_stored_events_in_batches_without_writing() {
    let Some(endpoint) = moto::endpoint() else { return };
    let s = stack(&endpoint).await;
    assert_eq!(deliver(&s, "rainforest/refund.succeeded.json").await.status, StatusCode::OK);
    let stored = s
        .store
        .object(Provider::Rainforest, EventKind::Refund, "rfd_2sPMefai6yWsyp4MSGUkAo32pp7")
        .await
        .unwrap()
        .unwrap();
    let first = s
        .store
        .object_event(Provider::Rainforest, EventKind::Refund, &stored.id, &stored.events[0].event_id)
        .await
        .unwrap()
        .unwrap();
    let mut events = Vec::new();
    for i in 0..150 {
        let mut e = first.clone();
        e.object_id = format!("rfd_{i}");
        e.idempotency_key =
            common::event::IdempotencyKey::new(Provider::Rainforest, &e.object_id, &e.event_type, e.status);
        e.event_id = e.idempotency_key.event_id();
        if i % 3 == 0 {
            assert_eq!(s.store.put_if_absent(&e).await.unwrap(), common::store::Put::Stored);
        }
        events.push(e);
    }
    events.push(first.clone());
    let count = |op: &str| s.ops.0.lock().unwrap().iter().filter(|o| *o == op).count();
    let before = count("PutItem");
    let found = s.store.existing(&events).await.unwrap();
    let want: std::collections::HashSet<_> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0 || *i == 150)
        .map(|(_, e)| e.idempotency_key.clone())
        .collect();
    assert_eq!(found, want);
    assert_eq!(count("BatchGetItem"), 2, "151 keys: two requests");
    assert_eq!(count("PutItem"), before, "a lookup writes nothing");
}
