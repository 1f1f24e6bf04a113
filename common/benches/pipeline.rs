//! The hot path in process: per provider, `Receiver::receive` on its fixture (verify + parse +
//! normalize + key; the store answers at once, so it is excluded), beside the floor its goal is
//! set against (bench/README.md, "Hot path"): HMAC-SHA256 of the body plus a `serde_json` parse of
//! it. Each provider is measured on its fixture and on a body of about 2 KB (the size the goal
//! names), made from the fixture by adding what real payloads carry more of (line items, metadata,
//! longer texts); the name gives the size.
//!
//! `cargo bench -p refund-relay-common --bench pipeline -- conscent` runs one provider.

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use common::config::{Config, Secrets, dev_secret};
use common::event::{EventKind, IdempotencyKey, Provider, RefundEvent};
use common::held::{HeldDelivery, HeldEntry};
use common::receive::{Receiver, WebhookRequest};
use common::store::{Advance, Checkpoint, EventStore, Hold, ObjectRecord, Page, Put, Record, StoreError, Told};
use common::timestamp::Timestamp;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A store that answers at once: the bench measures everything before the write.
struct NullStore;

#[async_trait]
impl EventStore for NullStore {
    async fn put_if_absent(&self, _: &RefundEvent) -> Result<Put, StoreError> {
        Ok(Put::Stored)
    }
    async fn advance(&self, _: &RefundEvent) -> Result<Advance, StoreError> {
        Ok(Advance::Advanced(Told::NONE))
    }
    async fn mark_told(&self, _: &RefundEvent, _: Told, _: bool) -> Result<(), StoreError> {
        Ok(())
    }
    async fn object(&self, _: Provider, _: EventKind, _: &str) -> Result<Option<ObjectRecord>, StoreError> {
        Ok(None)
    }
    async fn object_event(
        &self,
        _: Provider,
        _: EventKind,
        _: &str,
        _: &str,
    ) -> Result<Option<RefundEvent>, StoreError> {
        Ok(None)
    }
    async fn merchant_events(&self, _: &str, _: Option<Timestamp>) -> Result<Vec<RefundEvent>, StoreError> {
        Ok(Vec::new())
    }
    async fn untold(&self, _: Option<String>) -> Result<Page<RefundEvent>, StoreError> {
        Ok(Page { items: Vec::new(), next: None })
    }
    async fn hold(&self, _: &HeldDelivery) -> Result<Hold, StoreError> {
        Ok(Hold::Held)
    }
    async fn held(&self, _: Option<Provider>, _: Option<String>, _: usize) -> Result<Page<HeldEntry>, StoreError> {
        Ok(Page { items: Vec::new(), next: None })
    }
    async fn held_one(&self, _: &str) -> Result<Option<HeldDelivery>, StoreError> {
        Ok(None)
    }
    async fn resolve_held(&self, _: &HeldDelivery, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn existing(&self, _: &[RefundEvent]) -> Result<std::collections::HashSet<IdempotencyKey>, StoreError> {
        Ok(Default::default())
    }
    async fn checkpoint(&self, _: Provider) -> Result<Option<Checkpoint>, StoreError> {
        Ok(None)
    }
    async fn save_checkpoint(&self, _: &Checkpoint) -> Result<(), StoreError> {
        Ok(())
    }
    async fn records(&self, _: Option<String>) -> Result<Page<Record>, StoreError> {
        Ok(Page { items: Vec::new(), next: None })
    }
    async fn rewrite_event(&self, _: &RefundEvent) -> Result<(), StoreError> {
        Ok(())
    }
    async fn rewrite_held(&self, _: &HeldDelivery) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The provider's example fixture (its descriptor's), as `refund-relay events` signs it.
fn fixture(provider: Provider) -> (String, Vec<u8>) {
    let rel = provider.example_fixture();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(&rel);
    let body = std::fs::read(path).expect("fixture");
    (rel, body)
}

/// The body size the goal is stated for (bench/README.md, "Hot path").
const LARGE: usize = 2048;

/// `fixture` grown to at least [`LARGE`] bytes the way a real payload of the provider grows: one
/// more item per step, until it is large enough. Unknown members are what the providers send and
/// the adapters skip; the fields the adapters read keep the fixture's values. The fixture's layout
/// (pretty or compact) is kept.
fn large(provider: Provider, fixture: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(fixture).expect("fixture is JSON");
    let mut step = 0;
    loop {
        grow(provider, &mut v, step);
        let body = if fixture.contains(&b'\n') {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        if body.len() >= LARGE {
            return body;
        }
        step += 1;
    }
}

/// One step of growth; step 0 also fills in what the fixture leaves empty.
fn grow(provider: Provider, v: &mut Value, step: usize) {
    match provider {
        // Memberful: an order of several products and subscriptions, a member with an address.
        Provider::Memberful => {
            let order = &mut v["order"];
            if step == 0 {
                order["receipt"] = json!(
                    "Receipt #4DACB7B0 - Sample plan (monthly), Premium archive access. Paid by Visa ending 4242."
                );
                order["member"]["address"] = json!({"street": "1200 Harbor Boulevard, Suite 410", "city": "Weehawken",
                    "state": "NJ", "postal_code": "07086", "country": "US"});
            }
            order["products"]
                .as_array_mut()
                .unwrap()
                .push(json!({"id": 1000 + step, "name": format!("Back issue #{step}: the long read"),
                "price": 500, "slug": format!("back-issue-{step}-the-long-read"), "type": "download"}));
            if step.is_multiple_of(2) {
                order["subscriptions"].as_array_mut().unwrap().push(json!({"active": true, "id": 2000 + step,
                "expires_at": 1761232033, "subscription": {"id": 3000 + step, "price": 1000,
                "name": format!("Add-on plan {step}"), "renewal_period": "monthly"}}));
            }
        }
        // Conscent.ai: a user with a full address and a real browser's user agent; more
        // included objects named in `contains`.
        Provider::Conscent => {
            if step == 0 {
                v["payload"]["user"]["address"] = json!({"apartment": "Flat 12B, Tower 4", "area": "Okhla Phase I",
                    "pincode": "110020", "landmark": "Opposite the metro station", "city": "New Delhi",
                    "state": "Delhi", "country": "India"});
                v["client_info"]["userAgent"] = json!(
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36"
                );
            }
            v["contains"].as_array_mut().unwrap().push(json!(format!("purchase_{step}")));
            v["payload"][format!("purchase_{step}")] = json!({"_id": format!("65e01798d03692125f1f33{step:02}"),
                "contentId": format!("story-{step}-how-the-city-voted"), "price": 1, "currency": "INR",
                "createdAt": "2024-02-29T06:05:11.102Z"});
        }
        // Rainforest: the documented optional fields, platform metadata and amount splits.
        Provider::Rainforest => {
            let data = &mut v["data"];
            if step == 0 {
                data["auth_code"] = json!("A1B2C3");
                data["merchant_fees"] = json!({"amount": 25, "currency_code": "USD"});
                data["amount_splits"] = json!([]);
            }
            data["metadata"][format!("note_{step}")] =
                json!(format!("Support ticket SUP-{} escalated by the merchant's team", 1042 + step));
            data["amount_splits"]
                .as_array_mut()
                .unwrap()
                .push(json!({"merchant_id": format!("mid_2sPKnRjN5gT6Zs0cHUFbDoD{step:03}"),
                "amount": 100, "description": "Platform share of the refunded payin"}));
        }
        // WebforceHQ (our mapping): an order's line items beside the mapped fields.
        Provider::Webforce => {
            if step == 0 {
                v["reason"] =
                    json!("Damaged item: the customer sent photos of the box and the item; replacement not wanted");
                v["items"] = json!([]);
            }
            v["items"].as_array_mut().unwrap().push(json!({"sku": format!("SKU-{:05}", 10_000 + step),
                "name": format!("Ceramic mug, set of {}", step + 2), "quantity": 1, "price": "12.49"}));
        }
        // Foloosi: the `api` object echoes the payment request, so it carries the customer's
        // details and the merchant's optional references.
        Provider::Foloosi => {
            let api = &mut v["data"]["transfer"]["api"];
            if step == 0 {
                api["customer_name"] = json!("Dana Payer");
                api["customer_address"] = json!("Apartment 1204, Marina Heights Tower, Dubai Marina");
                api["customer_city"] = json!("Dubai");
                api["billing_country"] = json!("ARE");
                api["site_return_url"] = json!("https://shop.example.com/checkout/foloosi/return?order=order-771");
            }
            api[format!("optional{}", step + 1)] =
                json!(format!("order-771 line {step}: gift wrap, delivery on Thursday"));
        }
        // A provider added since: members it does not read, until it says how its payloads grow.
        #[allow(unreachable_patterns)]
        _ => v[format!("note_{step}")] = json!(format!("an unread member the payload grew by, number {step}")),
    }
}

fn pipeline(c: &mut Criterion) {
    // A wide replay window: the Rainforest signature is made once, before the measurements.
    let env = |var: &str| match var {
        "REPLAY_TOLERANCE_SECONDS" => Some("86400".to_owned()),
        _ => dev_secret(var).map(str::to_owned),
    };
    let config = Config::load(&Provider::ALL, Secrets::Required, &env).expect("bench configuration");
    let receiver = Receiver::new(&config, Arc::new(NullStore));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut group = c.benchmark_group("pipeline");
    let bodies = Provider::ALL.into_iter().flat_map(|provider| {
        let (rel, body) = fixture(provider);
        let big = large(provider, &body);
        [(provider, rel.to_owned(), body), (provider, format!("{rel}, grown"), big)]
    });
    for (provider, rel, body) in bodies {
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
