//! What happened to deliveries and notifications, counted once and written two ways: CloudWatch's
//! Embedded Metric Format lines from the Lambda functions (CloudWatch turns a JSON log line with
//! an `_aws` member into metrics, with no API call on the request path), and Prometheus text at
//! the local runner's `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::event::Provider;
use crate::notify::Audience;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "RefundRelay";

/// What a delivery came to, one per answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookOutcome {
    /// Stored as a new event.
    Accepted,
    /// The event was already stored with the same content.
    Duplicate,
    /// Authenticated, read, and of no interest (a purchase, say).
    Ignored,
    /// Authenticated and kept raw: unreadable, too large, or in conflict with what is stored.
    Held,
    /// The signature or token did not verify.
    Unauthorized,
    /// Refused before authentication for its shape: unknown route, method, size.
    Rejected,
    /// Not kept: the store (or the API that confirms a delivery) could not answer, so the answer
    /// was 503 and the provider retries.
    StoreUnavailable,
    /// Authenticated and unreadable, past its provider's cap on new held items per minute: 503,
    /// so the provider retries later.
    HeldOverCap,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 8] = [
        WebhookOutcome::Accepted,
        WebhookOutcome::Duplicate,
        WebhookOutcome::Ignored,
        WebhookOutcome::Held,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::Rejected,
        WebhookOutcome::StoreUnavailable,
        WebhookOutcome::HeldOverCap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Held => "held",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::Rejected => "rejected",
            WebhookOutcome::StoreUnavailable => "store_unavailable",
            WebhookOutcome::HeldOverCap => "held_over_cap",
        }
    }
}

/// Whether one notification reached its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Published {
    Yes,
    Failed,
}

impl Published {
    pub const ALL: [Published; 2] = [Published::Yes, Published::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Published::Yes => "published",
            Published::Failed => "failed",
        }
    }
}

fn provider_index(p: Provider) -> usize {
    Provider::ALL.iter().position(|q| *q == p).unwrap_or_default()
}

fn audience_index(a: Audience) -> usize {
    Audience::ALL.iter().position(|b| *b == a).unwrap_or_default()
}

/// Counters shared by every request and worker of one process. Relaxed atomics: each count is
/// independent, and a reader only needs each one to be exact, not a cross-counter snapshot.
#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: [[AtomicU64; WebhookOutcome::ALL.len()]; Provider::ALL.len()],
    notifications: [[AtomicU64; Published::ALL.len()]; Audience::ALL.len()],
    stale_events: AtomicU64,
    skipped_records: AtomicU64,
}

/// The counts at one moment, or over one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub webhooks: [[u64; WebhookOutcome::ALL.len()]; Provider::ALL.len()],
    pub notifications: [[u64; Published::ALL.len()]; Audience::ALL.len()],
    pub stale_events: u64,
    pub skipped_records: u64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn webhook(&self, provider: Provider, outcome: WebhookOutcome) {
        self.webhooks[provider_index(provider)][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn notification(&self, audience: Audience, result: Published) {
        self.notifications[audience_index(audience)][result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An event stored but not told: its object had already moved past it.
    pub fn stale_event(&self) {
        self.stale_events.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream record that could not be read, logged and skipped (its item stays in the table).
    pub fn skipped_record(&self) {
        self.skipped_records.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.read(|c| c.load(Ordering::Relaxed))
    }

    /// The counts since the last `take`, and zero from here on: one Lambda invocation's.
    pub fn take(&self) -> Counts {
        self.read(|c| c.swap(0, Ordering::Relaxed))
    }

    fn read(&self, read: impl Fn(&AtomicU64) -> u64) -> Counts {
        Counts {
            webhooks: self.webhooks.each_ref().map(|row| row.each_ref().map(&read)),
            notifications: self.notifications.each_ref().map(|row| row.each_ref().map(&read)),
            stale_events: read(&self.stale_events),
            skipped_records: read(&self.skipped_records),
        }
    }
}

/// The EMF document of one webhook invocation: `Webhooks` = 1 by provider and outcome, and by
/// outcome alone (what the held alarm watches across providers).
pub fn webhook_emf(provider: Provider, outcome: WebhookOutcome, timestamp_ms: i64) -> String {
    counted(timestamp_ms, "Webhooks", 1, [("Provider", provider.as_str()), ("Outcome", outcome.as_str())]).to_string()
}

/// The EMF documents of one provider's sweep: `Reconciled` by provider and outcome (`missed`,
/// `known`, `held`, `failed`), and by outcome alone (what the alarms watch), zeros included so
/// the graphs show a sweep that found nothing.
pub fn reconciled_emf(tally: &crate::reconcile::Tally, timestamp_ms: i64) -> Vec<String> {
    let provider = tally.provider.as_str();
    [("missed", tally.missed), ("known", tally.known), ("held", tally.held), ("failed", tally.failed)]
        .into_iter()
        .map(|(outcome, n)| {
            counted(timestamp_ms, "Reconciled", n as u64, [("Provider", provider), ("Outcome", outcome)]).to_string()
        })
        .collect()
}

/// One EMF document: `metric` = `count`, by both dimensions of `by` and by the second alone.
fn counted(timestamp_ms: i64, metric: &str, count: u64, by: [(&str, &str); 2]) -> Value {
    let [(first, _), (second, _)] = by;
    let mut document = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[first, second], [second]],
                "Metrics": [{ "Name": metric, "Unit": "Count" }],
            }],
        },
    });
    document[metric] = json!(count);
    for (dimension, value) in by {
        document[dimension] = json!(value);
    }
    document
}

