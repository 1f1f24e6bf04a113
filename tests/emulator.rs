//! Each function's `bootstrap` run exactly as Lambda runs it, under AWS's Runtime Interface
//! Emulator (shipped in the `aws-sam-cli` package), against moto, invoked with `events/`-style
//! events. `scripts/test` builds the bootstraps and names the emulator (`RIE_BIN`,
//! `BOOTSTRAP_DIR`); without them this test skips, unless `REQUIRE_MOTO` is set.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config::DEV_SECRETS;
use common::event::Provider;
use serde_json::Value;
use support::aws as moto;

struct Emulator {
    child: Child,
    invoke_url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the emulator on loopback only (both its invoke API and its runtime API) with
/// `bootstrap` as the function.
fn start(rie: &Path, bootstrap: &Path, env: &[(String, String)]) -> Emulator {
    let (invoke, runtime) = (free_port(), free_port());
    let mut child = Command::new(rie)
        .arg("--runtime-interface-emulator-address")
        .arg(format!("127.0.0.1:{invoke}"))
        .arg("--runtime-api-address")
        .arg(format!("127.0.0.1:{runtime}"))
        .arg(bootstrap)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the emulator");
    let log = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", invoke)).is_err() {
        assert!(Instant::now() < deadline, "the emulator did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Emulator { child, invoke_url: format!("http://127.0.0.1:{invoke}/2015-03-31/functions/function/invocations"), log }
}

fn invoke(em: &Emulator, event: &Value) -> Value {
    let (status, body) = refund_relay::cli::post(&em.invoke_url, &[], event.to_string().as_bytes()).unwrap();
    assert_eq!(status, 200, "the emulator answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// The init time the emulator measured (`INIT REPORT(durationMs: ...)`), waiting for the line.
fn init_ms(em: &Emulator) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(ms) = em.log.lock().unwrap().iter().find_map(|l| {
            l.split("INIT REPORT(durationMs: ").nth(1).and_then(|r| r.split(')').next()).and_then(|n| n.parse().ok())
        }) {
            return ms;
        }
        assert!(Instant::now() < deadline, "no INIT REPORT line: {:?}", em.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn setup() -> Option<(PathBuf, PathBuf, String)> {
    let endpoint = moto::endpoint()?;
    match (std::env::var("RIE_BIN"), std::env::var("BOOTSTRAP_DIR")) {
        (Ok(rie), Ok(dir)) => Some((rie.into(), dir.into(), endpoint)),
        _ => {
            assert!(std::env::var("REQUIRE_MOTO").is_err(), "REQUIRE_MOTO is set but RIE_BIN/BOOTSTRAP_DIR are not");
            None
        }
    }
}

fn base_env(endpoint: &str, table: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("EVENTS_TABLE", table),
        // The published development secrets sign events/; a deployed function refuses them.
        ("ALLOW_DEVELOPMENT_SECRETS", "true"),
        ("RUST_LOG", "info"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bootstrap_under_the_runtime_interface_emulator() {
    let Some((rie, bootstraps, endpoint)) = setup() else { return };
    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("rie");
    moto::create_table(&ddb, &table).await;
    let events = tempfile::tempdir().unwrap();
    refund_relay::events::write_all(events.path(), &support::fixtures_dir(), support::now()).await.unwrap();

    for p in Provider::ALL {
        let mut env = base_env(&endpoint, &table);
        for var in common::config::secret_vars(p) {
            if let Some((k, v)) = DEV_SECRETS.iter().find(|(k, _)| k == var) {
                env.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        let em = start(&rie, &bootstraps.join(p.as_str()), &env);
        let expect =
            [("valid", 200, Some("accepted")), ("duplicate", 200, Some("duplicate")), ("bad-signature", 401, None)];
        for (case, status, outcome) in expect {
            let res = invoke(&em, &read(&events.path().join(format!("{p}-{case}.json"))));
            assert_eq!(res["statusCode"], status, "{p} {case}: {res}");
            let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
            if let Some(outcome) = outcome {
                assert_eq!(body["status"], outcome, "{p} {case}");
            }
        }
        // One EMF document per invocation, on stdout, in the order of the answers.
        let outcomes: Vec<(String, String)> = emf_documents(&em)
            .iter()
            .map(|d| (d["Provider"].as_str().unwrap().to_owned(), d["Outcome"].as_str().unwrap().to_owned()))
            .collect();
        let want: Vec<(String, String)> =
            ["accepted", "duplicate", "unauthorized"].iter().map(|o| (p.to_string(), (*o).to_owned())).collect();
        assert_eq!(outcomes, want, "{p}");
        eprintln!("{p}: INIT REPORT durationMs {:.1}", init_ms(&em));
    }
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, 5);

    // Without its secret a function refuses to start: the emulator reports an init error.
    let em = start(&rie, &bootstraps.join("memberful"), &base_env(&endpoint, &table));
    let (status, body) = refund_relay::cli::post(&em.invoke_url, &[], b"{}").unwrap();
    assert!(status != 200 || body.contains("errorType"), "started without a secret: {status} {body}");

    // The fan-out, on the committed stream event, publishing to real topics.
    let topics = moto::topics_with_queues(&sdk).await;
    let mut env = base_env(&endpoint, &table);
    env.push(("INTERNAL_TOPIC_ARN".into(), topics.arns.internal.clone()));
    env.push(("MERCHANT_TOPIC_ARN".into(), topics.arns.merchant.clone()));
    env.push(("PAYOR_TOPIC_ARN".into(), topics.arns.payor.clone()));
    // The stream holds Rainforest's `succeeded`, which its own table tells nobody.
    env.push(("ROUTING_RAINFOREST".into(), support::GENERAL_ROUTING.into()));
    let em = start(&rie, &bootstraps.join("fanout"), &env);
    let stream = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("events/fanout-stream.json"));
    let res = invoke(&em, &stream);
    assert_eq!(res, serde_json::json!({ "batchItemFailures": [] }));
    eprintln!("fanout: INIT REPORT durationMs {:.1}", init_ms(&em));
    for audience in ["internal", "merchant", "payor"] {
        assert_eq!(moto::drain(&sdk, &topics.queues[audience]).await.len(), 5, "{audience}");
    }
    let published: Vec<(String, u64)> = emf_documents(&em)
        .iter()
        .map(|d| (d["Audience"].as_str().unwrap().to_owned(), d["Notifications"].as_u64().unwrap()))
        .collect();
    assert_eq!(published, [("internal".into(), 5), ("merchant".into(), 5), ("payor".into(), 5)]);
}

/// The CloudWatch EMF documents the function wrote so far: its JSON lines with an `_aws` member.
fn emf_documents(em: &Emulator) -> Vec<Value> {
    em.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RefundRelay")
        .collect()
}
