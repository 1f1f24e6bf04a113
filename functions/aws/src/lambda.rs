//! The Lambda entry points: a provider's webhook function and the stream fan-out. Each
//! `functions/<name>/src/main.rs` is one call into here, so the functions carry no logic.
//!
//! Those `main`s run tokio's `current_thread` runtime: Lambda hands an environment one
//! invocation at a time, and a single thread saves the wake-ups between worker threads on every
//! invocation (bench/README.md has the measured difference).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub use lambda_http;
pub use lambda_runtime;

pub use aws_lambda_events::dynamodb::Event as StreamEvent;
pub use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse as BatchResponse};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use lambda_http::{Body, Request, RequestExt, Response};
use lambda_runtime::LambdaEvent;
use time::OffsetDateTime;
use tracing_subscriber::filter::LevelFilter;

use crate::dynamodb::DynamoStore;
use crate::sns::{SnsNotifier, TopicArns};
use common::api::ProviderApi;
use common::config::{ALLOW_DEV_SECRETS, Config, ConfigError, Env, Secrets, process_env, secret_vars};
use common::event::Provider;
use common::fanout::{Fanout, Outcome};
use common::metrics;
use common::operate::{self, Operator, Report};
use common::receive::{Receipt, Receiver, WebhookRequest};
use common::reconcile::{Reconciler, Schedule};
use common::secrets::{self, Rotation, SecretSource, SourceError};
use common::store::layout::{AttributeValue, Image};
use common::timestamp::Timestamp;

pub type Error = lambda_runtime::Error;

/// How long stored events (and their idempotency) are kept: `RETENTION_DAYS`, default 90, well
/// past every provider's retry horizon (Memberful's is the longest, about five days).
pub const DEFAULT_RETENTION_DAYS: u64 = 90;

/// The most other crates may log, whatever level is asked for. At TRACE the Lambda runtime logs
/// every raw event (payors' e-mail addresses, signature headers) and the SDK every request it
/// signs (the session token); at DEBUG neither does (tests/it/logs.rs runs both levels).
pub const THIRD_PARTY_MAX_LEVEL: LevelFilter = LevelFilter::DEBUG;

/// Logs set up as `lambda_runtime::tracing::init_default_subscriber` sets them up, so that Lambda's
/// advanced logging controls apply: `AWS_LAMBDA_LOG_FORMAT=JSON` for JSON lines (text
/// otherwise), `AWS_LAMBDA_LOG_LEVEL` over `RUST_LOG` for the level (INFO when neither is set),
/// `RUST_LOG`'s per-target directives, no time (CloudWatch adds it), and the request id from the
/// runtime's per-invocation span. One thing that set-up cannot do is added: other crates than
/// ours log at most [`THIRD_PARTY_MAX_LEVEL`].
pub fn init_tracing() {
    let _ = tracing::subscriber::set_global_default(log_subscriber(&process_env, std::io::stdout));
}

/// [`init_tracing`]'s subscriber, writing to `writer`.
pub fn log_subscriber<W>(env: Env<'_>, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;

    let level = env("AWS_LAMBDA_LOG_LEVEL").or_else(|| env("RUST_LOG"));
    let level = level.and_then(|l| l.trim().parse::<LevelFilter>().ok()).unwrap_or(LevelFilter::INFO);
    let requested =
        EnvFilter::builder().with_default_directive(level.into()).parse_lossy(env("RUST_LOG").unwrap_or_default());
    let capped = Targets::new().with_default(THIRD_PARTY_MAX_LEVEL).with_target("common", LevelFilter::TRACE);
    // No colour codes: CloudWatch shows them as text.
    let format =
        tracing_subscriber::fmt::layer().with_ansi(false).with_target(false).without_time().with_writer(writer);
    let format = match env("AWS_LAMBDA_LOG_FORMAT") {
        Some(f) if f.eq_ignore_ascii_case("json") => format.json().boxed(),
        _ => format.boxed(),
    };
    Box::new(tracing_subscriber::registry().with(format).with(requested).with(capped))
}

