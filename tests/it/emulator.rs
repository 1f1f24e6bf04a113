//! Each function's `bootstrap` run exactly as Lambda runs it, under AWS's Runtime Interface
//! Emulator (shipped in the `aws-sam-cli` package), against moto, invoked with `events/`-style
//! events. `scripts/test` builds the bootstraps and names the emulator (`RIE_BIN`,
//! `BOOTSTRAP_DIR`); without them this test skips, unless `REQUIRE_MOTO` is set.

use crate::support;

use std::path::{Path, PathBuf};

use common::event::Provider;
use serde_json::Value;
use support::aws as moto;
use support::emulator::{
    Machine, base_env, emf_documents_when, fanout_env, init_ms, invoke, read, setup, start, start_on, webhook_env,
};

#[tokio::test(flavor = "multi_thread")]
async fn every_bootstrap_under_the_runtime_interface_emulator() {
    let Some((rie, bootstraps, endpoint)) = setup() else { return };
    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("rie");
    moto::create_table(&ddb, &table).await;
    let events = tempfile::tempdir().unwrap();
    refund_relay::lambda_events::write_all(events.path(), &support::fixtures_dir(), support::now()).await.unwrap();

    for p in Provider::ALL {
        let em = start(&rie, &bootstraps.join(p.as_str()), &webhook_env(p, &endpoint, &table));
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
        let outcomes: Vec<(String, String)> = emf_documents_when(&em, 3)
            .iter()
            .map(|d| (d["Provider"].as_str().unwrap().to_owned(), d["Outcome"].as_str().unwrap().to_owned()))
            .collect();
        let want: Vec<(String, String)> =
            ["accepted", "duplicate", "unauthorized"].iter().map(|o| (p.to_string(), (*o).to_owned())).collect();
        assert_eq!(outcomes, want, "{p}");
        eprintln!("{p}: INIT REPORT durationMs {:.1}", init_ms(&em));
    }
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, Provider::ALL.len());

    // Its secret named by an ARN instead: read from Secrets Manager at init.
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let mut env = webhook_env(Provider::Memberful, &endpoint, &table);
    let (var, secret) = env.iter().find(|(k, _)| k == "MEMBERFUL_WEBHOOK_SECRET").cloned().unwrap();
    let arn = sm.create_secret().name(moto::unique("rie")).secret_string(secret).send().await.unwrap().arn.unwrap();
    env.retain(|(k, _)| *k != var);
    env.push((format!("{var}_ARN"), arn));
    let em = start(&rie, &bootstraps.join("memberful"), &env);
    let res = invoke(&em, &read(&events.path().join("memberful-valid.json")));
    assert_eq!(res["statusCode"], 200, "{res}");
    let res = invoke(&em, &read(&events.path().join("memberful-bad-signature.json")));
    assert_eq!(res["statusCode"], 401, "{res}");
    eprintln!("memberful, secret from Secrets Manager: INIT REPORT durationMs {:.1}", init_ms(&em));

    // Without its secret a function refuses to start: the emulator reports an init error.
    let em = start(&rie, &bootstraps.join("memberful"), &base_env(&endpoint, &table));
    let (status, body) = refund_relay::sender::post(&em.invoke_url, &[], b"{}").unwrap();
    assert!(status != 200 || body.contains("errorType"), "started without a secret: {status} {body}");

    // The fan-out, on the committed stream event, publishing to real topics.
    let topics = moto::topics_with_queues(&sdk).await;
    let env = fanout_env(&endpoint, &table, &topics.arns);
    let em = start(&rie, &bootstraps.join("fanout"), &env);
    let stream = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("events/fanout-stream.json"));
    let res = invoke(&em, &stream);
    assert_eq!(res, serde_json::json!({ "batchItemFailures": [] }));
    eprintln!("fanout: INIT REPORT durationMs {:.1}", init_ms(&em));
    // One event per provider, each one told to every audience.
    for audience in ["internal", "merchant", "payor"] {
        assert_eq!(moto::drain(&sdk, &topics.queues[audience]).await.len(), Provider::ALL.len(), "{audience}");
    }
    let published: Vec<(String, u64)> = emf_documents_when(&em, 3)
        .iter()
        .map(|d| (d["Audience"].as_str().unwrap().to_owned(), d["Notifications"].as_u64().unwrap()))
        .collect();
    let told = Provider::ALL.len() as u64;
    assert_eq!(published, [("internal".into(), told), ("merchant".into(), told), ("payor".into(), told)]);
}

