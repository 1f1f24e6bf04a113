//! `refund-relay serve`: every provider route on one local HTTP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use common::config::Config;
use common::event::{EventKind, Provider};
use common::fanout::{Fanout, Outcome};
use common::metrics::Metrics;
use common::notify::Notifier;
use common::receive::{ReceiveError, Receiver, WebhookRequest, refusal};
use common::store::EventStore;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::notifier::FileNotifier;
use crate::store::{Pending, SqliteStore, Taken};

/// Events the outbox worker reads per pass, and how many objects it fans out at once.
const OUTBOX_BATCH: usize = 512;
const OUTBOX_CONCURRENCY: usize = 64;

/// Everything the server shares between requests.
pub struct Runner {
    receiver: Receiver,
    store: SqliteStore,
    fanout: Fanout,
    /// What `GET /metrics` reports: the webhooks counted here, the notifications by the fan-out.
    metrics: Arc<Metrics>,
    /// Wakes the outbox worker when an event is stored.
    wake: Notify,
    /// `Some(seq)` while the outbox worker is in step with the store: every event up to `seq`
    /// has been fanned out from the table, and every later one is handed over in memory
    /// ([`SqliteStore::take_fresh`]). `None` after a failure or an overflow, and at start: read
    /// the table.
    in_step: Mutex<Option<i64>>,
}

impl Runner {
    /// Opens (or creates) `data_dir` with its SQLite file and notifications log.
    pub fn open(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(data_dir)?;
        let notifier = FileNotifier::open(&data_dir.join("notifications.jsonl"))?;
        Self::with_notifier(config, data_dir, Arc::new(notifier))
    }

    /// [`open`](Self::open) with another notifier (tests use one that fails on demand), in a
    /// `data_dir` that exists.
    pub fn with_notifier(config: &Config, data_dir: &Path, notifier: Arc<dyn Notifier>) -> anyhow::Result<Arc<Self>> {
        let store = SqliteStore::open(&data_dir.join("events.sqlite3"))?;
        let metrics = Arc::new(Metrics::new());
        let fanout = Fanout::new(Arc::new(store.clone()), notifier, config.routing.clone(), config.platform.clone())
            .with_metrics(metrics.clone());
        let receiver = Receiver::new(config, Arc::new(store.clone()));
        Ok(Arc::new(Runner { receiver, store, fanout, metrics, wake: Notify::new(), in_step: Mutex::new(None) }))
    }

    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// Counts a delivery to a provider's route; a route that names no provider has no series.
    fn count(&self, route: &str, receipt: &common::Receipt) {
        if let Ok(provider) = route.parse::<Provider>() {
            self.metrics.webhook(provider, receipt.outcome);
        }
    }

    /// Fans out stored events until the outbox is empty. One object's events are told in the
    /// order they were stored; different objects go concurrently, so one slow notification does
    /// not hold up the rest. An event whose fan-out fails stays pending (and so do the later
    /// events of its object) and is tried again on the next pass: nothing stored goes unnotified.
    pub async fn drain_outbox(&self) -> Result<usize, String> {
        let mut done = 0;
        while let Some(batch) = self.next_batch().await? {
            let events = batch.into_iter().map(|Pending { seq, event }| (seq, event)).collect();
            let mut failure = None;
            let mut delivered = Vec::new();
            for (seq, outcome) in self.fanout.deliver_in_object_order(events, OUTBOX_CONCURRENCY).await {
                match outcome {
                    Outcome::Delivered(_) => delivered.push(seq),
                    Outcome::Failed(e) => failure = failure.or(Some(e.to_string())),
                    Outcome::HeldBack => {}
                }
            }
            done += delivered.len();
            let marked = match delivered.is_empty() {
                true => Ok(()),
                false => self.store.mark_notified(delivered).await.map_err(|e| e.to_string()),
            };
            if let Some(e) = failure.or(marked.err()) {
                // What failed is still in the table; read it from there next time.
                *self.in_step.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(e);
            }
        }
        Ok(done)
    }

    /// The next events to fan out, or `None` when there are none: handed over in memory while in
    /// step, else read from the table until it is empty (which puts the worker back in step).
    async fn next_batch(&self) -> Result<Option<Vec<Pending>>, String> {
        let in_step = *self.in_step.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(newest_read) = in_step {
            loop {
                match self.store.take_fresh(OUTBOX_BATCH) {
                    Taken::Events(events) if events.is_empty() => return Ok(None),
                    Taken::Events(events) => {
                        // Anything up to `newest_read` was read from the table (none expected).
                        let events: Vec<Pending> = events.into_iter().filter(|p| p.seq > newest_read).collect();
                        if !events.is_empty() {
                            return Ok(Some(events));
                        }
                    }
                    Taken::Overflowed => {
                        // Some events exist only in the table now: out of step until it is read
                        // empty again.
                        *self.in_step.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        break;
                    }
                }
            }
        }
        // From the table. Events committed from here on are kept in memory as well; the table
        // holds every one committed before, so dropping those is safe.
        self.store.forget_fresh();
        let (pending, newest) = self.store.pending(OUTBOX_BATCH).await.map_err(|e| e.to_string())?;
        if pending.is_empty() {
            // Everything up to `newest` is told; everything after it is in memory, unless some
            // overflowed (then the next take says so, and the table is read again).
            *self.in_step.lock().unwrap_or_else(|p| p.into_inner()) = Some(newest);
            return Ok(None);
        }
        Ok(Some(pending))
    }

