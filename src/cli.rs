//! The `refund-relay` command line: run the local receiver, and sign or send fixtures as a
//! provider would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use common::config::{Config, DEV_SECRETS, Secrets, process_env};
use common::event::Provider;

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
    },
    /// Sign the body in FILE as the provider would and POST it to the receiver.
    Send {
        provider: Provider,
        file: PathBuf,
        /// The receiver's base URL; the provider's route is appended.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
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

/// Secrets as the local runner reads them: the environment, or the development secrets.
pub fn local_config() -> anyhow::Result<Config> {
    Ok(Config::load(&Provider::ALL, Secrets::DevFallback, &process_env)?)
}

/// A delivery id unique to this process and moment, like a provider's own.
pub fn fresh_delivery_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("msg_{nanos:x}{:x}", std::process::id())
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The content type a fixture is sent with: form-encoded for `.form` files.
pub fn content_type(file: &Path) -> &'static str {
    if file.extension().is_some_and(|e| e == "form") { "application/x-www-form-urlencoded" } else { "application/json" }
}

/// The headers (content type first) a provider sends with `body`.
pub fn signed_headers(
    config: &Config,
    provider: Provider,
    file: &Path,
    body: &[u8],
    timestamp: i64,
    delivery_id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let verifier = config.verifier(provider).with_context(|| format!("{provider} is not configured"))?;
    let mut headers = vec![("Content-Type".to_owned(), content_type(file).to_owned())];
    headers.extend(verifier.sign(body, timestamp, delivery_id));
    Ok(headers)
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
                        if let Some((_, v)) = DEV_SECRETS.iter().find(|(k, _)| k == var) {
                            println!("  {var}={v}");
                        }
                    }
                }
            }
            crate::serve::serve(config, addr, data_dir).await
        }
        Command::Sign { provider, file, timestamp, delivery_id } => {
            let config = local_config()?;
            let body = read(&file)?;
            let id = delivery_id.unwrap_or_else(fresh_delivery_id);
            for (k, v) in signed_headers(&config, provider, &file, &body, timestamp.unwrap_or_else(now), &id)? {
                println!("{k}: {v}");
            }
            Ok(())
        }
        Command::Events { out, fixtures, timestamp } => {
            for path in crate::events::write_all(&out, &fixtures, timestamp.unwrap_or_else(now)).await? {
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

/// POSTs `body`; any HTTP status is an answer, not an error.
pub fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut res = req.send(body).with_context(|| format!("posting to {url}"))?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    Ok((status, text))
}
