//! `refund-relay serve`: every provider route on one local HTTP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use common::config::Config;
use common::event::{EventKind, Provider};
use common::fanout::Fanout;
use common::metrics::Metrics;
use common::notify::Notifier;
use common::receive::{ReceiveError, Receiver, WebhookRequest, refusal};
use common::store::EventStore;
use serde::Deserialize;
use serde_json::json;

use crate::notifier::FileNotifier;
use crate::outbox::Outbox;
use crate::store::SqliteStore;

/// Everything the server shares between requests.
pub struct Runner {
    receiver: Receiver,
    store: SqliteStore,
    outbox: Arc<Outbox>,
    /// What `GET /metrics` reports: the webhooks counted here, the notifications by the fan-out.
    metrics: Arc<Metrics>,
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
        let outbox = Arc::new(Outbox::new(store.clone(), fanout));
        Ok(Arc::new(Runner { receiver, store, outbox, metrics }))
    }

    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Counts a delivery to a provider's route; a route that names no provider has no series.
    fn count(&self, route: &str, receipt: &common::Receipt) {
        if let Ok(provider) = route.parse::<Provider>() {
            self.metrics.webhook(provider, receipt.outcome);
        }
    }
}

/// Who may talk to the local runner: requests for its own address (or a name it was told to
/// answer, a tunnel's), never from another site's page.
#[derive(Debug, Clone)]
pub struct Access {
    /// The address it is bound to.
    pub bound: SocketAddr,
    /// More names in `Host` to answer (`--allow-host`), such as a tunnel's.
    pub hosts: Vec<String>,
    /// Whether `GET /held/{id}` shows bodies (`--show-bodies`): they hold payors' data.
    pub show_bodies: bool,
}

impl Access {
    pub fn local(bound: SocketAddr) -> Self {
        Access { bound, hosts: Vec::new(), show_bodies: false }
    }

    /// Whether `host` (a `Host` header) names this runner. A page on another site that a DNS
    /// rebinding points at 127.0.0.1 still sends its own name, and is refused.
    fn answers(&self, host: &str) -> bool {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') && port.parse::<u16>().is_ok() => (name, Some(port)),
            _ => (host, None),
        };
        if port.is_some_and(|p| p != self.bound.port().to_string()) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let loopback = self.bound.ip().is_loopback() || self.bound.ip().is_unspecified();
        name == self.bound.ip().to_string()
            || (loopback && ["localhost", "127.0.0.1", "::1"].contains(&name))
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Refuses what a browser on another site could send: a `Host` that is not ours (421) and a
/// cross-origin request (403), before anything is read or stored.
async fn guard(State(access): State<Arc<Access>>, req: Request, next: axum::middleware::Next) -> Response {
    match refusal_for(&access, req.headers()) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

fn refusal_for(access: &Access, headers: &http::HeaderMap) -> Option<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refuse = |status: StatusCode, error: &str, message: &str| {
        Some((status, axum::Json(json!({ "error": error, "message": message }))).into_response())
    };
    let Some(host) = header("host") else {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "unknown_host", "no Host header");
    };
    if !access.answers(host) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "unknown_host", "this runner does not answer that name");
    }
    let cross_site = header("sec-fetch-site").is_some_and(|s| s == "cross-site" || s == "same-site");
    let foreign_origin = header("origin").is_some_and(|origin| {
        let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        origin_host.is_none_or(|h| !h.eq_ignore_ascii_case(host))
    });
    if cross_site || foreign_origin {
        return refuse(StatusCode::FORBIDDEN, "cross_origin", "requests from another site's pages are refused");
    }
    None
}

pub fn app(runner: Arc<Runner>, access: Access) -> Router {
    let show_bodies = access.show_bodies;
    Router::new()
        .route("/webhooks/{provider}", any(webhook))
        .route("/refunds/{provider}/{id}", get(object))
        .route("/held", get(held_list))
        .route(
            "/held/{held_id}",
            get(move |state: State<Arc<Runner>>, id: UrlPath<String>| held_one(state, id, show_bodies)),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .with_state(runner)
        .layer(axum::middleware::from_fn_with_state(Arc::new(access), guard))
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
        runner.outbox.wake();
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

/// `GET /held?limit=&after=`'s query.
#[derive(serde::Deserialize)]
struct HeldQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// Most held deliveries one `GET /held` lists.
const HELD_LIST_MAX: usize = 1000;

/// `GET /held`: held deliveries, newest first, without bodies, a page at a time: the
/// `x-next-cursor` header, when present, is the next page's `after`.
async fn held_list(State(runner): State<Arc<Runner>>, Query(page): Query<HeldQuery>) -> Response {
    let limit = page.limit.unwrap_or(HELD_LIST_MAX).clamp(1, HELD_LIST_MAX);
    match runner.store.held(None, page.after, limit).await {
        Ok(held) => {
            let mut response = axum::Json(held.items).into_response();
            if let Some(next) = held.next.and_then(|n| http::HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert("x-next-cursor", next);
            }
            response
        }
        Err(e) => store_unavailable(e),
    }
}

/// `GET /held/{held_id}`: one held delivery, with its body only when the runner was started with
/// `--show-bodies` (a body holds a payor's contact data).
async fn held_one(State(runner): State<Arc<Runner>>, UrlPath(held_id): UrlPath<String>, show_bodies: bool) -> Response {
    match runner.store.held_one(&held_id).await {
        Ok(Some(h)) => {
            let mut json = h.to_json();
            if !show_bodies && let Some(fields) = json.as_object_mut() {
                fields.remove("body");
                fields.remove("body_base64");
                fields.insert("body_hidden".into(), json!("start `refund-relay serve --show-bodies` to see it"));
            }
            axum::Json(json).into_response()
        }
        Ok(None) => {
            (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "not_found", "message": "no such held delivery" })))
                .into_response()
        }
        Err(e) => store_unavailable(e),
    }
}

/// Serves until Ctrl-C. Prints the address it listens on (useful with port 0).
pub async fn serve(
    config: Config,
    addr: SocketAddr,
    data_dir: PathBuf,
    hosts: Vec<String>,
    show_bodies: bool,
) -> anyhow::Result<()> {
    let runner = Runner::open(&config, &data_dir)?;
    tokio::spawn(runner.outbox.clone().run());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("refund-relay listening on http://{local} (data in {})", data_dir.display());
    for p in Provider::ALL {
        println!("  POST http://{local}/webhooks/{p}");
    }
    println!("  GET  http://{local}/held   (authenticated deliveries no adapter could read)");
    let access = Access { bound: local, hosts, show_bodies };
    axum::serve(listener, app(runner, access))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
