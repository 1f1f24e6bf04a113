//! The operator's commands that write: `reprocess`, `redrive`, `replay`, `erase`, `reconcile`.
//! They run where the deployment's configuration is (its Foloosi key, currencies, merchant ids,
//! routing, platform name) and with a role the topics let publish: inside the operator function
//! (`reconcile`: the reconcile function) in AWS, in the CLI's own process for the local runner.
//! All drive this one type's code.
//!
//! A run is bounded: given a deadline it stops between two items and answers where to resume,
//! so a table of any size is worked through in as many invocations as it takes.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::api::{ProviderApi, Window};
use crate::config::Config;
use crate::erase::{self, PayorEmail};
use crate::event::{EventKind, Provider};
use crate::fanout::{Delivery, Fanout, Outcome};
use crate::held::HeldStatus;
use crate::notify::Notifier;
use crate::receive::{ReceiveError, Receiver, Reprocessed};
use crate::reconcile::{Reconciler, Resume, Tally};
use crate::store::{EventStore, Record, StoreError, held_position};
use crate::timestamp::Timestamp;

/// Held deliveries one listing page brings to `reprocess`.
const HELD_PAGE: usize = 100;
/// Objects told at a time within a redrive page, as the fan-out's stream batches are.
const REDRIVE_CONCURRENCY: usize = 16;

/// What an operator asks for: the operator function's event, and the CLI's subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Today's adapters over held deliveries: what now reads is stored once and its held item
    /// resolved.
    Reprocess {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<Provider>,
        #[serde(default)]
        dry_run: bool,
    },
    /// Tells every stored event that no audience was told of yet.
    Redrive {
        #[serde(default)]
        dry_run: bool,
    },
    /// Erases one person's contact data from every event and held delivery
    /// ([`crate::erase`]).
    Erase {
        payor_email: PayorEmail,
        #[serde(default)]
        dry_run: bool,
    },
    /// Asks each provider's API for the refunds created between `since` and `until`, and stores
    /// (and so tells, once) what no webhook brought ([`crate::reconcile`]).
    Reconcile {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<Provider>,
        since: Timestamp,
        until: Timestamp,
        #[serde(default)]
        dry_run: bool,
    },
    /// Tells one object's events again.
    Replay {
        provider: Provider,
        kind: EventKind,
        object_id: String,
        event_ids: Vec<String>,
        #[serde(default)]
        force: bool,
    },
}

/// One run: a command, and where an earlier run of it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    #[serde(flatten)]
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// What a run did: one line per item, as the CLI prints them, the counts its closing line sums,
/// and where to resume when its time ran out first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub lines: Vec<String>,
    #[serde(default)]
    pub stored: usize,
    #[serde(default)]
    pub still_held: usize,
    /// Events not told: failed, or held back behind an earlier failure of their object.
    #[serde(default)]
    pub failed: usize,
    /// Events and held deliveries erased (or, in a dry run, that would be).
    #[serde(default)]
    pub erased: usize,
    /// Per provider swept, what reconciliation came to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reconciled: Vec<Tally>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error("{0}")]
    NotFound(String),
}

/// The store, the receiver's adapters, the fan-out and the providers' APIs, on one deployment's
/// configuration.
pub struct Operator {
    store: Arc<dyn EventStore>,
    receiver: Receiver,
    fanout: Fanout,
    apis: Vec<Arc<dyn ProviderApi>>,
}

impl Operator {
    pub fn new(config: &Config, store: Arc<dyn EventStore>, notifier: Arc<dyn Notifier>) -> Self {
        Operator {
            receiver: Receiver::new(config, store.clone()),
            fanout: Fanout::new(store.clone(), notifier, config.routing.clone(), config.platform.clone()),
            store,
            apis: Vec::new(),
        }
    }

