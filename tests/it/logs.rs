//! Logs never carry a secret, a signature, an e-mail address or a phone number: every fixture
//! is run through the pipeline and the fan-out, accepted and refused, and the captured log is
//! searched for each. Then the same through the functions as Lambda runs them, at every level
//! Lambda's log controls offer, where the Lambda runtime and the AWS SDK log too.

use crate::support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::config::dev_secrets;
use common::event::Provider;
use common::fanout::Fanout;
use common::notify::MemoryNotifier;
use serde_json::Value;
use support::aws as moto;
use support::emulator::{fanout_env, invoke, read, setup, start, webhook_env};
use support::{Harness, fixture, now, signed};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide subscriber of this test binary: interested in every callsite, enabled for
/// none. tracing caches each callsite's interest once, computed by the thread that reaches it
/// first; a sibling test with no subscriber would cache `never` and blind the capture below
/// (a known tracing-core behaviour with `set_default`). With this one registered, no callsite
/// is ever cached as `never`.
struct Undecided;

impl tracing::Subscriber for Undecided {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn no_secret_signature_email_or_phone_in_logs() {
    static UNDECIDED: std::sync::Once = std::sync::Once::new();
    UNDECIDED.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Undecided);
    });
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    let notifier = Arc::new(MemoryNotifier::new());
    let fanout = Fanout::new(h.store.clone(), notifier.clone(), support::general_routing(), "Test".into());
    let mut signatures = Vec::new();
    for (provider, rel) in support::all_fixtures() {
        let body = fixture(&rel);
        let headers = signed(&h.config, provider, support::content_type_of(&rel), &body, now(), "msg_log");
        signatures
            .extend(headers.iter().filter(|(k, _)| *k != "content-type").map(|(_, v)| v.to_str().unwrap().to_owned()));
        let receipt = h.send(provider, &headers, None, &body).await;
        if let Some(event) = receipt.stored {
            fanout.deliver(&event).await.unwrap();
        }
        // And refused: a changed byte, and no credentials at all.
        let mut tampered = body.clone();
        tampered[1] ^= 0x20;
        h.send(provider, &headers, None, &tampered).await;
        h.send(provider, &http::HeaderMap::new(), None, &body).await;
    }
    // A stream record the fan-out cannot read is skipped and logged, without the value it choked on.
    let event = h.store.events().remove(0);
    let mut image =
        common::store::layout::dynamodb_json(&common::store::layout::EventItem::new(&event, now())).unwrap();
    let mut json: Value = serde_json::from_str(image["event"]["S"].as_str().unwrap()).unwrap();
    json["amount"] = Value::from("leaked.payor@example.com");
    image["event"]["S"] = Value::from(json.to_string());
    let record = refund_relay::lambda_events::stream_record(0, "INSERT", image, now());
    let batch = serde_json::from_value(serde_json::json!({ "Records": [record] })).unwrap();
    let res = aws_adapters::lambda::handle_stream(&fanout, batch).await;
    assert!(res.batch_item_failures.is_empty(), "skipped, not retried forever");
    assert_eq!(fanout.metrics().take().skipped_records, 1);

    // A store outage logs its error too.
    h.store.set_failing(true);
    h.send_fixture("memberful/order.refunded.json").await;
    assert!(!notifier.sent().is_empty());

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.lines().count() > 50, "the run logged: {} lines", log.lines().count());
    assert!(log.contains("accepted") && log.contains("refused") && log.contains("unreadable record"));
    assert_nothing_personal_or_secret(&log, &signatures);
    assert!(Provider::ALL.iter().all(|p| log.contains(p.as_str())));
}

fn assert_nothing_personal_or_secret(log: &str, signatures: &[String]) {
    for (_, secret) in dev_secrets() {
        assert!(!log.contains(secret), "a secret leaked");
        assert!(!log.contains(secret.trim_start_matches("whsec_")), "a secret leaked");
    }
    for sig in signatures {
        let bare = sig.trim_start_matches("v1,");
        assert!(!log.contains(bare), "a signature leaked: {sig}");
    }
    assert!(!log.contains('@'), "an e-mail address leaked");
    for phone in
        ["555-12345", "8948948898", "8383884833", "9598598585", "+1 555 0100", "+971500000001", "+971500000002"]
    {
        assert!(!log.contains(phone), "a phone number leaked: {phone}");
    }
}