impl Counts {
    /// The fan-out's EMF documents for one invocation. A document gives each dimension one value,
    /// so notifications take one document per audience and result that happened (at most six); the
    /// first document also carries `StaleEvents` and `SkippedRecords`, which have no dimensions.
    /// Nothing happened, nothing is written.
    pub fn fanout_emf(&self, timestamp_ms: i64) -> Vec<String> {
        let mut documents = Vec::new();
        for (a, audience) in Audience::ALL.iter().enumerate() {
            for (r, result) in Published::ALL.iter().enumerate() {
                let count = self.notifications[a][r];
                if count == 0 {
                    continue;
                }
                let by = [("Audience", audience.as_str()), ("Result", result.as_str())];
                documents.push(counted(timestamp_ms, "Notifications", count, by));
            }
        }
        if self.stale_events > 0 || self.skipped_records > 0 {
            if documents.is_empty() {
                documents.push(json!({ "_aws": { "Timestamp": timestamp_ms, "CloudWatchMetrics": [] } }));
            }
            let first = &mut documents[0];
            first["StaleEvents"] = json!(self.stale_events);
            first["SkippedRecords"] = json!(self.skipped_records);
            if let Some(directives) = first["_aws"]["CloudWatchMetrics"].as_array_mut() {
                directives.push(json!({
                    "Namespace": NAMESPACE,
                    "Dimensions": [[]],
                    "Metrics": [{ "Name": "StaleEvents", "Unit": "Count" }, { "Name": "SkippedRecords", "Unit": "Count" }],
                }));
            }
        }
        documents.iter().map(Value::to_string).collect()
    }