    /// The providers' APIs that `reconcile` asks ([`crate::api::configured`]).
    pub fn with_apis(mut self, apis: Vec<Arc<dyn ProviderApi>>) -> Self {
        self.apis = apis;
        self
    }

    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Runs `request` until it is done or `deadline` has passed, whichever is first.
    pub async fn run(&self, request: Request, deadline: Option<Instant>) -> Result<Report, OperateError> {
        let out_of_time = out_of_time(deadline);
        match request.command {
            Command::Reprocess { provider, dry_run } => {
                self.reprocess(provider, dry_run, request.resume, &out_of_time).await
            }
            Command::Redrive { dry_run } => self.redrive(dry_run, request.resume, &out_of_time).await,
            Command::Erase { payor_email, dry_run } => {
                self.erase(&payor_email, dry_run, request.resume, &out_of_time).await
            }
            Command::Reconcile { provider, since, until, dry_run } => {
                let window = Window { start: since, end: until };
                self.reconcile(provider, &window, dry_run, request.resume, &out_of_time).await
            }
            Command::Replay { provider, kind, object_id, event_ids, force } => {
                let mut report = Report::default();
                for id in event_ids {
                    let event =
                        self.store.object_event(provider, kind, &object_id, &id).await?.ok_or_else(|| {
                            OperateError::NotFound(format!("no event {id} of {provider} {object_id}"))
                        })?;
                    let delivery = self.fanout.replay(&event, force).await.map_err(|e| match e {
                        crate::fanout::FanoutError::Store(e) => OperateError::Store(e),
                        crate::fanout::FanoutError::Notify(e) => OperateError::NotFound(e.to_string()),
                    })?;
                    report.lines.push(format!("{id}: {}", said(&delivery)));
                }
                Ok(report)
            }
        }
    }

    /// Held deliveries page by page (listing reads no body), each read whole only to be run.
    async fn reprocess(
        &self,
        provider: Option<Provider>,
        dry_run: bool,
        mut after: Option<String>,
        out_of_time: &dyn Fn() -> bool,
    ) -> Result<Report, OperateError> {
        let mut report = Report::default();
        let mut seen = 0;
        loop {
            let page = self.store.held(provider, after.clone(), HELD_PAGE).await?;
            for entry in page.items {
                // Every run moves on by at least one item, so resuming always ends.
                if seen > 0 && out_of_time() {
                    report.resume = after;
                    return Ok(report);
                }
                seen += 1;
                after = Some(held_position(entry.received_at, &entry.held_id));
                if entry.status != HeldStatus::Held {
                    continue;
                }
                let Some(held) = self.store.held_one(&entry.held_id).await? else { continue };
                let verdict = match self.receiver.reprocess(&held, dry_run).await? {
                    Reprocessed::Accepted(e) => {
                        report.stored += 1;
                        let mut fields = serde_json::to_value(e.as_ref()).unwrap_or_default();
                        fields.as_object_mut().map(|m| m.remove("raw_payload"));
                        let accepted = if dry_run { "would be accepted" } else { "accepted" };
                        format!("{accepted} as event {} {fields}", e.event_id)
                    }
                    Reprocessed::Duplicate(e) => format!("duplicate of event {}", e.event_id),
                    Reprocessed::Ignored(reason) => {
                        format!("{}: {reason}", if dry_run { "would be ignored" } else { "ignored" })
                    }
                    Reprocessed::StillHeld(reason) => {
                        report.still_held += 1;
                        format!("still held: {reason}")
                    }
                };
                report.lines.push(format!("{} {} (held: {}) -> {verdict}", held.held_id, held.provider, held.reason));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(report),
            }
        }
    }

