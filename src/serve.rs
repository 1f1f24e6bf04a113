//! `refund-relay serve`: every provider route on one local HTTP server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use common::config::Config;
use common::event::{EventKind, Provider};
use common::fanout::Fanout;
use common::receive::{ReceiveError, Receiver, WebhookRequest, refusal};
use common::store::EventStore;
use futures::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::notifier::FileNotifier;
use crate::store::{Pending, SqliteStore};

/// Events the outbox worker reads per pass, and how many objects it fans out at once.
const OUTBOX_BATCH: usize = 512;
const OUTBOX_CONCURRENCY: usize = 64;

/// Groups outbox entries by object, keeping the stored order within each object.
fn by_object(pending: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut index: HashMap<(Provider, EventKind, String), usize> = HashMap::new();
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    for p in pending {
        let key = (p.event.provider, p.event.kind, p.event.object_id.clone());
        match index.get(&key) {
            Some(&i) => groups[i].push(p),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![p]);
            }
        }
    }
    groups
}

/// Everything the server shares between requests.
pub struct Runner {
    receiver: Receiver,
    store: SqliteStore,
    fanout: Fanout,
    /// Wakes the outbox worker when an event is stored.
    wake: Notify,
}

impl Runner {
    /// Opens (or creates) `data_dir` with its SQLite file and notifications log.
    pub fn open(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(data_dir)?;
        let store = SqliteStore::open(&data_dir.join("events.sqlite3"))?;
        let notifier = FileNotifier::open(&data_dir.join("notifications.jsonl"))?;
        let fanout =
            Fanout::new(Arc::new(store.clone()), Arc::new(notifier), config.routing.clone(), config.platform.clone());
        let receiver = Receiver::new(config, Arc::new(store.clone()));
        Ok(Arc::new(Runner { receiver, store, fanout, wake: Notify::new() }))
    }

    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// Fans out stored events until the outbox is empty. One object's events are told in the
    /// order they were stored; different objects go concurrently, so one slow notification does
    /// not hold up the rest. An event whose fan-out fails stays pending (and so do the later
    /// events of its object) and is tried again on the next pass: nothing stored goes unnotified.
    pub async fn drain_outbox(&self) -> Result<usize, String> {
        let mut done = 0;
        loop {
            let pending = self.store.pending(OUTBOX_BATCH).await.map_err(|e| e.to_string())?;
            if pending.is_empty() {
                return Ok(done);
            }
            let outcomes: Vec<(Vec<i64>, Option<String>)> = stream::iter(by_object(pending))
                .map(|group| async move {
                    let mut delivered = Vec::with_capacity(group.len());
                    for Pending { seq, event } in group {
                        if let Err(e) = self.fanout.deliver(&event).await {
                            return (delivered, Some(e.to_string()));
                        }
                        delivered.push(seq);
                    }
                    (delivered, None)
                })
                .buffer_unordered(OUTBOX_CONCURRENCY)
                .collect()
                .await;
            let mut failure = None;
            let mut delivered = Vec::new();
            for (ids, error) in outcomes {
                delivered.extend(ids);
                failure = failure.or(error);
            }
            done += delivered.len();
            if !delivered.is_empty() {
                self.store.mark_notified(delivered).await.map_err(|e| e.to_string())?;
            }
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
            // Woken by each new event; the timeout retries failures and catches anything missed.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }
}

pub fn app(runner: Arc<Runner>) -> Router {
    Router::new()
        .route("/webhooks/{provider}", any(webhook))
        .route("/refunds/{provider}/{id}", get(object))
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
            return http_response(refusal(&provider, ReceiveError::PayloadTooLarge { limit }).into_response());
        }
    };
    let receipt = runner
        .receiver
        .receive_route(
            &provider,
            WebhookRequest { method: &parts.method, headers: &parts.headers, query: parts.uri.query(), body: &bytes },
        )
        .await;
    if receipt.stored.is_some() {
        runner.wake.notify_one();
    }
    http_response(receipt.into_response())
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
        Err(e) => {
            tracing::error!(error = %e, "store read failed");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": "store_unavailable" }))).into_response()
        }
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
    axum::serve(listener, app(runner))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
