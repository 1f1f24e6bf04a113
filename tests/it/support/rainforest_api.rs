//! A stand-in for Rainforest's API, built from its documented shape (`../shared/provider-apis.md`):
//! `GET /v1/payments?payment_type=REFUND&created_at.start&created_at.end&limit&start_key` and
//! `GET /v1/refunds/{refund_id}`, in Rainforest's envelope, only to the bearer key with the pinned
//! version. Faults can be queued ahead of the list's answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::fake_http::{Reply, Request, serve};

pub const API_KEY: &str = "sbx_apikey_test";
pub const VERSION: &str = "2024-10-16";

/// A queued answer that replaces the next list answer.
#[derive(Clone)]
pub enum Fault {
    RateLimited { retry_after: Option<u64> },
    Status(u16),
    Malformed,
}

#[derive(Default)]
struct State {
    /// Payments as the list gives them (`id`, `parent_id`, `status`, `created_at`, ...).
    payments: Vec<Value>,
    faults: VecDeque<Fault>,
    asked: Vec<String>,
}

pub struct FakeRainforest {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeRainforest {
    pub fn start() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        let url = serve(move |req| answer(&mut s.lock().unwrap(), req));
        FakeRainforest { url, state }
    }

    /// A refund as Rainforest lists it; `created_at` decides the windows it is in.
    pub fn add_refund(&self, id: &str, status: &str, amount: i64, created_at: &str) {
        self.state.lock().unwrap().payments.push(json!({
            "payment_type": "REFUND", "id": id, "parent_id": format!("pyi_of_{id}"),
            "merchant_id": "mid_2sPKnRjN5gT6Zs0cHUFbDoDt1nE", "amount": amount, "currency_code": "USD",
            "status": status, "refusal_code": null, "refusal_desc": null, "source": "EXTERNAL",
            "created_at": created_at, "updated_at": created_at, "metadata": null,
        }));
    }

    pub fn fail_next(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    /// Every request target, in order.
    pub fn asked(&self) -> Vec<String> {
        self.state.lock().unwrap().asked.clone()
    }

    /// The variables that point refund-relay at this fake.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("RAINFOREST_API_KEY", API_KEY.to_owned()),
            ("RAINFOREST_API_VERSION", VERSION.to_owned()),
            ("RAINFOREST_API_URL", self.url.clone()),
        ]
    }
}

fn envelope(data: Value) -> Value {
    json!({ "status": "SUCCESS", "data": data, "errors": null })
}

fn error(status: u16, code: &str) -> Reply {
    Reply::json(
        status,
        &json!({ "status": "ERROR", "data": null, "errors": [{ "field": null, "code": code, "message": code }] }),
    )
}

fn answer(state: &mut State, req: &Request) -> Reply {
    state.asked.push(req.target.clone());
    if req.header("authorization") != Some(&format!("Bearer {API_KEY}")) {
        return error(401, "unauthorized");
    }
    if req.header("rainforest-api-version") != Some(VERSION) {
        return error(400, "api_version");
    }
    if let Some(id) = req.path().strip_prefix("/v1/refunds/") {
        let Some(p) = state.payments.iter().find(|p| p["id"] == id) else { return error(404, "not_found") };
        let mut refund = p.as_object().unwrap().clone();
        refund.remove("payment_type");
        let (id, payin) = (refund.remove("id").unwrap(), refund.remove("parent_id").unwrap());
        refund.insert("refund_id".into(), id);
        refund.insert("payin_id".into(), payin);
        return Reply::json(200, &envelope(Value::Object(refund)));
    }
    if req.path() != "/v1/payments" || req.query("payment_type").as_deref() != Some("REFUND") {
        return error(404, "not_found");
    }
    match state.faults.pop_front() {
        Some(Fault::RateLimited { retry_after }) => {
            let mut reply = error(429, "rate_limited");
            reply.headers.extend(retry_after.map(|s| ("Retry-After", s.to_string())));
            return reply;
        }
        Some(Fault::Status(status)) => return error(status, "server_error"),
        Some(Fault::Malformed) => return Reply { status: 200, headers: Vec::new(), body: "<html>oops</html>".into() },
        None => {}
    }
    // Both bounds inclusive; oldest first as asked; `start_key` is the last id of the page before.
    let at = |v: &Value| v["created_at"].as_str().unwrap_or_default().parse::<common::timestamp::Timestamp>().unwrap();
    let bound = |name| req.query(name).map(|t| t.parse::<common::timestamp::Timestamp>().unwrap());
    let (start, end) = (bound("created_at.start"), bound("created_at.end"));
    let limit: usize = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(1000).min(1000);
    let mut listed: Vec<&Value> =
        state.payments.iter().filter(|p| start.is_none_or(|s| at(p) >= s) && end.is_none_or(|e| at(p) <= e)).collect();
    listed.sort_by_key(|p| (at(p), p["id"].as_str().unwrap_or_default().to_owned()));
    if let Some(key) = req.query("start_key") {
        let after = listed.iter().position(|p| p["id"] == key.as_str()).map_or(0, |i| i + 1);
        listed.drain(..after);
    }
    listed.truncate(limit);
    let last_key = listed.last().map(|p| p["id"].clone()).unwrap_or(Value::Null);
    Reply::json(200, &envelope(json!({ "total_results": -1, "last_key": last_key, "results": listed })))
}
