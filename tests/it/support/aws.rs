//! A real DynamoDB/SNS/SQS wire protocol for the tests: moto's server, started by
//! `scripts/test` (`MOTO_ENDPOINT`), or one a test starts and stops itself (`MOTO_SERVER`).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use common::store::layout::MERCHANT_INDEX;
use serde_json::{Value, json};

/// The endpoint of the shared moto server, or `None` when the tests run without one (plain
/// `cargo test`). `scripts/test` sets `REQUIRE_MOTO=1`, so there a missing server fails.
pub fn endpoint() -> Option<String> {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(std::env::var("REQUIRE_MOTO").is_err(), "REQUIRE_MOTO is set but MOTO_ENDPOINT is not");
            eprintln!("MOTO_ENDPOINT unset: skipping (run scripts/test for the AWS protocol tests)");
            None
        }
    }
}

pub async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    loader(endpoint).load().await
}

/// [`sdk`]'s configuration before it is loaded, for a test that changes one part of it.
pub fn loader(endpoint: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests"))
}

/// A name no other test uses, so tests share one server without sharing state.
pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// The events table exactly as `template.yaml` declares it.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    let key = |n: &str, t: KeyType| KeySchemaElement::builder().attribute_name(n).key_type(t).build().unwrap();
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("merchant_pk"))
        .attribute_definitions(attr("merchant_sk"))
        .attribute_definitions(attr("held_pk"))
        .attribute_definitions(attr("held_shard"))
        .attribute_definitions(attr("held_sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(MERCHANT_INDEX)
                .key_schema(key("merchant_pk", KeyType::Hash))
                .key_schema(key("merchant_sk", KeyType::Range))
                .projection(
                    Projection::builder().projection_type(ProjectionType::Include).non_key_attributes("event").build(),
                )
                .build()
                .unwrap(),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(common::store::layout::HELD_INDEX)
                .key_schema(key("held_shard", KeyType::Hash))
                .key_schema(key("held_sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(
                            [
                                "held_id",
                                "provider",
                                "received_at",
                                "reason",
                                "held_status",
                                "content_type",
                                "resolution",
                            ]
                            .map(String::from)
                            .to_vec(),
                        ))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(common::store::layout::LEGACY_HELD_INDEX)
                .key_schema(key("held_pk", KeyType::Hash))
                .key_schema(key("held_sk", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
}

/// Items whose `sk` starts with `sk_prefix`, over every page of a scan.
pub async fn item_count(ddb: &aws_sdk_dynamodb::Client, table: &str, sk_prefix: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let out = ddb.scan().table_name(table).set_exclusive_start_key(start).send().await.unwrap();
        count += out
            .items()
            .iter()
            .filter(|i| i.get("sk").and_then(|v| v.as_s().ok()).is_some_and(|s| s.starts_with(sk_prefix)))
            .count();
        start = out.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}

fn to_json(v: &StreamValue) -> Value {
    match v {
        StreamValue::S(s) => json!({ "S": s }),
        StreamValue::N(n) => json!({ "N": n }),
        StreamValue::Bool(b) => json!({ "BOOL": b }),
        StreamValue::Null(_) => json!({ "NULL": true }),
        StreamValue::M(m) => {
            json!({ "M": m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<serde_json::Map<_, _>>() })
        }
        StreamValue::L(l) => json!({ "L": l.iter().map(to_json).collect::<Vec<_>>() }),
        StreamValue::Ss(s) => json!({ "SS": s }),
        StreamValue::B(b) => {
            use base64::Engine;
            json!({ "B": base64::engine::general_purpose::STANDARD.encode(b.as_ref()) })
        }
        StreamValue::Ns(n) => json!({ "NS": n }),
        other => panic!("attribute type not used by refund-relay: {other:?}"),
    }
}

fn image_json(image: &HashMap<String, StreamValue>) -> Value {
    Value::Object(image.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

/// Reads the table's stream from the start with the DynamoDB Streams API and returns the
/// records as the Lambda event the fan-out receives (at most `max`).
pub async fn stream_batch(
    sdk: &aws_config::SdkConfig,
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> aws_adapters::lambda::StreamEvent {
    let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
    let arn = ddb.describe_table().table_name(table).send().await.unwrap().table.unwrap().latest_stream_arn.unwrap();
    let desc = streams.describe_stream().stream_arn(&arn).send().await.unwrap().stream_description.unwrap();
    let mut records = Vec::new();
    for shard in desc.shards() {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(it) = iterator {
            let out = streams.get_records().shard_iterator(it).send().await.unwrap();
            if out.records().is_empty() {
                break;
            }
            for r in out.records() {
                let d = r.dynamodb().unwrap();
                records.push(json!({
                    "eventID": r.event_id(),
                    "eventName": r.event_name().unwrap().as_str(),
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "dynamodb": {
                        "Keys": d.keys().map(image_json),
                        "NewImage": d.new_image().map(image_json).unwrap_or(json!({})),
                        "SequenceNumber": d.sequence_number(),
                        "SizeBytes": d.size_bytes(),
                        "StreamViewType": "NEW_IMAGE",
                    },
                    "eventSourceARN": arn,
                }));
            }
            iterator = out.next_shard_iterator;
        }
    }
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// The three topics, each with one SQS queue subscribed (raw delivery), as a subscriber would.
pub struct Topics {
    pub arns: aws_adapters::sns::TopicArns,
    pub queues: HashMap<&'static str, String>,
}

pub async fn topics_with_queues(sdk: &aws_config::SdkConfig) -> Topics {
    let sns = aws_sdk_sns::Client::new(sdk);
    let mut arns = HashMap::new();
    let mut queues = HashMap::new();
    for audience in ["internal", "merchant", "payor"] {
        let topic = sns.create_topic().name(unique(audience)).send().await.unwrap().topic_arn.unwrap();
        queues.insert(audience, subscribe_queue(sdk, &topic, None).await);
        arns.insert(audience, topic);
    }
    Topics {
        arns: aws_adapters::sns::TopicArns {
            internal: arns["internal"].clone(),
            merchant: arns["merchant"].clone(),
            payor: arns["payor"].clone(),
        },
        queues,
    }
}

/// A new SQS queue subscribed to `topic` with raw delivery and an optional filter policy.
pub async fn subscribe_queue(sdk: &aws_config::SdkConfig, topic: &str, filter: Option<&str>) -> String {
    let sns = aws_sdk_sns::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue_url = sqs.create_queue().queue_name(unique("q")).send().await.unwrap().queue_url.unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let mut sub =
        sns.subscribe().topic_arn(topic).protocol("sqs").endpoint(queue_arn).attributes("RawMessageDelivery", "true");
    if let Some(policy) = filter {
        sub = sub.attributes("FilterPolicy", policy);
    }
    sub.send().await.unwrap();
    queue_url
}

/// Every message in `queue` (raw SNS deliveries, with their message attributes). Messages are
/// received once and hidden for the rest of the test instead of deleted (half the calls); the
/// queue is read until a receive comes back empty, which on moto (SNS delivers to SQS before
/// `Publish` returns) means everything published so far has been read.
pub async fn drain(sdk: &aws_config::SdkConfig, queue: &str) -> Vec<(Value, HashMap<String, String>)> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut out = Vec::new();
    loop {
        let res = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(43_200)
            .message_attribute_names("All")
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        let messages = res.messages();
        if messages.is_empty() {
            return out;
        }
        for m in messages {
            let attrs = m
                .message_attributes()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned())).collect())
                .unwrap_or_default();
            out.push((serde_json::from_str(m.body().unwrap()).unwrap(), attrs));
        }
    }
}

/// A moto server of the test's own, on a free loopback port, killed on drop: for outages.
pub struct OwnMoto {
    child: Child,
    pub endpoint: String,
}

impl OwnMoto {
    pub fn start() -> Option<Self> {
        let bin = std::env::var("MOTO_SERVER").ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(OwnMoto { child, endpoint })
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Records every DynamoDB operation a client sends, to prove what one webhook costs.
#[derive(Debug, Clone, Default)]
pub struct OperationLog(pub std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for OperationLog {
    fn name(&self) -> &'static str {
        "OperationLog"
    }

    fn read_before_transmit(
        &self,
        _ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let name = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_else(|| "unknown".into());
        self.0.lock().unwrap().push(name);
        Ok(())
    }
}

/// A DynamoDB client whose requests are recorded in `log`.
pub fn counted_dynamodb(sdk: &aws_config::SdkConfig, log: &OperationLog) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(log.clone()).build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}