fn required(env: Env, var: &'static str) -> Result<String, ConfigError> {
    env(var).ok_or(ConfigError::Invalid { var: var.into(), message: "must be set".into() })
}

/// `var` as a whole number above zero, or `None` when unset; `what` names it in the error.
fn above_zero(env: Env, var: &'static str, what: &str) -> Result<Option<u64>, ConfigError> {
    env(var)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Invalid { var: var.into(), message: format!("must be a whole number {what}> 0") })
        })
        .transpose()
}

pub fn retention(env: Env) -> Result<Duration, ConfigError> {
    let days = above_zero(env, "RETENTION_DAYS", "of days ")?.unwrap_or(DEFAULT_RETENTION_DAYS);
    Ok(Duration::from_secs(days * 24 * 3600))
}

/// New held deliveries a webhook function keeps per provider per minute, by default: a sender
/// flooding distinct unreadable bodies (its credential leaked, say) then writes at most 86,400
/// held items a day, and gets 503s past that (docs/operating.md, "The held cap").
pub const DEFAULT_HELD_CAP_PER_MINUTE: u32 = 60;

/// `HELD_CAP_PER_MINUTE`, or [`DEFAULT_HELD_CAP_PER_MINUTE`].
pub fn held_cap(env: Env) -> Result<u32, ConfigError> {
    let cap = above_zero(env, "HELD_CAP_PER_MINUTE", "")?.map_or(Ok(DEFAULT_HELD_CAP_PER_MINUTE), u32::try_from);
    cap.map_err(|_| ConfigError::Invalid { var: "HELD_CAP_PER_MINUTE".into(), message: "too large".into() })
}

/// Where the SDK runs, which decides what its set-up may skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkSetup {
    /// A Lambda function, where a cold start pays for everything built before the first answer:
    /// - the HTTPS client trusts Amazon Trust Services' roots, which every AWS service endpoint
    ///   chains to, plus the system's store only when `SSL_CERT_FILE` or `SSL_CERT_DIR` is set (a
    ///   local endpoint, or a proxy's CA). Parsing the system's ~150 certificates would take more
    ///   than half the instructions of a cold start.
    /// - credentials come from the environment, where Lambda puts the role's, without building
    ///   the rest of the default chain (web identity, SSO, profiles, IMDS); the whole chain when
    ///   the environment has none.
    /// - host names are looked up on the runtime's thread (`LookupOnThisThread`), not in a
    ///   thread started for the first connection.
    Lambda,
    /// An operator's machine (the CLI): the system's roots and the default credential chain.
    Operator,
}

/// Amazon Root CA 1 to 4 and Starfield Services Root CA G2 (the root AWS's chains cross-sign to
/// for older clients), as <https://www.amazontrust.com/repository/> publishes them.
pub const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("../certs/amazon-trust-services.pem");

/// The HTTPS client every SDK client shares: rustls on aws-lc, as the SDK's default client.
pub fn https_client(setup: SdkSetup) -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust = match setup {
        SdkSetup::Operator => TrustStore::default(),
        SdkSetup::Lambda => {
            let system = ["SSL_CERT_FILE", "SSL_CERT_DIR"].iter().any(|v| std::env::var_os(v).is_some());
            TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS).with_native_roots(system)
        }
    };
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
    let builder = match TlsContext::builder().with_trust_store(trust).build() {
        Ok(context) => builder.tls_context(context),
        // Building a context only validates the trust store, which is fixed above.
        Err(e) => {
            tracing::warn!(error = %e, "TLS context refused; using the SDK's default roots");
            builder
        }
    };
    match setup {
        SdkSetup::Lambda => builder.build_with_resolver(LookupOnThisThread),
        SdkSetup::Operator => builder.build_https(),
    }
}

