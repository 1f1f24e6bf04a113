//! `refund-relay events`: API Gateway HTTP API (v2) events per provider and case, and a DynamoDB
//! stream event for the fan-out, all built from the fixtures through the real pipeline, for
//! `sam local invoke`, `cargo lambda invoke` and the emulator tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use common::config::{Config, Secrets};
use common::event::Provider;
use common::receive::{Receiver, WebhookRequest};
use common::store::MemoryStore;
use common::store::layout;
use serde_json::{Value, json};

use crate::sender::{content_type, signed_headers};

/// A secret no provider is configured with, for the bad-signature events.
fn wrong_secrets(var: &str) -> Option<String> {
    match var {
        "RAINFOREST_WEBHOOK_SECRET" => Some("whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw==".into()),
        v if common::config::dev_secret(v).is_some() => Some("wrong-secret-wrong-secret-wrong".into()),
        _ => None,
    }
}

/// An API Gateway HTTP API payload-format-2.0 event, as the function receives it.
pub fn apigw_v2(provider: Provider, headers: &[(String, String)], body: &[u8], query: &str, epoch: i64) -> Value {
    let path = format!("/webhooks/{provider}");
    let headers: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), json!(v))).collect();
    json!({
        "version": "2.0",
        "routeKey": format!("POST {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "refundrelay",
            "domainName": "refundrelay.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "refundrelay",
            "http": { "method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10", "userAgent": format!("{provider}-webhooks") },
            "requestId": format!("req-{provider}"),
            "routeKey": format!("POST {path}"),
            "stage": "$default",
            "time": "23/Nov/2026:12:00:00 +0000",
            "timeEpoch": epoch.saturating_mul(1000),
        },
        "body": String::from_utf8_lossy(body),
        "isBase64Encoded": false,
    })
}

/// Writes every event into `out` and returns the paths written. `now` is the signing time of the
/// Rainforest events (their replay window is 300 s: regenerate, or raise `REPLAY_TOLERANCE_SECONDS`).
pub async fn write_all(out: &Path, fixtures: &Path, now: i64) -> anyhow::Result<Vec<PathBuf>> {
    let env = |var: &str| common::config::dev_secret(var).map(str::to_owned);
    let good = Config::load(&Provider::ALL, Secrets::Required, &env)?;
    let bad = Config::load(&Provider::ALL, Secrets::Required, &wrong_secrets)?;
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut write = |name: String, value: &Value| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")?;
        written.push(path);
        Ok(())
    };

    let store = Arc::new(MemoryStore::new());
    let receiver = Receiver::new(&good, store.clone());
    for provider in Provider::ALL {
        let file = fixtures.join(provider.example_fixture());
        let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let first = signed_headers(&good, provider, &file, &body, now, &format!("msg_events_{provider}_1"))?;
        // The duplicate is a manual resend: the same event, a new delivery id.
        let again = signed_headers(&good, provider, &file, &body, now, &format!("msg_events_{provider}_2"))?;
        let forged = signed_headers(&bad, provider, &file, &body, now, &format!("msg_events_{provider}_3"))?;
        write(format!("{provider}-valid.json"), &apigw_v2(provider, &first, &body, "", now))?;
        write(format!("{provider}-duplicate.json"), &apigw_v2(provider, &again, &body, "", now))?;
        write(format!("{provider}-bad-signature.json"), &apigw_v2(provider, &forged, &body, "", now))?;
        if let Some(query) = good.verifier(provider).and_then(|v| v.sign_query()) {
            // Postback forms that take only a URL carry the token in the query instead.
            let headers = vec![("Content-Type".to_owned(), content_type(&file).to_owned())];
            write(format!("{provider}-valid-query-token.json"), &apigw_v2(provider, &headers, &body, &query, now))?;
        }
        // Through the real pipeline, so the stream event below holds exactly what would be stored.
        let headers = http_headers(&first)?;
        receiver
            .receive(
                provider,
                WebhookRequest { method: &http::Method::POST, headers: &headers, query: None, body: &body },
            )
            .await;
    }

    let records = store
        .events()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let image = layout::dynamodb_json(&layout::EventItem::new(e, now + 90 * 24 * 3600)).map_err(anyhow::Error::msg)?;
            Ok(stream_record(i, "INSERT", image, now))
        })
        .chain(std::iter::once(Ok(stream_record(
            99,
            "MODIFY",
            json!({ "pk": { "S": "OBJ#rainforest#refund#rfd_2sPMefai6yWsyp4MSGUkAo32pp7" }, "sk": { "S": layout::AGGREGATE_SK }, "status": { "S": "succeeded" } }),
            now,
        ))))
        .collect::<anyhow::Result<Vec<Value>>>()?;
    write("fanout-stream.json".into(), &json!({ "Records": records }))?;
    // The operator function's events: what `refund-relay redrive|reprocess --dry-run --stack`
    // sends it (`sam local invoke OperatorFunction -e events/operator-redrive-dry-run.json`).
    for (name, command) in [
        ("redrive", common::operate::Command::Redrive { dry_run: true }),
        ("reprocess", common::operate::Command::Reprocess { provider: None, dry_run: true }),
    ] {
        let request = common::operate::Request { command, resume: None };
        write(format!("operator-{name}-dry-run.json"), &serde_json::to_value(request)?)?;
    }
    // The reconcile function's: EventBridge's scheduled event, which it reads nothing of
    // (`sam local invoke ReconcileFunction -e events/reconcile-schedule.json`).
    let schedule = json!({
        "version": "0", "id": "00000000-0000-0000-0000-000000000000", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-01T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/refund-relay-reconcile"], "detail": {},
    });
    write("reconcile-schedule.json".into(), &schedule)?;
    Ok(written)
}

/// One DynamoDB Streams record (NEW_IMAGE) as Lambda delivers it.
pub fn stream_record(i: usize, name: &str, image: Value, now: i64) -> Value {
    let keys = json!({ "pk": image["pk"], "sk": image["sk"] });
    json!({
        "eventID": format!("event-{i}"),
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": now,
            "Keys": keys,
            "NewImage": image,
            "SequenceNumber": format!("{}", 100_000_000_000u64 + i as u64),
            "SizeBytes": 1024,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/refund-relay-events/stream/2026-11-23T00:00:00.000",
    })
}

pub fn http_headers(pairs: &[(String, String)]) -> anyhow::Result<http::HeaderMap> {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?);
    }
    Ok(h)
}
