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
    Machine, base_env, emf_documents, fanout_env, init_ms, invoke, read, setup, start, start_on, webhook_env,
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
        let outcomes: Vec<(String, String)> = emf_documents(&em)
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
    let published: Vec<(String, u64)> = emf_documents(&em)
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
