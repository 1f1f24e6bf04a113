//! The `refund-relay` command line: run the local receiver, and sign or send fixtures as a
//! provider would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use aws_adapters::dynamodb::DynamoStore;
use clap::{Parser, Subcommand};
use common::config::{Config, Secrets, dev_secret, dev_secrets, process_env};
use common::erase::PayorEmail;
use common::event::{EventKind, Provider};
use common::operate::{self, Operator, Report, Request};
use common::store::EventStore;
use common::timestamp::Timestamp;

use crate::sender::{fresh_delivery_id, now, post, signed_headers};

#[derive(Parser)]
#[command(
    name = "refund-relay",
    version,
    about = "Receive payment-refund webhooks, store them once, notify the right people"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve every provider's webhook route on a local address, with an embedded store.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        #[arg(long, default_value = ".relay")]
        data_dir: PathBuf,
        /// Another name to answer in `Host` (a tunnel's, say); the bound address always is.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Show held bodies at `GET /held/{id}` (they hold payors' contact data).
        #[arg(long)]
        show_bodies: bool,
    },
    /// Print the headers a provider would send with the body in FILE.
    Sign {
        provider: Provider,
        file: PathBuf,
        /// Unix time to sign at (Rainforest); now by default.
        #[arg(long)]
        timestamp: Option<i64>,
        /// Delivery id to sign (Rainforest); a fresh one by default.
        #[arg(long)]
        delivery_id: Option<String>,
        /// One JSON object of the headers, for scripts, instead of `Name: value` lines.
        #[arg(long)]
        json: bool,
    },
    /// What scripts need to know of this build, as JSON: the development secrets (which sign
    /// `events/`) and the names of the events table's indexes.
    Describe,
    /// Sign the body in FILE as the provider would and POST it to the receiver.
    Send {
        provider: Provider,
        file: PathBuf,
        /// The receiver's base URL; the provider's route is appended.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
    },
    /// Stored refunds and payments.
    Refunds {
        #[command(subcommand)]
        command: RefundsCommand,
    },
    /// Held deliveries: authenticated, but not readable by the adapters that received them.
    Held {
        #[command(subcommand)]
        command: HeldCommand,
    },
    /// Run today's adapters over every held delivery: what now reads is stored (once, through
    /// the same conditional write) and its held item marked resolved.
    Reprocess {
        #[command(flatten)]
        target: OperatorArgs,
        /// Only this provider's held deliveries.
        #[arg(long)]
        provider: Option<Provider>,
        /// Print what each would become; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Tell one object's stored events again, through the fan-out. An event already told in
    /// full publishes nothing and says so, unless --force. Every notification names its
    /// provider, object and event.
    Replay {
        provider: Provider,
        object_id: String,
        #[arg(required = true)]
        event_ids: Vec<String>,
        /// `payment` for the payment outcomes Foloosi and WebforceHQ send.
        #[arg(long, default_value = "refund", value_parser = parse_kind)]
        kind: EventKind,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: OperatorArgs,
    },
    /// After a fan-out outage: tell every stored event that no audience was told of yet.
    Redrive {
        #[command(flatten)]
        target: OperatorArgs,
        /// List what would be told, to whom, under the deployment's routing; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Ask the providers' APIs for the refunds created in a window and store (and tell, once)
    /// those no webhook brought; a known refund writes nothing. Rainforest's with
    /// RAINFOREST_API_KEY and RAINFOREST_API_VERSION (RAINFOREST_API_URL to point elsewhere).
    Reconcile {
        /// Only this provider.
        #[arg(long)]
        provider: Option<Provider>,
        /// The window's start (RFC 3339); 24 hours before --until by default.
        #[arg(long)]
        since: Option<Timestamp>,
        /// The window's end (RFC 3339); now by default.
        #[arg(long)]
        until: Option<Timestamp>,
        /// Print what each refund would become (missed and stored, known, held); store nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: OperatorArgs,
    },
    /// Erase one person's contact data (a data-protection request): their address and phone
    /// from every event whose payor has the address or whose payload mentions it, and every
    /// contact value from those payloads and from held deliveries that mention it. Refunds,
    /// amounts and references stay. Backups keep what they held: see docs/operating.md.
    Erase {
        /// The address the person paid with (compared without case).
        #[arg(long, value_parser = parse_email)]
        payor_email: PayorEmail,
        /// Print what would be erased; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: OperatorArgs,
    },
    /// Write API Gateway and DynamoDB stream events for local Lambda invocation, signed with the
    /// development secrets.
    Events {
        #[arg(long, default_value = "events")]
        out: PathBuf,
        #[arg(long, default_value = "tests/fixtures")]
        fixtures: PathBuf,
        /// Unix time to sign at; now by default.
        #[arg(long)]
        timestamp: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum RefundsCommand {
    /// One refund (or payment): its status and its events, with amounts.
    Get {
        provider: Provider,
        id: String,
        /// `payment` for the payment outcomes Foloosi and WebforceHQ send.
        #[arg(long, default_value = "refund")]
        kind: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// A merchant's events, oldest first, from the merchant index.
    List {
        #[arg(long)]
        merchant: String,
        /// Only events received at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<Timestamp>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum HeldCommand {
    /// Held deliveries, newest first, a page at a time (no bodies).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        provider: Option<Provider>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where the page begins: the `next:` line of the page before.
        #[arg(long)]
        after: Option<String>,
    },
}

/// Where a command that writes and tells runs: inside a deployment's operator function, on its
/// configuration and with a role the topics let publish (`--stack` or `--function`), or on the
/// local runner's data directory.
#[derive(clap::Args)]
pub struct OperatorArgs {
    #[arg(long, default_value = ".relay")]
    pub data_dir: PathBuf,
    /// The deployed stack: its output `OperatorFunctionName` names the function to invoke
    /// (`ReconcileFunctionName` for `reconcile`, which runs where the providers' API keys are).
    #[arg(long, conflicts_with = "function")]
    pub stack: Option<String>,
    /// The operator function's name or ARN (the endpoint from `AWS_ENDPOINT_URL_LAMBDA` or
    /// `AWS_ENDPOINT_URL`, as for every AWS client).
    #[arg(long)]
    pub function: Option<String>,
    /// Refused with what to use instead: this shell's configuration is not the deployment's.
    #[arg(long, hide = true)]
    pub table: Option<String>,
}

fn parse_email(address: &str) -> Result<PayorEmail, String> {
    PayorEmail::new(address)
}

/// `refund` or `payment`.
fn parse_kind(kind: &str) -> Result<EventKind, String> {
    match kind {
        "refund" => Ok(EventKind::Refund),
        "payment" => Ok(EventKind::Payment),
        other => Err(format!("unknown kind `{other}`: refund or payment")),
    }
}

/// Which store a command reads: the local runner's data directory, or a DynamoDB table (region,
/// credentials and endpoint from the standard AWS settings, `AWS_ENDPOINT_URL` included).
#[derive(clap::Args)]
pub struct StoreArgs {
    #[arg(long, default_value = ".relay", conflicts_with = "table")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub table: Option<String>,
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        Ok(match &self.table {
            Some(table) => {
                let client = aws_sdk_dynamodb::Client::new(
                    &aws_adapters::lambda::aws_config(aws_adapters::lambda::SdkSetup::Operator).await,
                );
                Arc::new(DynamoStore::new(client, table, aws_adapters::lambda::retention(&process_env)?))
            }
            None => Arc::new(crate::store::SqliteStore::open(&self.data_dir.join("events.sqlite3"))?),
        })
    }
}

/// Runs an operator command where `target` says, printing each line as it comes and a closing
/// count; fails if anything was left untold.
async fn operate(target: &OperatorArgs, command: operate::Command) -> anyhow::Result<()> {
    let name = match &command {
        operate::Command::Reprocess { .. } => "reprocess",
        operate::Command::Redrive { .. } => "redrive",
        operate::Command::Replay { .. } => "replay",
        operate::Command::Erase { .. } => "erase",
        operate::Command::Reconcile { .. } => "reconcile",
    };
    if let Some(table) = &target.table {
        bail!(
            "{name} writes and tells, so it runs inside the deployment, on its configuration (Foloosi's key, \
             routing, currencies, merchant ids) and with a role the topics let publish: use --stack STACK_NAME \
             (or --function NAME) instead of --table {table}; --table is for the read-only commands"
        );
    }
    let dry_run = matches!(
        command,
        operate::Command::Reprocess { dry_run: true, .. }
            | operate::Command::Redrive { dry_run: true }
            | operate::Command::Erase { dry_run: true, .. }
            | operate::Command::Reconcile { dry_run: true, .. }
    );
    let mut total = Report::default();
    let mut add = |report: Report| {
        for line in &report.lines {
            println!("{line}");
        }
        total.stored += report.stored;
        total.still_held += report.still_held;
        total.failed += report.failed;
        total.erased += report.erased;
        merge_tallies(&mut total.reconciled, report.reconciled);
        report.resume
    };
    match (&target.function, &target.stack) {
        (None, None) => {
            let config = local_config()?;
            // The local runner's own outbox then tells what reprocessing stored, as `serve` would.
            let runner = crate::serve::Runner::open(&config, &target.data_dir)?;
            let notifier = crate::notifier::FileNotifier::open(&target.data_dir.join("notifications.jsonl"))?;
            let apis = common::api::configured(&process_env, Arc::new(aws_adapters::http::HyperClient::new()?))?;
            let operator = Operator::new(&config, Arc::new(runner.store().clone()), Arc::new(notifier)).with_apis(apis);
            add(operator.run(Request { command: command.clone(), resume: None }, None).await?);
            match command {
                operate::Command::Reprocess { dry_run: false, .. }
                | operate::Command::Reconcile { dry_run: false, .. } => {
                    runner.outbox().drain().await.map_err(anyhow::Error::msg)?;
                }
                operate::Command::Erase { dry_run: false, .. } => runner.store().checkpoint().await?,
                _ => {}
            }
        }
        (Some(_), _) | (None, Some(_)) => {
            let sdk = aws_adapters::lambda::aws_config(aws_adapters::lambda::SdkSetup::Operator).await;
            let function = match (&target.function, &target.stack) {
                (Some(function), _) => function.clone(),
                (None, Some(stack)) => {
                    let output = match command {
                        operate::Command::Reconcile { .. } => "ReconcileFunctionName",
                        _ => "OperatorFunctionName",
                    };
                    function_of(&aws_sdk_cloudformation::Client::new(&sdk), stack, output).await?
                }
                (None, None) => bail!("--stack or --function names the deployment"),
            };
            // Nothing here publishes or writes with this shell's credentials: the function does.
            let lambda = aws_sdk_lambda::Client::new(&sdk);
            let mut resume = None;
            loop {
                let request = Request { command: command.clone(), resume: resume.take() };
                match add(invoke(&lambda, &function, &request).await?) {
                    Some(next) => {
                        eprintln!("{name}: the operator function's time ran out; resuming from {next}");
                        resume = Some(next);
                    }
                    None => break,
                }
            }
        }
    }
    match command {
        operate::Command::Reprocess { .. } => {
            let would = if dry_run { "would be " } else { "" };
            println!("{} {would}stored, {} still held", total.stored, total.still_held);
        }
        operate::Command::Erase { .. } => {
            let would = if dry_run { "would be " } else { "" };
            println!("{} record(s) {would}erased", total.erased);
        }
        operate::Command::Reconcile { .. } => {
            for tally in &total.reconciled {
                println!("{tally}");
            }
            let failed: usize = total.reconciled.iter().map(|t| t.failed).sum();
            if failed > 0 {
                bail!("{failed} question(s) to a provider's API went unanswered; run reconcile again later");
            }
        }
        _ if total.failed > 0 => {
            bail!("{} event(s) not told; run {name} again once the cause is fixed", total.failed)
        }
        _ => {}
    }
    Ok(())
}

/// Each provider's tally summed over the runs that resumed one another.
fn merge_tallies(total: &mut Vec<common::reconcile::Tally>, more: Vec<common::reconcile::Tally>) {
    for tally in more {
        match total.iter_mut().find(|t| t.provider == tally.provider) {
            Some(t) => {
                t.listed += tally.listed;
                t.missed += tally.missed;
                t.known += tally.known;
                t.held += tally.held;
                t.failed += tally.failed;
            }
            None => total.push(tally),
        }
    }
}

/// The function a stack deployed, from its `output` (`OperatorFunctionName`, ...).
async fn function_of(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack: &str,
    output: &str,
) -> anyhow::Result<String> {
    let described = cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(&e)))
        .with_context(|| format!("describing stack {stack}"))?;
    described
        .stacks()
        .iter()
        .flat_map(|s| s.outputs())
        .find(|o| o.output_key() == Some(output))
        .and_then(|o| o.output_value())
        .map(str::to_owned)
        .with_context(|| format!("stack {stack} has no {output} output: deploy this version's template.yaml"))
}

/// One synchronous invocation of the operator function.
async fn invoke(lambda: &aws_sdk_lambda::Client, function: &str, request: &Request) -> anyhow::Result<Report> {
    let out = lambda
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(serde_json::to_vec(request)?))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_lambda::error::DisplayErrorContext(&e)))
        .with_context(|| format!("invoking {function}"))?;
    let payload = out.payload.map(|p| p.into_inner()).unwrap_or_default();
    if let Some(kind) = out.function_error {
        bail!("the operator function failed ({kind}): {}", String::from_utf8_lossy(&payload));
    }
    serde_json::from_slice(&payload)
        .with_context(|| format!("the operator function's answer: {}", String::from_utf8_lossy(&payload)))
}

