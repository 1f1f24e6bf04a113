//! AWS's Runtime Interface Emulator (shipped in the `aws-sam-cli` package) running a function's
//! `bootstrap` as Lambda runs it, on loopback only. `scripts/test` names the emulator and the
//! bootstraps (`RIE_BIN`, `BOOTSTRAP_DIR`); without them a test skips, unless `REQUIRE_MOTO` is set.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_adapters::sns::TopicArns;
use common::config::dev_secret;
use common::event::Provider;
use serde_json::Value;

use super::aws as moto;

pub struct Emulator {
    child: Child,
    pub invoke_url: String,
    /// Every line the emulator and the function wrote, stdout and stderr.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Where a wrapper script lives while the emulator runs it.
    _scratch: tempfile::TempDir,
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

/// How the emulator and the function run: natively, or both arm64 binaries under qemu-user.
#[derive(Debug, Clone, Copy)]
pub enum Machine<'a> {
    Native,
    /// `qemu` (qemu-aarch64-static) runs the emulator, and the bootstrap through a wrapper script
    /// (qemu-user does not follow `execve`), with `sysroot` the arm64 glibc the bootstrap links.
    Arm64 {
        qemu: &'a Path,
        sysroot: &'a Path,
    },
}

/// Starts the emulator on loopback only (both its invoke API and its runtime API) with
/// `bootstrap` as the function.
pub fn start(rie: &Path, bootstrap: &Path, env: &[(String, String)]) -> Emulator {
    start_on(Machine::Native, rie, bootstrap, env)
}

pub fn start_on(machine: Machine<'_>, rie: &Path, bootstrap: &Path, env: &[(String, String)]) -> Emulator {
    let (invoke, runtime) = (free_port(), free_port());
    let scratch = tempfile::tempdir().unwrap();
    let (mut command, bootstrap, patience) = match machine {
        Machine::Native => (Command::new(rie), bootstrap.to_owned(), Duration::from_secs(10)),
        Machine::Arm64 { qemu, sysroot } => {
            let wrapper = scratch.path().join("bootstrap");
            let script =
                format!("#!/bin/sh\nexec '{}' -L '{}' '{}'\n", qemu.display(), sysroot.display(), bootstrap.display());
            std::fs::write(&wrapper, script).unwrap();
            std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            let mut command = Command::new(qemu);
            command.arg(rie);
            (command, wrapper, Duration::from_secs(60))
        }
    };
    let mut child = command
        .arg("--runtime-interface-emulator-address")
        .arg(format!("127.0.0.1:{invoke}"))
        .arg("--runtime-api-address")
        .arg(format!("127.0.0.1:{runtime}"))
        .arg(&bootstrap)
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
    let deadline = Instant::now() + patience;
    while std::net::TcpStream::connect(("127.0.0.1", invoke)).is_err() {
        assert!(Instant::now() < deadline, "the emulator did not listen: {:?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    Emulator {
        child,
        invoke_url: format!("http://127.0.0.1:{invoke}/2015-03-31/functions/function/invocations"),
        log,
        _scratch: scratch,
    }
}

pub fn invoke(em: &Emulator, event: &Value) -> Value {
    let (status, body) = refund_relay::sender::post(&em.invoke_url, &[], event.to_string().as_bytes()).unwrap();
    assert_eq!(status, 200, "the emulator answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// The init time the emulator measured (`INIT REPORT(durationMs: ...)`), waiting for the line.
pub fn init_ms(em: &Emulator) -> f64 {
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

pub fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn setup() -> Option<(PathBuf, PathBuf, String)> {
    let endpoint = moto::endpoint()?;
    match (std::env::var("RIE_BIN"), std::env::var("BOOTSTRAP_DIR")) {
        (Ok(rie), Ok(dir)) => Some((rie.into(), dir.into(), endpoint)),
        _ => {
            assert!(std::env::var("REQUIRE_MOTO").is_err(), "REQUIRE_MOTO is set but RIE_BIN/BOOTSTRAP_DIR are not");
            None
        }
    }
}

pub fn base_env(endpoint: &str, table: &str) -> Vec<(String, String)> {
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

/// [`base_env`] with `provider`'s development secrets, which sign `events/`.
pub fn webhook_env(provider: Provider, endpoint: &str, table: &str) -> Vec<(String, String)> {
    let mut env = base_env(endpoint, table);
    for var in common::config::secret_vars(provider) {
        if let Some(v) = dev_secret(var) {
            env.push((var.to_owned(), v.to_owned()));
        }
    }
    env
}

/// [`base_env`] for the fan-out, publishing to `topics`. The committed stream event holds
/// Rainforest's `succeeded`, which Rainforest's own table tells nobody: the general routing
/// tells every audience.
pub fn fanout_env(endpoint: &str, table: &str, topics: &TopicArns) -> Vec<(String, String)> {
    let mut env = base_env(endpoint, table);
    env.push(("INTERNAL_TOPIC_ARN".into(), topics.internal.clone()));
    env.push(("MERCHANT_TOPIC_ARN".into(), topics.merchant.clone()));
    env.push(("PAYOR_TOPIC_ARN".into(), topics.payor.clone()));
    env.push(("ROUTING_RAINFOREST".into(), super::GENERAL_ROUTING.into()));
    env.push(("TOKEN_PAYORS".into(), super::TOKEN_PAYORS.into()));
    env
}

/// The EMF documents once there are `n` of them (the function writes its line after it answered,
/// so the last one may still be on its way), or what there is after two seconds.
pub fn emf_documents_when(em: &Emulator, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let documents = emf_documents(em);
        if documents.len() >= n || Instant::now() > deadline {
            return documents;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The CloudWatch EMF documents the function wrote so far: its JSON lines with an `_aws` member.
pub fn emf_documents(em: &Emulator) -> Vec<Value> {
    em.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RefundRelay")
        .collect()
}
