//! The local runner's notifier: one JSON line per notification in `notifications.jsonl`, and a
//! log line that names the audience and event (never the body: it may hold a payor's contact).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use common::notify::{Notification, Notifier, NotifyError};
use serde_json::json;

pub struct FileNotifier {
    /// Opened once, for appending. Each line goes out in one `write` (no user-space buffer), so
    /// a line written before the event is marked notified survives a crash of this process.
    file: Mutex<File>,
}

impl FileNotifier {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileNotifier { file: Mutex::new(file) })
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
        let written = self.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes());
        written.map_err(|e| NotifyError { audience: n.audience.as_str(), message: e.to_string() })?;
        tracing::info!(audience = n.audience.as_str(), event_id = %n.event_id, "notification written");
        Ok(())
    }
}