/// Secrets as the local runner reads them: the environment, or the development secrets.
pub fn local_config() -> anyhow::Result<Config> {
    Ok(Config::load(&Provider::ALL, Secrets::DevFallback, &process_env)?)
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { addr, data_dir, allow_hosts, show_bodies } => {
            let config = local_config()?;
            if !config.dev_secrets.is_empty() {
                println!("DEVELOPMENT SECRETS in use (set the variables below to your own for anything real):");
                for p in &config.dev_secrets {
                    for var in common::config::secret_vars(*p) {
                        if let Some(v) = dev_secret(var) {
                            println!("  {var}={v}");
                        }
                    }
                }
            }
            crate::serve::serve(config, addr, data_dir, allow_hosts, show_bodies).await
        }
        Command::Sign { provider, file, timestamp, delivery_id, json } => {
            let config = local_config()?;
            let body = read(&file)?;
            let id = delivery_id.unwrap_or_else(fresh_delivery_id);
            let headers = signed_headers(&config, provider, &file, &body, timestamp.unwrap_or_else(now), &id)?;
            if json {
                let object: serde_json::Map<String, serde_json::Value> =
                    headers.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                println!("{}", serde_json::Value::Object(object));
            } else {
                for (k, v) in headers {
                    println!("{k}: {v}");
                }
            }
            Ok(())
        }
        Command::Describe => {
            let secrets: serde_json::Map<String, serde_json::Value> =
                dev_secrets().map(|(k, v)| (k.to_owned(), serde_json::Value::from(v))).collect();
            let described = serde_json::json!({
                "providers": Provider::ALL.map(Provider::as_str),
                "dev_secrets": secrets,
                "events_table": {
                    "merchant_index": common::store::layout::MERCHANT_INDEX,
                    "held_index": common::store::layout::HELD_INDEX,
                    "legacy_held_index": common::store::layout::LEGACY_HELD_INDEX,
                },
            });
            println!("{described}");
            Ok(())
        }
        Command::Refunds { command: RefundsCommand::Get { provider, id, kind, store } } => {
            let kind = match kind.as_str() {
                "refund" => EventKind::Refund,
                "payment" => EventKind::Payment,
                other => bail!("unknown kind `{other}`: refund or payment"),
            };
            match store.open().await?.object(provider, kind, &id).await? {
                Some(record) => println!("{}", serde_json::to_string_pretty(&record)?),
                None => bail!("no {} {id} from {provider}", kind.as_str()),
            }
            Ok(())
        }
        Command::Refunds { command: RefundsCommand::List { merchant, since, store } } => {
            for e in store.open().await?.merchant_events(&merchant, since).await? {
                let row = serde_json::json!({
                    "event_id": e.event_id, "provider": e.provider, "kind": e.kind, "id": e.object_id,
                    "status": e.status, "amount": e.amount, "order_total": e.order_total, "received_at": e.received_at,
                });
                println!("{row}");
            }
            Ok(())
        }
        Command::Replay { provider, object_id, event_ids, kind, force, target } => {
            operate(&target, operate::Command::Replay { provider, kind, object_id, event_ids, force }).await
        }
        Command::Redrive { target, dry_run } => operate(&target, operate::Command::Redrive { dry_run }).await,
        Command::Reconcile { provider, since, until, dry_run, target } => {
            let until = until.unwrap_or_else(Timestamp::now);
            let since = since.unwrap_or_else(|| until.minus(std::time::Duration::from_secs(24 * 3600)));
            if since > until {
                bail!("--since is after --until");
            }
            operate(&target, operate::Command::Reconcile { provider, since, until, dry_run }).await
        }
        Command::Erase { payor_email, dry_run, target } => {
            operate(&target, operate::Command::Erase { payor_email, dry_run }).await
        }
        Command::Held { command: HeldCommand::List { store, provider, limit, after } } => {
            let page = store.open().await?.held(provider, after, limit).await?;
            for held in &page.items {
                println!("{}", serde_json::to_string(held)?);
            }
            if let Some(next) = page.next {
                println!("next: {next}");
            }
            Ok(())
        }
        Command::Reprocess { target, provider, dry_run } => {
            operate(&target, operate::Command::Reprocess { provider, dry_run }).await
        }
        Command::Events { out, fixtures, timestamp } => {
            for path in crate::lambda_events::write_all(&out, &fixtures, timestamp.unwrap_or_else(now)).await? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Send { provider, file, url } => {
            let config = local_config()?;
            let body = read(&file)?;
            let headers = signed_headers(&config, provider, &file, &body, now(), &fresh_delivery_id())?;
            let target = format!("{}/webhooks/{provider}", url.trim_end_matches('/'));
            let (status, reply) = tokio::task::spawn_blocking(move || post(&target, &headers, &body)).await??;
            println!("{status} {reply}");
            if !(200..300).contains(&status) {
                bail!("the receiver answered {status}");
            }
            Ok(())
        }
    }
}
