//! `refund-relay serve`: every provider route on one local HTTP server.

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
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::notifier::FileNotifier;
use crate::store::SqliteStore;

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
        let notifier = FileNotifier::new(data_dir.join("notifications.jsonl"));
        let fanout =
            Fanout::new(Arc::new(store.clone()), Arc::new(notifier), config.routing.clone(), config.platform.clone());
        let receiver = Receiver::new(config, Arc::new(store.clone()));
        Ok(Arc::new(Runner { receiver, store, fanout, wake: Notify::new() }))
    }

    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// Fans out stored events in order until the outbox is empty. An event whose fan-out fails
    /// stays pending and is tried again on the next pass, so nothing stored goes unnotified.
    pub async fn drain_outbox(&self) -> Result<usize, String> {
        let mut done = 0;
        loop {
            let pending = self.store.pending(100).await.map_err(|e| e.to_string())?;
            if pending.is_empty() {
                return Ok(done);
            }
            for event in pending {
                self.fanout.deliver(&event).await.map_err(|e| e.to_string())?;
                self.store.mark_notified(&event.event_id).await.map_err(|e| e.to_string())?;
                done += 1;
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