/// Credentials the functions get from their environment, as Lambda gives a role's: distinctive,
/// so that a log carrying one (a signed request, a canonical request) is caught.
const SECRET_ACCESS_KEY: &str = "secret-access-key-that-must-never-be-logged";
const SESSION_TOKEN: &str = "session-token-that-must-never-be-logged";

/// Each bootstrap under the emulator against moto, at TRACE in JSON and at DEBUG in text (what
/// `AWS_LAMBDA_LOG_LEVEL` and `AWS_LAMBDA_LOG_FORMAT` select): accepted, duplicate and refused
/// deliveries, then the fan-out publishing. The Lambda runtime logs each raw event at TRACE and
/// the SDK each signed request; none of it may reach the log.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_personal_data_in_the_functions_logs_at_trace_or_debug() {
    let Some((rie, bootstraps, endpoint)) = setup() else { return };
    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let topics = moto::topics_with_queues(&sdk).await;
    let events = tempfile::tempdir().unwrap();
    refund_relay::lambda_events::write_all(events.path(), &support::fixtures_dir(), now()).await.unwrap();
    let mut signatures = Vec::new();
    for entry in std::fs::read_dir(events.path()).unwrap() {
        let event = read(&entry.unwrap().path());
        for (name, value) in event["headers"].as_object().into_iter().flatten() {
            if name.contains("signature") || name.contains("token") || name.contains("authorization") {
                signatures.push(value.as_str().unwrap().to_owned());
            }
        }
    }
    assert!(signatures.len() >= 6, "the signed events/ files: {signatures:?}");

    for (level, format) in [("TRACE", "JSON"), ("DEBUG", "TEXT")] {
        let table = moto::unique("logs");
        moto::create_table(&ddb, &table).await;
        let lambda_env = |mut env: Vec<(String, String)>| {
            env.retain(|(k, _)| !k.starts_with("AWS_SECRET") && k != "RUST_LOG");
            env.extend(
                [
                    ("AWS_LAMBDA_LOG_LEVEL", level),
                    ("AWS_LAMBDA_LOG_FORMAT", format),
                    ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
                    ("AWS_SESSION_TOKEN", SESSION_TOKEN),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
            env
        };
        let mut log = Vec::new();
        for p in Provider::ALL {
            let em = start(&rie, &bootstraps.join(p.as_str()), &lambda_env(webhook_env(p, &endpoint, &table)));
            for case in ["valid", "duplicate", "bad-signature", "valid-query-token"] {
                let path = events.path().join(format!("{p}-{case}.json"));
                if path.exists() {
                    let res = invoke(&em, &read(&path));
                    assert!(res["statusCode"] == 200 || case == "bad-signature", "{p} {case} at {level}: {res}");
                }
            }
            log.extend(em.log.lock().unwrap().drain(..));
        }
        let env = lambda_env(fanout_env(&endpoint, &table, &topics.arns));
        let em = start(&rie, &bootstraps.join("fanout"), &env);
        let stream = read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/fanout-stream.json"));
        assert_eq!(invoke(&em, &stream), serde_json::json!({ "batchItemFailures": [] }), "at {level}");
        log.extend(em.log.lock().unwrap().drain(..));

        // The functions' lines: the level asked for took effect, in the format asked for. Only
        // other crates log below INFO today, and they at most at DEBUG.
        let level_of = |line: &str| match format {
            "JSON" => serde_json::from_str::<Value>(line).ok().and_then(|v| v["level"].as_str().map(str::to_owned)),
            _ => ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .into_iter()
                .find(|l| line.trim_start().starts_with(l))
                .map(str::to_owned),
        };
        let levels: Vec<String> = log.iter().filter_map(|l| level_of(l)).collect();
        let count = |l: &str| levels.iter().filter(|x| *x == l).count();
        assert!(count("DEBUG") > 50, "at {level} in {format}: {} DEBUG lines of {}", count("DEBUG"), levels.len());
        assert!(count("INFO") >= 10, "at {level} in {format}: {} INFO lines", count("INFO"));
        assert_eq!(count("TRACE"), 0, "at {level}: another crate logged at TRACE");
        let text = log.join("\n");
        assert_nothing_personal_or_secret(&text, &signatures);
        for credential in [SECRET_ACCESS_KEY, SESSION_TOKEN, "Signature=", "AWS4-HMAC-SHA256 Credential"] {
            assert!(!text.contains(credential), "at {level}, a credential or request signature leaked: {credential}");
        }
    }
}