    /// The counts as Prometheus text (exposition format 0.0.4), every series present from zero.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP refund_relay_webhooks_total Webhook deliveries by provider and outcome.\n");
        out.push_str("# TYPE refund_relay_webhooks_total counter\n");
        for (p, provider) in Provider::ALL.iter().enumerate() {
            for (o, outcome) in WebhookOutcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "refund_relay_webhooks_total{{provider=\"{}\",outcome=\"{}\"}} {}",
                    provider.as_str(),
                    outcome.as_str(),
                    self.webhooks[p][o]
                );
            }
        }
        out.push_str("# HELP refund_relay_notifications_total Notifications by audience and result.\n");
        out.push_str("# TYPE refund_relay_notifications_total counter\n");
        for (a, audience) in Audience::ALL.iter().enumerate() {
            for (r, result) in Published::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "refund_relay_notifications_total{{audience=\"{}\",result=\"{}\"}} {}",
                    audience.as_str(),
                    result.as_str(),
                    self.notifications[a][r]
                );
            }
        }
        for (name, help, value) in [
            (
                "refund_relay_stale_events_total",
                "Stored events not told: their object had moved on.",
                self.stale_events,
            ),
            (
                "refund_relay_skipped_records_total",
                "Outbox records that could not be read and were skipped.",
                self.skipped_records,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).expect("an EMF document is one JSON object")
    }

    /// Every metric a directive names must be a member of the document, and every dimension
    /// too, or CloudWatch drops the document.
    fn assert_valid_emf(doc: &Value) {
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(directive["Namespace"], NAMESPACE);
            for set in directive["Dimensions"].as_array().unwrap() {
                for dimension in set.as_array().unwrap() {
                    assert!(doc[dimension.as_str().unwrap()].is_string(), "dimension {dimension} missing: {doc}");
                }
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                assert!(doc[metric["Name"].as_str().unwrap()].is_u64(), "metric {metric} missing: {doc}");
            }
        }
        assert!(doc["_aws"]["Timestamp"].is_i64());
    }

    #[test]
    fn a_webhook_is_one_document_by_provider_and_outcome() {
        let doc = parse(&webhook_emf(Provider::Foloosi, WebhookOutcome::StoreUnavailable, 1_700_000_000_000));
        assert_valid_emf(&doc);
        assert_eq!((doc["Provider"].as_str(), doc["Outcome"].as_str()), (Some("foloosi"), Some("store_unavailable")));
        assert_eq!(doc["Webhooks"], 1);
    }

    #[test]
    fn the_fanout_writes_one_document_per_audience_and_result_and_none_when_idle() {
        let metrics = Metrics::new();
        assert!(metrics.take().fanout_emf(0).is_empty());
        for _ in 0..3 {
            metrics.notification(Audience::Payor, Published::Yes);
        }
        metrics.notification(Audience::Internal, Published::Yes);
        metrics.notification(Audience::Payor, Published::Failed);
        metrics.stale_event();
        metrics.skipped_record();
        metrics.skipped_record();
        let docs: Vec<Value> = metrics.take().fanout_emf(1).iter().map(|l| parse(l)).collect();
        docs.iter().for_each(assert_valid_emf);
        let cells: Vec<(&str, &str, u64)> = docs
            .iter()
            .map(|d| {
                (d["Audience"].as_str().unwrap(), d["Result"].as_str().unwrap(), d["Notifications"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(cells, [("internal", "published", 1), ("payor", "published", 3), ("payor", "failed", 1)]);
        assert_eq!((docs[0]["StaleEvents"].as_u64(), docs[0]["SkippedRecords"].as_u64()), (Some(1), Some(2)));
        assert!(docs[1..].iter().all(|d| d.get("StaleEvents").is_none()));
        // Taken: the next invocation starts from zero.
        assert_eq!(metrics.counts(), Counts::default());

        metrics.skipped_record();
        let docs: Vec<Value> = metrics.take().fanout_emf(2).iter().map(|l| parse(l)).collect();
        assert_eq!(docs.len(), 1);
        assert_valid_emf(&docs[0]);
        assert_eq!(docs[0]["SkippedRecords"], 1);
    }

    #[test]
    fn prometheus_text_has_every_series_from_zero() {
        let metrics = Metrics::new();
        metrics.webhook(Provider::Rainforest, WebhookOutcome::Accepted);
        metrics.webhook(Provider::Rainforest, WebhookOutcome::Accepted);
        metrics.notification(Audience::Merchant, Published::Failed);
        let text = metrics.counts().prometheus();
        assert!(text.contains("refund_relay_webhooks_total{provider=\"rainforest\",outcome=\"accepted\"} 2\n"));
        assert!(text.contains("refund_relay_webhooks_total{provider=\"memberful\",outcome=\"held\"} 0\n"));
        assert!(text.contains("refund_relay_notifications_total{audience=\"merchant\",result=\"failed\"} 1\n"));
        assert!(text.contains("refund_relay_stale_events_total 0\n"));
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(series, Provider::ALL.len() * WebhookOutcome::ALL.len() + Audience::ALL.len() * 2 + 2);
    }
}
