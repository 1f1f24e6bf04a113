//! The hot path in process: per provider, `Receiver::receive` on its fixture (verify + parse +
//! normalize + key; the store answers at once, so it is excluded), beside the floor the issue
//! names: HMAC-SHA256 of the body plus a `serde_json` parse of it.

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use common::config::{Config, DEV_SECRETS, Secrets};
use common::event::{EventKind, Provider, RefundEvent};
use common::receive::{Receiver, WebhookRequest};
use common::store::{Advance, EventStore, ObjectRecord, Put, StoreError};
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A store that answers at once: the bench measures everything before the write.
struct NullStore;

#[async_trait]
impl EventStore for NullStore {
    async fn put_if_absent(&self, _: &RefundEvent) -> Result<Put, StoreError> {
        Ok(Put::Stored)
    }
    async fn advance(&self, _: &RefundEvent) -> Result<Advance, StoreError> {
        Ok(Advance::Advanced)
    }
    async fn object(&self, _: Provider, _: EventKind, _: &str) -> Result<Option<ObjectRecord>, StoreError> {
        Ok(None)
    }
}

fn fixture(provider: Provider) -> (&'static str, Vec<u8>) {
    let rel = match provider {
        Provider::Memberful => "memberful/order.refunded.json",
        Provider::Conscent => "conscent/refunded.subscription.json",
        Provider::Rainforest => "rainforest/refund.succeeded.json",
        Provider::Webforce => "webforce/refund-applied.ours.json",
        Provider::Foloosi => "foloosi/transaction.success.json",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel);
    (rel, std::fs::read(path).expect("fixture"))
}

fn pipeline(c: &mut Criterion) {
    // A wide replay window: the Rainforest signature is made once, before the measurements.
    let env = |var: &str| match var {
        "REPLAY_TOLERANCE_SECONDS" => Some("86400".to_owned()),
        _ => DEV_SECRETS.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_owned()),
    };
    let config = Config::load(&Provider::ALL, Secrets::Required, &env).expect("bench configuration");
    let receiver = Receiver::new(&config, Arc::new(NullStore));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut group = c.benchmark_group("pipeline");
    for provider in Provider::ALL {
        let (rel, body) = fixture(provider);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
        for (k, v) in config.verifier(provider).unwrap().sign(&body, now, "msg_bench") {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let req = WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &body };
        let receipt = futures::executor::block_on(receiver.receive(provider, req));
        assert_eq!(receipt.body["status"], "accepted", "{rel}: {}", receipt.body);

        group.bench_function(format!("receive/{provider} ({} B)", body.len()), |b| {
            b.iter(|| futures::executor::block_on(receiver.receive(provider, black_box(req))).status)
        });
        group.bench_function(format!("floor/{provider} ({} B)", body.len()), |b| {
            b.iter(|| {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"bench-secret").unwrap();
                mac.update(black_box(&body));
                let tag = mac.finalize().into_bytes();
                let value: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
                (tag, value)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
