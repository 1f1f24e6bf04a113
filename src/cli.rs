//! The `refund-relay` command line: run the local receiver, and sign or send fixtures as a
//! provider would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use aws_adapters::dynamodb::DynamoStore;
use aws_adapters::sns::{SnsNotifier, TopicArns};
use clap::{Parser, Subcommand};
use common::config::{Config, Secrets, dev_secret, dev_secrets, process_env};
use common::event::{EventKind, Provider};
use common::fanout::{Delivery, Fanout, Outcome};
use common::held::HeldStatus;
use common::notify::Notifier;
use common::receive::{Receiver, Reprocessed};
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
        store: StoreArgs,
        /// Only this provider's held deliveries.
        #[arg(long)]
        provider: Option<Provider>,
        /// Print what each would become; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Tell stored events' audiences again, through the fan-out. An event already told in full
    /// publishes nothing and says so, unless --force. With --table, the topics come from
    /// INTERNAL_TOPIC_ARN, MERCHANT_TOPIC_ARN and PAYOR_TOPIC_ARN.
    Replay {
        #[arg(required = true)]
        event_ids: Vec<String>,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// After a fan-out outage: tell every stored event that no audience was told of yet (on
    /// DynamoDB, a scan of the table).
    Redrive {
        #[command(flatten)]
        store: StoreArgs,
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
    /// Every held delivery, newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
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

impl StoreArgs {
    /// The store and the fan-out an operator's command tells through: SNS (topics from the
    /// environment) for a table, the local runner's notifications file for a data directory.
    async fn fanout(&self) -> anyhow::Result<(Arc<dyn EventStore>, Fanout)> {
        let config = local_config()?;
        let store = self.open().await?;
        let notifier: Arc<dyn Notifier> = match &self.table {
            Some(_) => {
                let var =
                    |name: &'static str| process_env(name).with_context(|| format!("{name} must be set with --table"));
                let topics = TopicArns {
                    internal: var("INTERNAL_TOPIC_ARN")?,
                    merchant: var("MERCHANT_TOPIC_ARN")?,
                    payor: var("PAYOR_TOPIC_ARN")?,
                };
                Arc::new(SnsNotifier::new(
                    aws_sdk_sns::Client::new(
                        &aws_adapters::lambda::aws_config(aws_adapters::lambda::SdkSetup::Operator).await,
                    ),
                    topics,
                ))
            }
            None => Arc::new(crate::notifier::FileNotifier::open(&self.data_dir.join("notifications.jsonl"))?),
        };
        let fanout = Fanout::new(store.clone(), notifier, config.routing, config.platform);
        Ok((store, fanout))
    }
}

fn said(delivery: &Delivery) -> String {
    match delivery {
        Delivery::Notified(n) => format!("told {} audience(s)", n.len()),
        Delivery::Stale => "stale: its object is already past this status; nobody told".into(),
        Delivery::AlreadyTold => "already told every audience; nothing published (--force to publish again)".into(),
    }
}

/// Reprocesses held deliveries and prints, per delivery, what it was held for and what it now is.
async fn reprocess(args: &StoreArgs, provider: Option<Provider>, dry_run: bool) -> anyhow::Result<()> {
    let config = local_config()?;
    let (store, runner): (Arc<dyn EventStore>, _) = match &args.table {
        Some(_) => (args.open().await?, None),
        None => {
            // The local runner's own outbox then tells what was stored, as `serve` would.
            let runner = crate::serve::Runner::open(&config, &args.data_dir)?;
            (Arc::new(runner.store().clone()), Some(runner))
        }
    };
    let receiver = Receiver::new(&config, store.clone());
    let (mut stored, mut still) = (0, 0);
    for held in store.held(provider).await?.into_iter().filter(|h| h.status == HeldStatus::Held) {
        let outcome = receiver.reprocess(&held, dry_run).await?;
        let verdict = match &outcome {
            Reprocessed::Accepted(e) => {
                stored += 1;
                let fields = serde_json::to_value(e.as_ref()).map(|mut v| {
                    v.as_object_mut().map(|m| m.remove("raw_payload"));
                    v
                })?;
                format!("{} as event {} {fields}", if dry_run { "would be accepted" } else { "accepted" }, e.event_id)
            }
            Reprocessed::Duplicate(e) => format!("duplicate of event {}", e.event_id),
            Reprocessed::Ignored(reason) => {
                format!("{}: {reason}", if dry_run { "would be ignored" } else { "ignored" })
            }
            Reprocessed::StillHeld(reason) => {
                still += 1;
                format!("still held: {reason}")
            }
        };
        println!("{} {} (held: {}) -> {verdict}", held.held_id, held.provider, held.reason);
    }
    println!("{stored} {}stored, {still} still held", if dry_run { "would be " } else { "" });
    if let (Some(runner), false) = (runner, dry_run) {
        runner.outbox().drain().await.map_err(anyhow::Error::msg)?;
    }
    Ok(())
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
        Command::Serve { addr, data_dir } => {
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
            crate::serve::serve(config, addr, data_dir).await
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
        Command::Replay { event_ids, force, store } => {
            let (events, fanout) = store.fanout().await?;
            for id in event_ids {
                let Some(event) = events.event(&id).await? else { bail!("no stored event {id}") };
                println!("{id}: {}", said(&fanout.replay(&event, force).await?));
            }
            Ok(())
        }
        Command::Redrive { store } => {
            let (events, fanout) = store.fanout().await?;
            let untold: Vec<_> = events.untold().await?.into_iter().map(|e| (e.event_id.clone(), e)).collect();
            let mut failed = 0;
            for (id, outcome) in fanout.deliver_in_object_order(untold, 16).await {
                let line = match outcome {
                    Outcome::Delivered(d) => said(&d),
                    Outcome::Failed(e) => {
                        failed += 1;
                        format!("failed: {e}")
                    }
                    Outcome::HeldBack => {
                        failed += 1;
                        "held back: an earlier event of its object failed".into()
                    }
                };
                println!("{id}: {line}");
            }
            if failed > 0 {
                bail!("{failed} event(s) not told; run redrive again once the cause is fixed");
            }
            Ok(())
        }
        Command::Held { command: HeldCommand::List { store } } => {
            let store = store.open().await?;
            for held in store.held(None).await? {
                println!("{}", serde_json::to_string(&held.summary())?);
            }
            Ok(())
        }
        Command::Reprocess { store, provider, dry_run } => reprocess(&store, provider, dry_run).await,
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
