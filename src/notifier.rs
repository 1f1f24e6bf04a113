//! The local runner's notifier: one JSON line per notification in `notifications.jsonl`, and a
//! log line that names the audience and event (never the body: it may hold a payor's contact).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use common::notify::{Notification, Notifier, NotifyError};
use serde_json::json;

pub struct FileNotifier {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileNotifier {
    pub fn new(path: PathBuf) -> Self {
        FileNotifier { path, lock: Mutex::new(()) }
    }
}

#[async_trait]
impl Notifier for FileNotifier {
    async fn publish(&self, n: &Notification) -> Result<(), NotifyError> {
        let attributes: serde_json::Map<String, serde_json::Value> =
            n.attributes.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        let mut line =
            json!({ "audience": n.audience, "event_id": n.event_id, "attributes": attributes, "message": n.body })
                .to_string();
        line.push('\n');
        let fail = |e: std::io::Error| NotifyError { audience: n.audience.as_str(), message: e.to_string() };
        {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(fail)?;
            file.write_all(line.as_bytes()).map_err(fail)?;
        }
        tracing::info!(audience = n.audience.as_str(), event_id = %n.event_id, "notification written");
        Ok(())
    }
}