/// DNS for a Lambda function: `getaddrinfo` on the runtime's own thread. The SDK's resolver hands
/// every lookup to tokio's blocking pool, which starts a thread for a cold start's first
/// connection, CPU that a 128 MB function's share pays for (bench/README.md, "DNS on the
/// runtime's thread"). An environment serves one invocation at a time, so a lookup holds up at
/// most that invocation's other requests (the fan-out's); one that hangs ends in the resolver's
/// own timeout or the function's, and what had no answer is delivered again.
#[derive(Debug, Clone, Copy)]
struct LookupOnThisThread;

impl ResolveDns for LookupOnThisThread {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        use std::net::ToSocketAddrs;
        let found = (name, 0).to_socket_addrs().map(|addrs| addrs.map(|a| a.ip()).collect());
        DnsFuture::ready(found.map_err(ResolveDnsError::new))
    }
}

/// The SDK's shared configuration. Loading it reads the environment only (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, credentials): no call to AWS happens before the first request.
pub async fn aws_config(setup: SdkSetup) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client(setup));
    if setup == SdkSetup::Lambda && std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new());
    }
    loader.load().await
}

/// A webhook function's handler state, built once per cold start.
pub async fn webhook_receiver(provider: Provider, env: Env<'_>) -> Result<Receiver, ConfigError> {
    webhook_receiver_with(provider, env, &aws_config(SdkSetup::Lambda).await).await
}

/// [`webhook_receiver`] on a given SDK configuration. Secrets named by `<VAR>_ARN` are read from
/// Secrets Manager before anything else; its client is built only when one is.
pub async fn webhook_receiver_with(
    provider: Provider,
    env: Env<'_>,
    sdk: &aws_config::SdkConfig,
) -> Result<Receiver, ConfigError> {
    let named = secrets::named(&secret_vars(provider), env)?;
    // Foloosi's API key is read from the store at start-up only: a new key takes effect at the
    // next cold start (until then deliveries are held as `confirmation_refused`, for reprocess).
    let api_key = match provider {
        Provider::Foloosi => secrets::named(&["FOLOOSI_SECRET_KEY"], env)?,
        _ => Vec::new(),
    };
    let (config, rotation) = if named.is_empty() && api_key.is_empty() {
        (Config::load(&[provider], Secrets::Production, env)?, None)
    } else {
        let ttl = secrets::ttl(env)?;
        let source: Arc<dyn SecretSource> = Arc::new(SecretsManager(aws_sdk_secretsmanager::Client::new(sdk)));
        let values = secrets::read_all(source.as_ref(), &named).await?;
        let api_key = secrets::read_all(source.as_ref(), &api_key).await?;
        let from_store = |var: &str| values.get(var).or_else(|| api_key.get(var)).cloned();
        let config = Config::load(&[provider], Secrets::Production, &|var| from_store(var).or_else(|| env(var)))?;
        // What the verifier is rebuilt from besides the secrets read again: the variables that
        // are not named in the store, read once here.
        let fixed: Vec<(String, String)> = ["REPLAY_TOLERANCE_SECONDS", ALLOW_DEV_SECRETS]
            .into_iter()
            .chain(secret_vars(provider))
            .filter(|var| !values.contains_key(var))
            .filter_map(|var| env(var).map(|v| (var.to_owned(), v)))
            .collect();
        let build: secrets::BuildVerifier = Box::new(move |read: Env<'_>| {
            let env = |var: &str| read(var).or_else(|| fixed.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()));
            let mut config = Config::load(&[provider], Secrets::Production, &env)?;
            Ok(config.verifiers.remove(0).1)
        });
        let rotation = (!named.is_empty()).then(|| Rotation::new(source, named, values, build, ttl));
        (config, rotation)
    };
    let table = required(env, "EVENTS_TABLE")?;
    let store =
        DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table, retention(env)?).with_held_cap(held_cap(env)?);
    let receiver = Receiver::new(&config, Arc::new(store));
    Ok(match rotation {
        Some(rotation) => receiver.with_rotation(provider, rotation),
        None => receiver,
    })
}

/// Secrets Manager as a [`SecretSource`]: a secret's `SecretString`, its current version.
struct SecretsManager(aws_sdk_secretsmanager::Client);