    /// Tells the internal audience of every held delivery not yet told. Each is told once: it is
    /// marked told after its notification is written.
    pub async fn tell_held(&self) -> Result<usize, String> {
        let mut told = 0;
        loop {
            let held = self.store.untold_held(OUTBOX_BATCH).await.map_err(|e| e.to_string())?;
            if held.is_empty() {
                return Ok(told);
            }
            let mut done = Vec::with_capacity(held.len());
            let mut failure = None;
            for h in &held {
                match self.fanout.tell_held(&h.notice()).await {
                    Ok(()) => done.push((h.provider, h.held_id.clone())),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            told += done.len();
            self.store.mark_held_told(done).await.map_err(|e| e.to_string())?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    async fn outbox_worker(self: Arc<Self>) {
        loop {
            if let Err(e) = self.drain_outbox().await {
                tracing::error!(error = %e, "fan-out failed; will retry");
            }
            if let Err(e) = self.tell_held().await {
                tracing::error!(error = %e, "telling held deliveries failed; will retry");
            }
            // Woken by each new event; the timeout retries failures and catches anything missed.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }
}

pub fn app(runner: Arc<Runner>) -> Router {
    Router::new()
        .route("/webhooks/{provider}", any(webhook))
        .route("/refunds/{provider}/{id}", get(object))
        .route("/held", get(held_list))
        .route("/held/{held_id}", get(held_one))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .with_state(runner)
}

async fn webhook(State(runner): State<Arc<Runner>>, UrlPath(provider): UrlPath<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = runner.receiver.body_limit();
    // Read at most one byte past the limit: enough to know the body is too large.
    let bytes = match axum::body::to_bytes(body, limit + 1).await {
        Ok(b) => b,
        Err(_) => {
            let receipt = refusal(&provider, ReceiveError::PayloadTooLarge { limit });
            runner.count(&provider, &receipt);
            return http_response(receipt.into_response());
        }
    };
    let receipt = runner
        .receiver
        .receive_route(
            &provider,
            WebhookRequest { method: &parts.method, headers: &parts.headers, query: parts.uri.query(), body: &bytes },
        )
        .await;
    runner.count(&provider, &receipt);
    if receipt.stored.is_some() || receipt.held.is_some() {
        runner.wake.notify_one();
    }
    http_response(receipt.into_response())
}

/// `GET /metrics`: the counts CloudWatch gets from the Lambda functions, as Prometheus text.
async fn metrics(State(runner): State<Arc<Runner>>) -> Response {
    let content_type = [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (content_type, runner.metrics.counts().prometheus()).into_response()
}

fn http_response(res: http::Response<String>) -> Response {
    res.map(Body::from)
}

#[derive(Deserialize)]
struct ObjectQuery {
    kind: Option<String>,
}

/// `GET /refunds/{provider}/{id}[?kind=payment]`: the object's status and event history.
async fn object(
    State(runner): State<Arc<Runner>>,
    UrlPath((provider, id)): UrlPath<(String, String)>,
    Query(q): Query<ObjectQuery>,
) -> Response {
    let not_found =
        |what: String| (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "not_found", "message": what })));
    let Ok(provider) = provider.parse::<Provider>() else {
        return not_found(format!("unknown provider `{provider}`")).into_response();
    };
    let kind = match q.kind.as_deref() {
        None | Some("refund") => EventKind::Refund,
        Some("payment") => EventKind::Payment,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({ "error": "invalid_query", "field": "kind", "message": format!("unknown kind `{other}`") }),
                ),
            )
                .into_response();
        }
    };
    match runner.store.object(provider, kind, &id).await {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => not_found(format!("no {} {id} from {provider}", kind.as_str())).into_response(),
        Err(e) => store_unavailable(e),
    }
}

fn store_unavailable(e: common::store::StoreError) -> Response {
    tracing::error!(error = %e, "store read failed");
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": "store_unavailable" }))).into_response()
}

/// `GET /held`: every held delivery, newest first, without bodies.
async fn held_list(State(runner): State<Arc<Runner>>) -> Response {
    match runner.store.held(None).await {
        Ok(held) => axum::Json(held.iter().map(|h| h.summary()).collect::<Vec<_>>()).into_response(),
        Err(e) => store_unavailable(e),
    }
}

/// `GET /held/{held_id}`: one held delivery with its body.
async fn held_one(State(runner): State<Arc<Runner>>, UrlPath(held_id): UrlPath<String>) -> Response {
    match runner.store.held_one(&held_id).await {
        Ok(Some(h)) => axum::Json(h.to_json()).into_response(),
        Ok(None) => {
            (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "not_found", "message": "no such held delivery" })))
                .into_response()
        }
        Err(e) => store_unavailable(e),
    }
}

