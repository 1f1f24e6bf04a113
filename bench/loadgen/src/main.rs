//! The load generator for `bench/run`: closed-loop HTTP/1.1 keep-alive connections, each posting
//! signed Rainforest webhooks one after another, for a fixed time; then one JSON line with
//! requests/s and latency percentiles. `ceiling` is the bare server the results are read against:
//! it reads each request's body and answers 200, doing nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use common::config::{Config, Secrets, dev_secret};
use common::event::Provider;
use common::verify::Verifier;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The fixture every request is made from; `new` mode gives each request its own refund id.
const FIXTURE: &str = include_str!("../../../tests/fixtures/rainforest/refund.succeeded.json");
const FIXTURE_ID: &str = "rfd_2sPMefai6yWsyp4MSGUkAo32pp7";

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a bare HTTP 200 (the ceiling) until killed; prints the address.
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Post webhooks to `url` and print one JSON line of results.
    Run {
        /// The Rainforest route, e.g. http://127.0.0.1:8080/webhooks/rainforest
        #[arg(long)]
        url: String,
        #[arg(long, value_enum, default_value = "new")]
        mode: Mode,
        /// Connections, each with one request in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds measured, after `warmup` seconds not measured.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Client threads (the server under test shares the machine).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Every request a refund never seen before: each one is a stored write.
    New,
    /// The same signed delivery again and again: each one is answered as a duplicate.
    Duplicate,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::New => "new",
            Mode::Duplicate => "duplicate",
        }
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ceiling { addr } => tokio::runtime::Runtime::new()?.block_on(ceiling(addr)),
        Command::Run { url, mode, concurrency, seconds, warmup, threads } => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
            let report = rt.block_on(run(
                &url,
                mode,
                concurrency,
                Duration::from_secs_f64(warmup),
                Duration::from_secs_f64(seconds),
            ))?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn ceiling(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("ceiling listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                // Read the whole body, as the receiver must before it can verify anything.
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(br#"{"status":"accepted"}"#))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Signs deliveries with the development secret `refund-relay serve` falls back to.
struct Signer {
    verifier: Arc<dyn Verifier>,
    /// Keeps one run's refund ids apart from an earlier run's against the same data directory.
    nonce: u64,
}

impl Signer {
    fn new() -> anyhow::Result<Self> {
        let env = |var: &str| dev_secret(var).map(str::to_owned);
        let config = Config::load(&[Provider::Rainforest], Secrets::Required, &env)?;
        let verifier = config.verifier(Provider::Rainforest).context("no Rainforest verifier")?.clone();
        let nonce = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        Ok(Signer { verifier, nonce })
    }

    /// The `n`th delivery of a `mode` run: its body and signed request.
    fn request(&self, uri: &http::Uri, mode: Mode, worker: usize, n: u64) -> Request<Full<Bytes>> {
        let body = match mode {
            Mode::New => FIXTURE.replace(FIXTURE_ID, &format!("rfd_load_{:x}_{worker}_{n}", self.nonce)),
            Mode::Duplicate => FIXTURE.to_owned(),
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut req = Request::post(uri.clone()).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(host) = uri.authority() {
            req = req.header(http::header::HOST, host.as_str());
        }
        for (name, value) in self.verifier.sign(body.as_bytes(), now, &format!("msg_{worker}_{n}")) {
            req = req.header(name, value);
        }
        req.body(Full::new(Bytes::from(body))).expect("a valid request")
    }
}

struct Tally {
    latency_us: Histogram<u64>,
    /// Answers whose body says what the mode expects (`accepted` for new, `duplicate` for
    /// duplicates): the requests that count toward the result.
    expected: u64,
    other: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        let latency_us = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        Tally { latency_us, expected: 0, other: 0, errors: 0 }
    }
}

async fn run(
    url: &str,
    mode: Mode,
    concurrency: usize,
    warmup: Duration,
    measured: Duration,
) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse()?;
    let addr = format!("{}:{}", uri.host().context("url has no host")?, uri.port_u16().unwrap_or(80));
    let signer = Arc::new(Signer::new()?);
    if mode == Mode::Duplicate {
        // Deliver the event once first, so every measured request is a duplicate of it.
        let mut sender = connect(&addr).await?;
        let res = sender.send_request(signer.request(&uri, mode, usize::MAX, 0)).await?;
        anyhow::ensure!(res.status().is_success(), "priming delivery answered {}", res.status());
    }
    let start = Instant::now() + Duration::from_millis(100);
    let (measure_from, until) = (start + warmup, start + warmup + measured);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (signer, uri, addr) = (signer.clone(), uri.clone(), addr.clone());
            tokio::spawn(async move { connection(signer, uri, addr, mode, worker, start, measure_from, until).await })
        })
        .collect();
    let mut total = Tally::new();
    for worker in workers {
        let t = worker.await??;
        total.expected += t.expected;
        total.other += t.other;
        total.errors += t.errors;
        total.latency_us.add(&t.latency_us)?;
    }
    let h = total.latency_us;
    let secs = measured.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "mode": mode.as_str(),
        "concurrency": concurrency,
        "seconds": secs,
        "requests": h.len(),
        "expected": total.expected,
        "unexpected": total.other,
        "errors": total.errors,
        "per_second": (total.expected as f64 / secs).round(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": h.max() as f64 / 1000.0,
    })
    .to_string())
}

/// One keep-alive connection: sends until `until`, records what was sent after `measure_from`.
#[allow(clippy::too_many_arguments)]
async fn connection(
    signer: Arc<Signer>,
    uri: http::Uri,
    addr: String,
    mode: Mode,
    worker: usize,
    start: Instant,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<Tally> {
    let mut sender = connect(&addr).await?;
    tokio::time::sleep_until(start.into()).await;
    let expected: &[u8] = match mode {
        Mode::New => br#""accepted""#,
        Mode::Duplicate => br#""duplicate""#,
    };
    let mut tally = Tally::new();
    let mut n = 0u64;
    while Instant::now() < until {
        let req = signer.request(&uri, mode, worker, n);
        n += 1;
        let sent = Instant::now();
        let answer = async {
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        if sent < measure_from {
            continue;
        }
        tally.latency_us.saturating_record(sent.elapsed().as_micros() as u64);
        match answer {
            Ok((status, body)) if status == http::StatusCode::OK && contains(&body, expected) => tally.expected += 1,
            Ok(_) => tally.other += 1,
            Err(_) => {
                // The connection is gone (the server closed it): count it and stop this worker.
                tally.errors += 1;
                break;
            }
        }
    }
    Ok(tally)
}

/// A keep-alive HTTP/1.1 connection to `addr`, its driver running on the runtime.
async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