#[async_trait::async_trait]
impl SecretSource for SecretsManager {
    async fn read(&self, id: &str) -> Result<String, SourceError> {
        let out = self
            .0
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| SourceError(aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string()))?;
        out.secret_string
            .ok_or_else(|| SourceError("the secret has no SecretString (binary secrets are not read)".into()))
    }
}

/// `main` of a provider's function: refuses to start without its configuration.
pub async fn run_webhook(provider: Provider) -> Result<(), Error> {
    init_tracing();
    let receiver = webhook_receiver(provider, &process_env).await.inspect_err(|e| {
        tracing::error!(error = %e, "configuration error");
    })?;
    let receiver = &receiver;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        let receipt = receive_webhook(receiver, provider, req).await;
        write_metrics(&[metrics::webhook_emf(provider, receipt.outcome, now_ms())]);
        Ok::<_, Infallible>(receipt.into_response().map(Body::Text))
    }))
    .await
}

/// One API Gateway request through the pipeline. Never fails: every outcome is an HTTP answer.
pub async fn handle_webhook(
    receiver: &Receiver,
    provider: Provider,
    req: Request,
) -> Result<Response<Body>, Infallible> {
    Ok(receive_webhook(receiver, provider, req).await.into_response().map(Body::Text))
}

/// [`handle_webhook`]'s receipt, before it becomes the HTTP answer.
pub async fn receive_webhook(receiver: &Receiver, provider: Provider, req: Request) -> Receipt {
    let query = req.uri().query().map(str::to_owned).or_else(|| {
        let q = req.query_string_parameters();
        (!q.is_empty()).then(|| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in q.iter() {
                s.append_pair(k, v);
            }
            s.finish()
        })
    });
    receiver
        .receive(
            provider,
            WebhookRequest {
                method: req.method(),
                headers: req.headers(),
                query: query.as_deref(),
                body: req.body().as_ref(),
            },
        )
        .await
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// EMF documents go to stdout, which Lambda sends to CloudWatch Logs, and not through `tracing`:
/// a log level must never switch metrics off. A failed write loses a metric, never the answer.
fn write_metrics(documents: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for document in documents {
        let _ = writeln!(out, "{document}");
    }
    let _ = out.flush();
}

/// A reader's error without what it quotes: serde names the value it could not read
/// (`invalid type: string "dana@example.com"`), and a value may be personal data.
pub fn unquoted(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut quote = None;
    for c in error.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
            }
        }
    }
    out
}

fn item_failure(id: String) -> DynamoDbBatchItemFailure {
    let mut failure = DynamoDbBatchItemFailure::default();
    failure.item_identifier = Some(id);
    failure
}

/// The fan-out function's state, built once per cold start.
pub async fn fanout_from_env(env: Env<'_>) -> Result<Fanout, ConfigError> {
    let config = Config::load(&[], Secrets::Required, env)?;
    let sdk = aws_config(SdkSetup::Lambda).await;
    let (store, notifier) = store_and_topics(env, &sdk)?;
    Ok(Fanout::new(Arc::new(store), Arc::new(notifier), config.routing, config.platform))
}

/// The table and the three topics, as the fan-out and the operator function both tell through.
fn store_and_topics(env: Env, sdk: &aws_config::SdkConfig) -> Result<(DynamoStore, SnsNotifier), ConfigError> {
    let topics = TopicArns {
        internal: required(env, "INTERNAL_TOPIC_ARN")?,
        merchant: required(env, "MERCHANT_TOPIC_ARN")?,
        payor: required(env, "PAYOR_TOPIC_ARN")?,
    };
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), required(env, "EVENTS_TABLE")?, retention(env)?);
    Ok((store, SnsNotifier::new(aws_sdk_sns::Client::new(sdk), topics)))
}