    /// Untold events page by page; a dry run says what each would publish, to whom, under this
    /// deployment's routing.
    async fn redrive(
        &self,
        dry_run: bool,
        mut after: Option<String>,
        out_of_time: &dyn Fn() -> bool,
    ) -> Result<Report, OperateError> {
        let mut report = Report::default();
        let mut pages = 0;
        loop {
            // Every run reads at least one page, so resuming always ends.
            if pages > 0 && out_of_time() {
                report.resume = after;
                return Ok(report);
            }
            pages += 1;
            let page = self.store.untold(after.clone()).await?;
            if dry_run {
                for event in &page.items {
                    let audiences: Vec<&str> =
                        self.fanout.would_tell(event).iter().map(|n| n.audience.as_str()).collect();
                    let whom = if audiences.is_empty() { "nobody".to_owned() } else { audiences.join(", ") };
                    report.lines.push(format!(
                        "{}: would tell {whom} ({} {} {} {})",
                        event.event_id,
                        event.provider,
                        event.kind.as_str(),
                        event.object_id,
                        event.status
                    ));
                }
            } else {
                let untold = page.items.into_iter().map(|e| (e.event_id.clone(), e)).collect();
                for (id, outcome) in self.fanout.deliver_in_object_order(untold, REDRIVE_CONCURRENCY).await {
                    let line = match outcome {
                        Outcome::Delivered(d) => said(&d),
                        Outcome::Failed(e) => {
                            report.failed += 1;
                            format!("failed: {e}")
                        }
                        Outcome::HeldBack => {
                            report.failed += 1;
                            "held back: an earlier event of its object failed".into()
                        }
                    };
                    report.lines.push(format!("{id}: {line}"));
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(report),
            }
        }
    }

    async fn reconcile(
        &self,
        only: Option<Provider>,
        window: &Window,
        dry_run: bool,
        resume: Option<String>,
        out_of_time: &dyn Fn() -> bool,
    ) -> Result<Report, OperateError> {
        let reconciler = Reconciler::new(self.receiver.clone(), self.store.clone());
        reconcile(&reconciler, &self.apis, only, window, dry_run, resume, out_of_time).await
    }

    /// Every stored record, page by page; what mentions the person is rewritten without them.
    /// Lines name records, never the person.
    async fn erase(
        &self,
        who: &PayorEmail,
        dry_run: bool,
        mut after: Option<String>,
        out_of_time: &dyn Fn() -> bool,
    ) -> Result<Report, OperateError> {
        let mut report = Report::default();
        let mut pages = 0;
        let done = if dry_run { "would be erased" } else { "erased" };
        loop {
            // Every run reads at least one page, so resuming always ends.
            if pages > 0 && out_of_time() {
                report.resume = after;
                return Ok(report);
            }
            pages += 1;
            let page = self.store.records(after.clone()).await?;
            for record in page.items {
                let line = match record {
                    Record::Event(event) => {
                        let Some(erased) = erase::erase_event(&event, who) else { continue };
                        if !dry_run {
                            self.store.rewrite_event(&erased).await?;
                        }
                        let (provider, kind, object) = (event.provider, event.kind.as_str(), &event.object_id);
                        format!("{} ({provider} {kind} {object}): contact data {done}", event.event_id)
                    }
                    Record::Held(held) => {
                        let Some(erased) = erase::erase_held(&held, who) else { continue };
                        if !dry_run {
                            self.store.rewrite_held(&erased).await?;
                        }
                        format!("{} ({} held delivery): contact data {done}", held.held_id, held.provider)
                    }
                };
                report.erased += 1;
                report.lines.push(line);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(report),
            }
        }
    }
}

/// The `reconcile` command, wherever it runs: each provider in turn (in [`Provider::ALL`]'s
/// order, from where a run stopped), its API's sweep of the window, or a line saying why there
/// is none.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile(
    reconciler: &Reconciler,
    apis: &[Arc<dyn ProviderApi>],
    only: Option<Provider>,
    window: &Window,
    dry_run: bool,
    resume: Option<String>,
    out_of_time: &dyn Fn() -> bool,
) -> Result<Report, OperateError> {
    let resume: Option<Resume> = match resume {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|_| OperateError::NotFound(format!("not a reconcile cursor: {text}")))?,
        ),
        None => None,
    };
    let mut report = Report::default();
    let start = resume.as_ref().map_or(0, |r| Provider::ALL.iter().position(|p| *p == r.provider).unwrap_or(0));
    for (i, provider) in Provider::ALL.into_iter().enumerate().skip(start) {
        if only.is_some_and(|p| p != provider) {
            continue;
        }
        let Some(api) = apis.iter().find(|a| a.provider() == provider) else {
            report.lines.push(format!("{provider}: skipped: {}", crate::api::why_not_swept(provider)));
            continue;
        };
        // A provider after the first starts only with time left.
        if i > start && out_of_time() {
            report.resume = Some(serde_json::to_string(&Resume { provider, cursor: None }).unwrap_or_default());
            return Ok(report);
        }
        let cursor = resume.as_ref().filter(|r| r.provider == provider).and_then(|r| r.cursor.clone());
        let swept = reconciler.sweep(api.as_ref(), window, cursor, dry_run, out_of_time).await?;
        report.lines.extend(swept.lines);
        report.reconciled.push(swept.tally);
        if let Some(stopped) = swept.resume {
            report.resume = Some(serde_json::to_string(&stopped).unwrap_or_default());
            return Ok(report);
        }
    }
    Ok(report)
}