/// The artifact the template deploys: arm64 bootstraps built as `sam build` builds them (`cargo
/// lambda build --release --arm64`, which scripts/test runs and names in `ARM64_BOOTSTRAP_DIR`),
/// run by the emulator's own arm64 binary, both under Debian's qemu-user-static.
#[tokio::test(flavor = "multi_thread")]
async fn the_arm64_bootstraps_under_qemu() {
    let Some((rie, _, endpoint)) = setup() else { return };
    let Ok(dir) = std::env::var("ARM64_BOOTSTRAP_DIR") else {
        eprintln!("skipped: ARM64_BOOTSTRAP_DIR is not set (scripts/test sets it in its arm64 step)");
        return;
    };
    let qemu = PathBuf::from(std::env::var("QEMU_AARCH64").unwrap_or_else(|_| "/usr/bin/qemu-aarch64-static".into()));
    let sysroot = Path::new("/usr/aarch64-linux-gnu");
    let machine = Machine::Arm64 { qemu: &qemu, sysroot };
    let rie = rie.with_file_name("aws-lambda-rie-arm64");
    let bootstrap = |name: &str| Path::new(&dir).join(name).join("bootstrap");
    for binary in [rie.clone(), bootstrap("rainforest"), bootstrap("fanout")] {
        let elf = std::fs::read(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        // ELF e_machine 183 is AArch64: not an x86-64 binary run by mistake.
        assert_eq!((&elf[..4], u16::from_le_bytes([elf[18], elf[19]])), (&b"\x7fELF"[..], 183), "{}", binary.display());
    }

    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("arm64");
    moto::create_table(&ddb, &table).await;
    let events = tempfile::tempdir().unwrap();
    refund_relay::lambda_events::write_all(events.path(), &support::fixtures_dir(), support::now()).await.unwrap();
    let em = start_on(machine, &rie, &bootstrap("rainforest"), &webhook_env(Provider::Rainforest, &endpoint, &table));
    for (case, status, outcome) in
        [("valid", 200, "accepted"), ("duplicate", 200, "duplicate"), ("bad-signature", 401, "unauthorized")]
    {
        let res = invoke(&em, &read(&events.path().join(format!("rainforest-{case}.json"))));
        assert_eq!(res["statusCode"], status, "{case}: {res}");
        let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["status"].as_str().or(body["error"].as_str()), Some(outcome), "{case}: {body}");
    }
    eprintln!("rainforest arm64 under qemu: INIT REPORT durationMs {:.1}", init_ms(&em));
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, 1);

    let topics = moto::topics_with_queues(&sdk).await;
    let env = fanout_env(&endpoint, &table, &topics.arns);
    let em = start_on(machine, &rie, &bootstrap("fanout"), &env);
    let stream = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("events/fanout-stream.json"));
    assert_eq!(invoke(&em, &stream), serde_json::json!({ "batchItemFailures": [] }));
    eprintln!("fanout arm64 under qemu: INIT REPORT durationMs {:.1}", init_ms(&em));
    for audience in ["internal", "merchant", "payor"] {
        assert_eq!(moto::drain(&sdk, &topics.queues[audience]).await.len(), Provider::ALL.len(), "{audience}");
    }
}

