//! A stand-in for Foloosi's transaction-detail API, which the tests cannot reach: a small HTTP
//! server on 127.0.0.1 answering `GET /transaction-detail/{transaction_no}` in the documented
//! shape (`{"message": …, "data": {"status", "optional1", "transaction_amount", …}}`), and only
//! to the configured `secret_key` header.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The merchant secret key the fake accepts.
pub const SECRET_KEY: &str = "test-foloosi-secret-key";

/// What the fake answers for one transaction.
#[derive(Clone)]
pub enum Answer {
    /// 200 with this `data`.
    Detail(serde_json::Value),
    /// This HTTP status with an error body.
    Status(u16),
    /// Waits this long, then answers 200 (a slow API).
    Slow(Duration, serde_json::Value),
}

pub struct FakeFoloosi {
    pub url: String,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    /// Every transaction number asked for, in order.
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl FakeFoloosi {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (a, q) = (answers.clone(), asked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (a, q) = (a.clone(), q.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    reader.read_line(&mut request_line).unwrap_or_default();
                    let mut key = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("secret_key")
                        {
                            key = Some(v.trim().to_owned());
                        }
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
                    let no = path.rsplit('/').next().unwrap_or_default().to_owned();
                    q.lock().unwrap().push(no.clone());
                    let answer = if key.as_deref() != Some(SECRET_KEY) {
                        Answer::Status(401)
                    } else {
                        a.lock().unwrap().get(&no).cloned().unwrap_or(Answer::Status(404))
                    };
                    let (status, body) = match answer {
                        Answer::Detail(data) => {
                            (200, serde_json::json!({ "message": "Transaction detail", "data": data }))
                        }
                        Answer::Status(s) => (s, serde_json::json!({ "message": "error" })),
                        Answer::Slow(wait, data) => {
                            std::thread::sleep(wait);
                            (200, serde_json::json!({ "message": "Transaction detail", "data": data }))
                        }
                    };
                    let body = body.to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        FakeFoloosi { url, answers, asked }
    }

    pub fn answer(&self, transaction_no: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(transaction_no.to_owned(), answer);
    }

    /// The variables that point refund-relay at this fake.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [("FOLOOSI_SECRET_KEY", SECRET_KEY.to_owned()), ("FOLOOSI_API_URL", self.url.clone())]
    }
}

/// `data` for a transaction: a status, the merchant's order id, an amount in AED.
pub fn detail(status: &str, order_id: &str, amount: &str) -> serde_json::Value {
    serde_json::json!({
        "transaction_no": "ignored",
        "status": status,
        "optional1": order_id,
        "transaction_amount": amount,
        "transaction_currency": "AED",
    })
}