/// The values of those of `vars` whose `<VAR>_ARN` names a secret, read from Secrets Manager once,
/// at start-up (its client is built only when one is named).
async fn read_at_start(
    vars: &[&'static str],
    env: Env<'_>,
    sdk: &aws_config::SdkConfig,
) -> Result<std::collections::HashMap<&'static str, String>, ConfigError> {
    let named = secrets::named(vars, env)?;
    if named.is_empty() {
        return Ok(Default::default());
    }
    secrets::read_all(&SecretsManager(aws_sdk_secretsmanager::Client::new(sdk)), &named).await
}

/// The operator function's state, built once per cold start: the fan-out's configuration (topics,
/// routing, platform) and the webhook functions' settings (currencies, merchant ids, Foloosi's
/// API and key, from Secrets Manager when `FOLOOSI_SECRET_KEY_ARN` names it).
pub async fn operator_from_env(env: Env<'_>) -> Result<Operator, ConfigError> {
    let sdk = aws_config(SdkSetup::Lambda).await;
    let from_store = read_at_start(&["FOLOOSI_SECRET_KEY"], env, &sdk).await?;
    let env = |var: &str| from_store.get(var).cloned().or_else(|| env(var));
    let config = Config::load(&[], Secrets::Required, &env)?;
    let (store, notifier) = store_and_topics(&env, &sdk)?;
    Ok(Operator::new(&config, Arc::new(store), Arc::new(notifier)))
}

/// How long before the function's deadline a run stops taking new items, so that the item under
/// way and the answer fit in the time left.
pub const OPERATOR_MARGIN: Duration = Duration::from_secs(10);

/// When a bounded run (an operator command, a sweep) stops taking new work: [`OPERATOR_MARGIN`]
/// before the invocation's deadline.
fn stop_at(context: &lambda_runtime::Context) -> std::time::Instant {
    let deadline = context.deadline().checked_sub(OPERATOR_MARGIN);
    let left = deadline.and_then(|d| d.duration_since(std::time::SystemTime::now()).ok()).unwrap_or_default();
    std::time::Instant::now() + left
}

pub async fn run_operator() -> Result<(), Error> {
    init_tracing();
    let operator = operator_from_env(&process_env).await.inspect_err(|e| {
        tracing::error!(error = %e, "configuration error");
    })?;
    let operator = &operator;
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: LambdaEvent<operate::Request>| async move {
        handle_operator(operator, ev.payload, Some(stop_at(&ev.context))).await
    }))
    .await
}

/// One operator request; an error is the function's error, which the CLI prints.
pub async fn handle_operator(
    operator: &Operator,
    request: operate::Request,
    deadline: Option<std::time::Instant>,
) -> Result<Report, Error> {
    tracing::info!(command = ?request.command, resume = ?request.resume, "operator command");
    let report = operator.run(request, deadline).await?;
    if let Some(resume) = &report.resume {
        tracing::info!(%resume, "time ran out: the caller resumes here");
    }
    Ok(report)
}

/// The reconcile function's state, built once per cold start: the store, the receiver's
/// settings (currencies, merchant ids) and the providers' APIs the environment configures (keys
/// from Secrets Manager when `<VAR>_ARN` names them).
pub struct Sweeper {
    reconciler: Reconciler,
    apis: Vec<Arc<dyn ProviderApi>>,
    schedule: Schedule,
}

pub async fn sweeper_from_env(env: Env<'_>) -> Result<Sweeper, ConfigError> {
    let sdk = aws_config(SdkSetup::Lambda).await;
    let from_store = read_at_start(&["RAINFOREST_API_KEY"], env, &sdk).await?;
    let env = |var: &str| from_store.get(var).cloned().or_else(|| env(var));
    let config = Config::load(&[], Secrets::Required, &env)?;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        required(&env, "EVENTS_TABLE")?,
        retention(&env)?,
    ));
    let http = crate::http::HyperClient::new().map_err(|e| ConfigError::Invalid {
        var: "RAINFOREST_API_KEY".into(),
        message: format!("no TLS roots for the providers' APIs: {e}"),
    })?;
    let apis = common::api::configured(&env, Arc::new(http))?;
    for provider in Provider::ALL.into_iter().filter(|p| !apis.iter().any(|a| a.provider() == *p)) {
        tracing::info!(%provider, why = common::api::why_not_swept(provider), "not swept");
    }
    let seconds =
        |var, default: Duration| above_zero(&env, var, "seconds").map(|v| v.map_or(default, Duration::from_secs));
    let schedule = Schedule {
        overlap: seconds("RECONCILE_OVERLAP_SECONDS", Schedule::DEFAULT.overlap)?,
        first_window: seconds("RECONCILE_FIRST_WINDOW_SECONDS", Schedule::DEFAULT.first_window)?,
        settle: seconds("RECONCILE_SETTLE_SECONDS", Schedule::DEFAULT.settle)?,
    };
    Ok(Sweeper { reconciler: Reconciler::new(Receiver::new(&config, store.clone()), store), apis, schedule })
}