/// Serves until Ctrl-C. Prints the address it listens on (useful with port 0).
pub async fn serve(config: Config, addr: SocketAddr, data_dir: PathBuf) -> anyhow::Result<()> {
    let runner = Runner::open(&config, &data_dir)?;
    tokio::spawn(runner.clone().outbox_worker());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("refund-relay listening on http://{local} (data in {})", data_dir.display());
    for p in Provider::ALL {
        println!("  POST http://{local}/webhooks/{p}");
    }
    println!("  GET  http://{local}/held   (authenticated deliveries no adapter could read)");
    axum::serve(listener, app(runner))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use common::config::Secrets;
    use common::event::{RefundEvent, Status};
    use common::notify::{Audience, MemoryNotifier};
    use common::store::EventStore;

    use super::*;

    fn event(n: usize) -> RefundEvent {
        // Rainforest tells every audience of a processing refund.
        crate::store::test_event(&format!("rfd_{n}"), Status::Processing)
    }

    fn runner(dir: &Path, notifier: Arc<MemoryNotifier>) -> Arc<Runner> {
        let config = Config::load(&Provider::ALL, Secrets::DevFallback, &|_| None).unwrap();
        Runner::with_notifier(&config, dir, notifier).unwrap()
    }

    /// Every stored event is told to each of its audiences exactly once, whether the outbox
    /// reads it from the table (at start, and after a failure) or takes it in memory (in step).
    #[tokio::test]
    async fn the_outbox_tells_each_event_once_from_the_table_or_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Arc::new(MemoryNotifier::new());
        let runner = runner(dir.path(), notifier.clone());
        let put = |range: std::ops::Range<usize>| {
            let runner = runner.clone();
            async move {
                for n in range {
                    assert_eq!(runner.store.put_if_absent(&event(n)).await.unwrap(), common::store::Put::Stored);
                }
            }
        };
        // Stored before the worker ran: read from the table, which puts the worker in step.
        put(0..20).await;
        assert_eq!(runner.drain_outbox().await.unwrap(), 20);
        assert!(runner.in_step.lock().unwrap().is_some());
        // In step: handed over in memory.
        put(20..30).await;
        assert_eq!(runner.drain_outbox().await.unwrap(), 10);
        // A failure puts the worker out of step; the failed events are read from the table.
        notifier.set_failing(true);
        put(30..35).await;
        assert!(runner.drain_outbox().await.is_err());
        assert!(runner.in_step.lock().unwrap().is_none());
        notifier.set_failing(false);
        put(35..40).await;
        assert_eq!(runner.drain_outbox().await.unwrap(), 10);
        assert_eq!(runner.drain_outbox().await.unwrap(), 0, "nothing is told twice");

        let sent = notifier.sent();
        let pairs: HashSet<(String, Audience)> = sent.iter().map(|n| (n.event_id.clone(), n.audience)).collect();
        assert_eq!(pairs.len(), sent.len(), "an (event, audience) pair was told twice");
        assert_eq!(sent.len(), 40 * 3, "internal, merchant and payor for each of 40 events");
        assert!(runner.store.pending(100).await.unwrap().0.is_empty());
    }

    /// Events the in-memory queue had no room for are read from the table, however many passes
    /// that takes, before the worker trusts the queue again.
    #[tokio::test]
    async fn after_an_overflow_the_outbox_reads_the_table_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Arc::new(MemoryNotifier::new());
        let runner = runner(dir.path(), notifier.clone());
        assert_eq!(runner.drain_outbox().await.unwrap(), 0);
        assert!(runner.in_step.lock().unwrap().is_some());
        let n = OUTBOX_BATCH + 100;
        for i in 0..n {
            runner.store.put_if_absent(&event(i)).await.unwrap();
        }
        runner.store.overflow_fresh();
        assert_eq!(runner.drain_outbox().await.unwrap(), n, "more than one table pass");
        assert!(runner.store.pending(10).await.unwrap().0.is_empty());
        assert_eq!(notifier.sent().len(), n * 3);
    }
}