/// The recovery commands as an operator runs them against a deployment: the CLI invokes the
/// operator function (here the bootstrap under the emulator, which serves Lambda's Invoke API)
/// and the function does the work on its own configuration. The shell has no Foloosi key and no
/// routing, and the CLI itself never publishes nor touches the table.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_drives_the_operator_function() {
    use support::count_proxy::CountProxy;
    use support::foloosi_api::{Answer, FakeFoloosi, detail};

    let Some((rie, bootstraps, endpoint)) = setup() else { return };
    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("operator");
    moto::create_table(&ddb, &table).await;
    let topics = moto::topics_with_queues(&sdk).await;

    // What the webhook functions stored during an outage of the fan-out: two Foloosi deliveries
    // held for confirmation, and a Rainforest refund that failed.
    let store = std::sync::Arc::new(aws_adapters::dynamodb::DynamoStore::new(
        ddb.clone(),
        &table,
        std::time::Duration::from_secs(3600),
    ));
    let receiver = common::Receiver::new(&support::config(&[]), store.clone());
    for body in ["transaction_no=FLN8&order_id=order-8", "transaction_no=FLN9&order_id=order-9"] {
        let form = "application/x-www-form-urlencoded";
        let config = support::config(&[]);
        let headers = support::signed(&config, Provider::Foloosi, form, body.as_bytes(), support::now(), "m");
        let req = common::WebhookRequest {
            method: &http::Method::POST,
            headers: &headers,
            query: None,
            body: body.as_bytes(),
        };
        assert_eq!(receiver.receive(Provider::Foloosi, req).await.body["reason"], "needs_confirmation: status");
    }
    let failed = support::fixture("rainforest/refund.failed.json");
    let config = support::config(&[]);
    let headers = support::signed(&config, Provider::Rainforest, "application/json", &failed, support::now(), "m");
    let req = common::WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &failed };
    let refund = receiver.receive(Provider::Rainforest, req).await.stored.expect("stored");

    // The deployment: Foloosi's key (FLN8 confirmed, FLN9 unknown to it) and a routing table
    // that tells every audience of Rainforest's `failed` (Rainforest's own tells nobody),
    // set on the function only.
    let api = FakeFoloosi::start();
    api.answer("FLN8", Answer::Detail(detail("success", "order-8", "8")));
    let function_proxy = CountProxy::start(&endpoint);
    let mut env = base_env(&function_proxy.url, &table);
    env.extend(fanout_env(&function_proxy.url, &table, &topics.arns).into_iter().skip(env.len()));
    env.extend(api.env().map(|(k, v)| (k.to_owned(), v)));
    let em = start(&rie, &bootstraps.join("operator"), &env);
    let lambda_endpoint = em.invoke_url.split("/2015-03-31").next().unwrap().to_owned();

    // The CLI's own AWS calls go through a proxy of their own, to be counted.
    let cli_proxy = CountProxy::start(&endpoint);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_refund-relay"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &cli_proxy.url)
            .env("AWS_ENDPOINT_URL_LAMBDA", &lambda_endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {stdout} {stderr}");
        stdout.into_owned()
    };

    let dry = cli(&["reprocess", "--function", "function", "--dry-run"]);
    assert!(dry.contains("would be accepted") && dry.contains("still held: unconfirmed"), "{dry}");
    assert!(dry.contains("1 would be stored, 1 still held"), "{dry}");
    let done = cli(&["reprocess", "--function", "function"]);
    assert!(done.contains("1 stored, 1 still held"), "the deployment's key confirmed one: {done}");
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, 2, "the unconfirmed one stays held");
    assert_eq!(api.asked.lock().unwrap().iter().filter(|n| *n == "FLN9").count(), 2, "asked with the key");

    // --stack: the stack's output names the function.
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let stack = moto::unique("relay");
    let template = r#"{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"OperatorFunctionName": {"Value": "function"}}}"#;
    cfn.create_stack().stack_name(&stack).template_body(template).send().await.expect("create stack");

    let dry = cli(&["redrive", "--stack", &stack, "--dry-run"]);
    let line = dry.lines().find(|l| l.starts_with(refund.event_id.as_str())).unwrap_or_else(|| panic!("{dry}"));
    assert!(line.contains("would tell internal, merchant, payor"), "the function's routing: {line}");
    assert!(moto::drain(&sdk, &topics.queues["payor"]).await.is_empty(), "a dry run tells nobody");
    let redrive = cli(&["redrive", "--stack", &stack]);
    assert_eq!(redrive.lines().count(), 2, "the refund and the confirmed payment: {redrive}");
    let payor = moto::drain(&sdk, &topics.queues["payor"]).await;
    assert!(payor.iter().any(|(b, _)| b["event_id"] == refund.event_id.as_str()), "{payor:?}");
    assert_eq!(cli(&["redrive", "--stack", &stack]), "", "nothing is untold any more");

    let before = function_proxy.counts();
    let replay = cli(&["replay", "rainforest", &refund.object_id, refund.event_id.as_str(), "--stack", &stack]);
    assert!(replay.contains("already told"), "{replay}");
    let replayed = function_proxy.since(&before);
    assert_eq!(replayed.get("Query"), Some(&1), "one Query finds the event: {replayed:?}");
    assert_eq!(replayed.get("Scan"), None, "{replayed:?}");

    // The CLI described the stack and invoked the function; everything else was the function's.
    let own: Vec<String> = cli_proxy.counts().into_keys().collect();
    assert_eq!(own, ["DescribeStacks"], "the CLI neither publishes nor reads the table: {own:?}");
    eprintln!("operator: INIT REPORT durationMs {:.1}; replay: {replayed:?}", init_ms(&em));
}