pub async fn run_reconcile() -> Result<(), Error> {
    init_tracing();
    let sweeper = sweeper_from_env(&process_env).await.inspect_err(|e| {
        tracing::error!(error = %e, "configuration error");
    })?;
    let sweeper = &sweeper;
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: LambdaEvent<serde_json::Value>| async move {
        let deadline = Some(stop_at(&ev.context));
        match serde_json::from_value::<operate::Request>(ev.payload) {
            Ok(request) => handle_reconcile_request(sweeper, request, deadline).await,
            // EventBridge's scheduled event, or anything else: the scheduled sweep.
            Err(_) => handle_reconcile(sweeper, deadline).await,
        }
    }))
    .await
}

/// `refund-relay reconcile --stack`: the CLI's window, on this function's APIs and keys, bounded
/// and resumable like every operator command. The checkpoints are not moved.
pub async fn handle_reconcile_request(
    sweeper: &Sweeper,
    request: operate::Request,
    deadline: Option<std::time::Instant>,
) -> Result<serde_json::Value, Error> {
    let operate::Command::Reconcile { provider, since, until, dry_run } = request.command else {
        return Err("the reconcile function runs only `reconcile`; the operator function runs the rest".into());
    };
    tracing::info!(?provider, %since, %until, dry_run, resume = ?request.resume, "reconcile command");
    let out_of_time = operate::out_of_time(deadline);
    let window = common::api::Window { start: since, end: until };
    let report = operate::reconcile(
        &sweeper.reconciler,
        &sweeper.apis,
        provider,
        &window,
        dry_run,
        request.resume,
        &out_of_time,
    )
    .await?;
    Ok(serde_json::to_value(report)?)
}

/// One scheduled run: each configured provider's sweep from its checkpoint, its `Reconciled`
/// metric, a log line per object it stored or held, and the tallies as the answer. A provider's
/// API failing is counted (and alarmed on), not an error: the next run sweeps again.
pub async fn handle_reconcile(
    sweeper: &Sweeper,
    deadline: Option<std::time::Instant>,
) -> Result<serde_json::Value, Error> {
    let out_of_time = operate::out_of_time(deadline);
    let mut tallies = Vec::new();
    for api in &sweeper.apis {
        let swept =
            sweeper.reconciler.scheduled(api.as_ref(), Timestamp::now(), &sweeper.schedule, &out_of_time).await?;
        write_metrics(&metrics::reconciled_emf(&swept.tally, now_ms()));
        for line in &swept.lines {
            tracing::info!(provider = %swept.tally.provider, %line, "reconciled");
        }
        tracing::info!(tally = %swept.tally, "swept");
        tallies.push(swept.tally);
    }
    Ok(serde_json::json!({ "reconciled": tallies }))
}

pub async fn run_fanout() -> Result<(), Error> {
    init_tracing();
    let fanout = fanout_from_env(&process_env).await.inspect_err(|e| {
        tracing::error!(error = %e, "configuration error");
    })?;
    let fanout = &fanout;
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: LambdaEvent<StreamEvent>| async move {
        let response = handle_stream(fanout, ev.payload).await;
        write_metrics(&fanout.metrics().take().fanout_emf(now_ms()));
        Ok::<_, Infallible>(response)
    }))
    .await
}

