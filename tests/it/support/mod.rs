//! Shared test helpers: fixtures, configurations, signing exactly as the providers do.
#![allow(dead_code)]

pub mod aws;
pub mod count_proxy;
pub mod emulator;
pub mod fake_http;
pub mod faults;
pub mod foloosi_api;
pub mod rainforest_api;
pub mod runner;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::config::{Config, Secrets, dev_secrets};
use common::event::Provider;
use common::receive::{Receipt, Receiver, WebhookRequest};
use common::store::MemoryStore;
use http::{HeaderMap, Method};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// Every fixture file, as `provider/name`.
pub fn all_fixtures() -> Vec<(Provider, String)> {
    let mut out = Vec::new();
    for p in Provider::ALL {
        let mut names: Vec<String> = std::fs::read_dir(fixtures_dir().join(p.as_str()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|n| (p, format!("{p}/{n}"))));
    }
    out
}

fn manifest_section(name: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("tests/fixtures/manifest.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    v[name].as_object_mut().map(std::mem::take).unwrap_or_else(|| panic!("manifest.json has no `{name}` object"))
}

/// `tests/fixtures/manifest.json`: each fixture's expected outcome and normalized fields.
pub fn manifest() -> serde_json::Map<String, serde_json::Value> {
    manifest_section("fixtures")
}

/// What the pipeline tests deliver for one provider (the manifest's `providers`).
pub struct Case {
    pub provider: Provider,
    /// Its main refund (or payment) fixture.
    pub refund: &'static str,
    /// A fixture it sends that is acknowledged and not stored, if it sends any.
    pub ignored: Option<&'static str>,
    /// JSON pointers whose removal leaves the refund without its id, and the field then named.
    pub remove: &'static [&'static str],
    pub field: &'static str,
}

/// Every provider's [`Case`], in [`Provider::ALL`] order: a provider the manifest leaves out
/// fails here, not silently.
pub fn cases() -> &'static [Case] {
    static CASES: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    CASES.get_or_init(|| {
        let providers = manifest_section("providers");
        let text = |v: &serde_json::Value| -> &'static str { Box::leak(v.as_str().expect("a string").into()) };
        assert_eq!(providers.len(), Provider::ALL.len(), "manifest.json's `providers`: one per provider");
        Provider::ALL
            .into_iter()
            .map(|provider| {
                let c = &providers.get(provider.as_str()).unwrap_or_else(|| panic!("manifest.json: no `{provider}`"));
                let remove: Vec<&'static str> =
                    c["id_pointers"].as_array().expect("id_pointers").iter().map(text).collect();
                Case {
                    provider,
                    refund: text(&c["refund"]),
                    ignored: c["ignored"].as_str().map(|_| text(&c["ignored"])),
                    remove: Box::leak(remove.into_boxed_slice()),
                    field: text(&c["id_field"]),
                }
            })
            .collect()
    })
}

/// A secret of the same scheme as `provider`'s first development secret, and not it: what a
/// rotation moves to.
pub fn another_secret(provider: Provider) -> (&'static str, String) {
    use base64::Engine;
    let first = &provider.descriptor().secrets[0];
    let dev = first.dev.expect("a development secret");
    let other = match dev.strip_prefix("whsec_") {
        Some(key) => {
            let b64 = base64::engine::general_purpose::STANDARD;
            format!("whsec_{}", b64.encode([b"another-".as_slice(), &b64.decode(key).expect("base64")].concat()))
        }
        None => format!("another-{dev}"),
    };
    (first.var, other)
}

/// The fixtures the manifest says are stored as events (as opposed to ignored or held).
pub fn accepted_fixtures() -> Vec<(Provider, String)> {
    let m = manifest();
    all_fixtures().into_iter().filter(|(_, rel)| m.get(rel).is_some_and(|e| e["outcome"] == "accepted")).collect()
}

/// The query string a fixture is delivered with, if the manifest names one.
pub fn fixture_query(rel: &str) -> Option<String> {
    manifest().get(rel).and_then(|e| e["query"].as_str()).map(str::to_owned)
}

/// An environment of the development secrets plus `extra` (which wins).
/// Exactly `pairs`, as an environment.
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    move |k| map.get(k).cloned()
}

/// The development secrets, with `extra` added or replacing them.
pub fn env_with(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let mut map: HashMap<String, String> = dev_secrets().map(|(k, v)| (k.into(), v.into())).collect();
    for (k, v) in extra {
        map.insert((*k).into(), (*v).into());
    }
    move |k| map.get(k).cloned()
}

pub fn config(extra: &[(&str, &str)]) -> Config {
    Config::load(&Provider::ALL, Secrets::Required, &env_with(extra)).expect("test configuration")
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn content_type_of(rel: &str) -> &'static str {
    if rel.ends_with(".form") { "application/x-www-form-urlencoded" } else { "application/json" }
}

/// The headers `config`'s secrets produce for `body`, as the provider would send them.
pub fn signed(config: &Config, provider: Provider, content_type: &str, body: &[u8], at: i64, id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
    for (k, v) in config.verifier(provider).unwrap().sign(body, at, id) {
        h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    h
}

/// A receiver on the development secrets over a fresh in-memory store.
pub struct Harness {
    pub config: Config,
    pub store: Arc<MemoryStore>,
    pub receiver: Receiver,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(&[])
    }

    pub fn with(extra: &[(&str, &str)]) -> Self {
        let config = config(extra);
        let store = Arc::new(MemoryStore::new());
        let receiver = Receiver::new(&config, store.clone());
        Harness { config, store, receiver }
    }

    pub async fn send(&self, provider: Provider, headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Receipt {
        self.receiver.receive(provider, WebhookRequest { method: &Method::POST, headers, query, body }).await
    }

    /// Sends a fixture signed with this harness's own secrets, with its manifest query.
    pub async fn send_fixture(&self, rel: &str) -> Receipt {
        let provider: Provider = rel.split('/').next().unwrap().parse().unwrap();
        let body = fixture(rel);
        let h = signed(&self.config, provider, content_type_of(rel), &body, now(), &format!("msg_{}", now()));
        self.send(provider, &h, fixture_query(rel).as_deref(), &body).await
    }

    pub async fn send_body(&self, provider: Provider, content_type: &str, body: &[u8]) -> Receipt {
        let h = signed(&self.config, provider, content_type, body, now(), &format!("msg_{}", now()));
        self.send(provider, &h, None, body).await
    }
}

/// The general routing table for every provider, Rainforest included (whose own default tells
/// fewer audiences), with token-only events reaching payors too: tests of the fan-out's
/// mechanics count on every audience of a terminal status being told. It goes through
/// `ROUTING_RAINFOREST`'s own parser. (The default that keeps token-only events from payors has
/// its own test in pipeline.rs.)
pub fn general_routing() -> common::notify::Routing {
    common::notify::Routing::default()
        .with_overrides(Some(Provider::Rainforest), GENERAL_ROUTING)
        .expect("a valid routing spec")
        .with_token_payors(TOKEN_PROVIDERS.to_vec())
}

/// The providers only a token proves, as `TOKEN_PAYORS` names them for a process a test starts.
pub const TOKEN_PROVIDERS: [Provider; 2] = [Provider::Webforce, Provider::Foloosi];
pub const TOKEN_PAYORS: &str = "webforce,foloosi";

/// The general table as a `ROUTING_RAINFOREST` value, for a `serve` a test starts.
pub const GENERAL_ROUTING: &str = "created=internal+merchant;processing=merchant;in_review=internal+merchant;\
     succeeded=internal+merchant+payor;failed=internal+merchant+payor;canceled=internal+merchant";