/// The reconcile function as the schedule runs it: its API key read from Secrets Manager at
/// init, a sweep from no checkpoint that stores the refund no webhook brought and knows the one
/// that came, its `Reconciled` metric, its checkpoint item; and a second run that finds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_reconcile_function_on_its_schedule() {
    use support::rainforest_api::FakeRainforest;

    let Some((rie, bootstraps, endpoint)) = setup() else { return };
    let sdk = moto::sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = moto::unique("reconcile");
    moto::create_table(&ddb, &table).await;
    let store = std::sync::Arc::new(aws_adapters::dynamodb::DynamoStore::new(
        ddb.clone(),
        &table,
        std::time::Duration::from_secs(3600),
    ));
    let receiver = common::Receiver::new(&support::config(&[]), store);
    let pushed = support::fixture("rainforest/refund.succeeded.json");
    let config = support::config(&[]);
    let headers = support::signed(&config, Provider::Rainforest, "application/json", &pushed, support::now(), "m");
    let req = common::WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &pushed };
    assert_eq!(receiver.receive(Provider::Rainforest, req).await.body["status"], "accepted");

    let api = FakeRainforest::start();
    // Older than the settling time the function leaves its webhook.
    let minutes_ago = common::timestamp::Timestamp::now().minus(std::time::Duration::from_secs(1200)).to_string();
    api.add_refund("rfd_2sPMefai6yWsyp4MSGUkAo32pp7", "SUCCEEDED", 1250, &minutes_ago);
    api.add_refund("rfd_never_pushed", "SUCCEEDED", 300, &minutes_ago);
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let [(_, key), version, url] = api.env();
    let arn = sm.create_secret().name(moto::unique("rf-key")).secret_string(key).send().await.unwrap().arn.unwrap();
    let mut env = base_env(&endpoint, &table);
    env.push(("RAINFOREST_API_KEY_ARN".into(), arn));
    env.extend([version, url].map(|(k, v)| (k.to_owned(), v)));
    let em = start(&rie, &bootstraps.join("reconcile"), &env);
    let schedule = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("events/reconcile-schedule.json"));

    let first = invoke(&em, &schedule);
    let tally = &first["reconciled"][0];
    assert_eq!(
        (tally["provider"].as_str(), tally["missed"].as_u64(), tally["known"].as_u64()),
        (Some("rainforest"), Some(1), Some(1)),
        "{first}"
    );
    let documents = emf_documents_when(&em, 4);
    let counted: Vec<(String, u64)> = documents
        .iter()
        .map(|d| (d["Outcome"].as_str().unwrap().to_owned(), d["Reconciled"].as_u64().unwrap()))
        .collect();
    assert_eq!(counted, [("missed".into(), 1), ("known".into(), 1), ("held".into(), 0), ("failed".into(), 0)]);
    assert_eq!(moto::item_count(&ddb, &table, "EVT#").await, 2);
    assert_eq!(moto::item_count(&ddb, &table, "RECON").await, 1, "the checkpoint");

    let second = invoke(&em, &schedule);
    assert_eq!(
        (second["reconciled"][0]["missed"].as_u64(), second["reconciled"][0]["known"].as_u64()),
        (Some(0), Some(2)),
        "{second}"
    );

    // `refund-relay reconcile --stack` sends the CLI's window as an operator request.
    let since = common::timestamp::Timestamp::now().minus(std::time::Duration::from_secs(3600));
    let command = common::operate::Command::Reconcile {
        provider: None,
        since,
        until: common::timestamp::Timestamp::now(),
        dry_run: true,
    };
    let request = serde_json::to_value(common::operate::Request { command, resume: None }).unwrap();
    let report: common::operate::Report = serde_json::from_value(invoke(&em, &request)).unwrap();
    let tallies: Vec<String> = report.reconciled.iter().map(ToString::to_string).collect();
    assert_eq!(tallies, ["reconciled rainforest: 2 listed, 0 missed, 2 known, 0 held, 0 failed"]);
    assert!(report.lines.iter().any(|l| l.starts_with("webforce: skipped")), "{:?}", report.lines);
    eprintln!("reconcile: INIT REPORT durationMs {:.1}", init_ms(&em));
}