/// How many objects one stream batch delivers at a time.
const FANOUT_CONCURRENCY: usize = 16;

/// Delivers every newly inserted event in a stream batch, one object's events in stream order
/// and different objects concurrently ([`Fanout::deliver_in_object_order`]). A record that fails
/// is reported by its sequence number, with every later record of the same object (so a later
/// status cannot overtake it); the others are done. Never panics, never fails the whole batch.
pub async fn handle_stream(fanout: &Fanout, batch: StreamEvent) -> BatchResponse {
    let mut events = Vec::with_capacity(batch.records.len());
    let mut held = Vec::new();
    for record in batch.records {
        // Aggregate updates and TTL removals come down the same stream; only new events fan out.
        if record.event_name != "INSERT" {
            continue;
        }
        let id = record.change.sequence_number.clone().unwrap_or_else(|| record.event_id.clone());
        // A record we can never read would block its shard forever if retried: it is logged with
        // what finds its item in the table again (which keeps it, for `refund-relay replay`),
        // counted, and skipped.
        let skip = |error: &str| {
            fanout.metrics().skipped_record();
            let key = |name: &str| match record.change.keys.get(name) {
                Some(AttributeValue::S(s)) => s.as_str(),
                _ => "",
            };
            let (pk, sk) = (key("pk"), key("sk"));
            let error = unquoted(error);
            tracing::error!(sequence_number = %id, pk, sk, %error, "unreadable record in stream; skipped");
        };
        match common::store::layout::read_image(record.change.new_image) {
            Ok(Image::Held(notice)) => held.push((id, notice)),
            Ok(Image::Event(event)) => events.push(((id, event.event_id.clone()), *event)),
            Ok(Image::Other) => {}
            Err(e) => skip(&e),
        }
    }

    let mut response = BatchResponse::default();
    // Held items are independent of every object: each is told on its own.
    for (id, notice) in held {
        if let Err(e) = fanout.tell_held(&notice).await {
            tracing::error!(held_id = %notice.held_id, error = %e, "telling a held delivery failed; record will be retried");
            response.batch_item_failures.push(item_failure(id));
        }
    }
    for ((id, event_id), outcome) in fanout.deliver_in_object_order(events, FANOUT_CONCURRENCY).await {
        match outcome {
            Outcome::Delivered(_) => continue,
            Outcome::Failed(e) => {
                tracing::error!(event_id = %event_id, error = %e, "fan-out failed; record will be retried")
            }
            Outcome::HeldBack => {
                tracing::warn!(event_id = %event_id, "an earlier event of this object failed; record will be retried")
            }
        }
        response.batch_item_failures.push(item_failure(id));
    }
    response
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn a_logged_error_keeps_its_words_and_drops_what_it_quotes() {
        let e = r#"event: `event` attribute: invalid type: string "dana@example.com", expected u64 at line 1 column 9"#;
        assert_eq!(
            super::unquoted(e),
            r#"event: `…` attribute: invalid type: string "…", expected u64 at line 1 column 9"#
        );
    }

    use super::AMAZON_TRUST_SERVICES_ROOTS;

    /// The SHA-256 fingerprints https://www.amazontrust.com/repository/ publishes: Amazon Root CA
    /// 1 to 4, then Starfield Services Root CA G2.
    const PUBLISHED: [&str; 5] = [
        "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
        "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
        "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
        "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
        "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
    ];

    #[test]
    fn the_functions_trust_exactly_amazon_trust_services_published_roots() {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES_ROOTS.as_bytes())
                .collect::<Result<_, _>>()
                .expect("the bundle is PEM");
        let fingerprints: Vec<String> = certs.iter().map(|c| hex::encode(Sha256::digest(c.as_ref()))).collect();
        assert_eq!(fingerprints, PUBLISHED);
        // As the SDK's TLS context adds them: each must parse as a trust anchor, or the first
        // request would panic.
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).expect("a trust anchor");
        }
        assert_eq!(roots.len(), PUBLISHED.len());
    }
}
