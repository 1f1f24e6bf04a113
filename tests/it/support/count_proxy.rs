//! `bench/count_proxy.py` in front of moto: every AWS request a process sends, counted by
//! operation (`DynamoDB_20120810.Scan`, `Publish`), so a test can say what a command costs and
//! what it never calls, even when the caller is another process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct CountProxy {
    child: Child,
    pub url: String,
}

impl Drop for CountProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CountProxy {
    /// A proxy on a free 127.0.0.1 port forwarding to `upstream`.
    pub fn start(upstream: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/count_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(upstream)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bench/count_proxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("count proxy said: {line}"));
        CountProxy { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Requests so far, by operation without its service prefix (`Scan`, `Publish`).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let (_, state) = super::runner::get(&format!("{}/__counts", self.url));
        state["counts"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.rsplit('.').next().unwrap().to_owned(), v.as_u64().unwrap()))
            .collect()
    }

    /// Requests since `before`, by operation.
    pub fn since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.counts()
            .into_iter()
            .map(|(k, n)| {
                let was = before.get(&k).copied().unwrap_or(0);
                (k, n - was)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