/// Whether a run given `deadline` is past it (never, without one).
pub fn out_of_time(deadline: Option<Instant>) -> impl Fn() -> bool {
    move || deadline.is_some_and(|d| Instant::now() >= d)
}

/// What telling an event came to, in words.
pub fn said(delivery: &Delivery) -> String {
    match delivery {
        Delivery::Notified(n) => {
            let whom: Vec<&str> = n.iter().map(|n| n.audience.as_str()).collect();
            format!(
                "told {} audience(s){}",
                n.len(),
                if whom.is_empty() { String::new() } else { format!(": {}", whom.join(", ")) }
            )
        }
        Delivery::Stale => "stale: its object is already past this status; nobody told".into(),
        Delivery::AlreadyTold => "already told every audience; nothing published (--force to publish again)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::held::{HeldDelivery, HoldCode, HoldReason};
    use crate::notify::MemoryNotifier;
    use crate::store::MemoryStore;

    /// Out of time, a run stops after the item under way and says where to resume; resumed,
    /// the runs together see every held delivery once, each run moving on by one.
    #[tokio::test]
    async fn a_run_out_of_time_resumes_where_it_stopped() {
        let store = Arc::new(MemoryStore::new());
        for i in 0..3u8 {
            let at = crate::timestamp::Timestamp::now();
            let held = HeldDelivery::new(
                Provider::Memberful,
                at,
                &http::HeaderMap::new(),
                None,
                &[b'{', b'x', i],
                &crate::verify::Verified::default(),
                &HoldReason::bare(HoldCode::Malformed),
            );
            store.hold(&held).await.unwrap();
        }
        let config = Config::load(&[], crate::config::Secrets::Required, &|_| None).unwrap();
        let operator = Operator::new(&config, store, Arc::new(MemoryNotifier::new()));
        let (mut resume, mut runs, mut seen) = (None, 0, Vec::new());
        loop {
            let command = Command::Reprocess { provider: None, dry_run: true };
            let report = operator.run(Request { command, resume }, Some(Instant::now())).await.unwrap();
            runs += 1;
            seen.extend(report.lines);
            match report.resume {
                Some(next) => resume = Some(next),
                None => break,
            }
            assert!(runs < 10, "a run that makes no progress");
        }
        assert_eq!((runs, seen.len()), (3, 3), "{seen:?}");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3, "each once");
    }

    /// The operator function's event is this JSON: the CLI writes it, the function reads it.
    #[test]
    fn requests_and_reports_keep_their_wire_shape() {
        let request = Request {
            command: Command::Replay {
                provider: Provider::Rainforest,
                kind: EventKind::Refund,
                object_id: "rfd_1".into(),
                event_ids: vec!["evt_1".into()],
                force: false,
            },
            resume: None,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"command": "replay", "provider": "rainforest", "kind": "refund",
                "object_id": "rfd_1", "event_ids": ["evt_1"], "force": false})
        );
        assert_eq!(serde_json::from_value::<Request>(json).unwrap(), request);
        let redrive: Request = serde_json::from_str(r#"{"command":"redrive","resume":"x"}"#).unwrap();
        assert_eq!(redrive, Request { command: Command::Redrive { dry_run: false }, resume: Some("x".into()) });
        assert!(serde_json::from_str::<Request>(r#"{"command":"drop_table"}"#).is_err());
    }
}
