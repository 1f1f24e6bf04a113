//! The `refund-relay serve` binary as a test drives it: started on a free loopback port with a
//! data directory, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_refund-relay");

pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(data_dir: &Path) -> Server {
    start_with(data_dir, &[])
}

/// [`start`] with these environment variables set too.
pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
    start_with_args(data_dir, &[], env)
}

/// [`start_with`] with these arguments of `serve` too.
pub fn start_with_args(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        // Every audience of every provider, as the tests count them (the default keeps token-only
        // events from payors: pipeline.rs tests that).
        .env("TOKEN_PAYORS", super::TOKEN_PAYORS)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("refund-relay listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

pub fn get(url: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut res = agent.get(url).call().unwrap();
    (res.status().as_u16(), serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap())
}

/// `url`'s status, content type and body as text.
pub fn get_text(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut res = agent.get(url).call().unwrap();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (res.status().as_u16(), content_type, res.body_mut().read_to_string().unwrap())
}

pub fn notifications(data_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(data_dir.join("notifications.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits (bounded by `secs`) until the outbox has written at least `n` notifications, then until
/// the count stops moving.
pub fn wait_for(data_dir: &Path, n: usize, secs: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = usize::MAX;
    loop {
        let got = notifications(data_dir);
        if (got.len() >= n && got.len() == last) || Instant::now() > deadline {
            return got;
        }
        last = got.len();
        std::thread::sleep(Duration::from_millis(200));
    }
}
