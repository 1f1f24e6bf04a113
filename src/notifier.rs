//! The local runner's notifier: one JSON line per notification in `notifications.jsonl`, and a
//! log line that names the audience and event (never the body: it may hold a payor's contact).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use common::notify::{Audience, Notification, Notifier, NotifyError};
use serde::Serialize;

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

/// One line of `notifications.jsonl`, serialized straight from the notification (no copy).
#[derive(Serialize)]
struct Line<'a> {
    audience: Audience,
    event_id: &'a str,
    #[serde(serialize_with = "as_map")]
    attributes: &'a [(&'static str, String)],
    message: &'a serde_json::Value,
}

fn as_map<S: serde::Serializer>(pairs: &&[(&'static str, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

#[async_trait]
impl Notifier for FileNotifier {
    async fn publish(&self, n: &Notification) -> Result<(), NotifyError> {
        let fail = |message: String| NotifyError { audience: n.audience.as_str(), message };
        let line = Line { audience: n.audience, event_id: &n.event_id, attributes: &n.attributes, message: &n.body };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| fail(e.to_string()))?;
        bytes.push(b'\n');
        let written = self.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(&bytes);
        written.map_err(|e| fail(e.to_string()))?;
        // Debug: the fan-out logs one `notified` line per event, with the count, at info.
        tracing::debug!(audience = n.audience.as_str(), event_id = %n.event_id, "notification written");
        Ok(())
    }
}
