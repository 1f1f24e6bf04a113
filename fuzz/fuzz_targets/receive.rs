//! The whole receiving pipeline (`Receiver::receive` over the in-memory store) with an arbitrary
//! provider, content type and body, signed as the provider would (or not at all).
//!
//! Input: one byte (low bits: provider; bit 7: send no credentials), one line (the Content-Type
//! value; an empty line sends none), then the body. Never a panic and never a 5xx (the store
//! cannot fail); unsigned is always refused; signed is never a 401; an accepted event stores the
//! body exactly, credentials' values aside.
#![no_main]

use std::sync::{Arc, OnceLock};

use common::config::{Config, Secrets, dev_secret};
use common::event::Provider;
use common::receive::{Receiver, WebhookRequest};
use common::store::MemoryStore;
use fuzz_support::{NOW, block_on, header_value, lines};
use http::{HeaderMap, HeaderName, Method};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let env = |k: &str| dev_secret(k).map(str::to_owned);
        Config::load(&Provider::ALL, Secrets::Required, &env).expect("development configuration")
    })
}

fn clock() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else { return };
    let Some((values, body)) = lines(data, 1) else { return };
    let provider = Provider::ALL[usize::from(pick & 0x7f) % Provider::ALL.len()];
    let signed = pick & 0x80 == 0;
    let config = config();

    let mut headers = HeaderMap::new();
    if !values[0].is_empty()
        && let Some(v) = header_value(values[0])
    {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    if signed {
        for (k, v) in config.verifier(provider).unwrap().sign(body, NOW, "msg_fuzz") {
            headers.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
    }
    let store = Arc::new(MemoryStore::new());
    let receiver = Receiver::new(config, store.clone()).with_clock(clock);
    let req = WebhookRequest { method: &Method::POST, headers: &headers, query: None, body };
    let receipt = block_on(receiver.receive(provider, req));

    let status = receipt.status.as_u16();
    assert!(!receipt.status.is_server_error(), "{provider}: {status} {}", receipt.body);
    if signed {
        // Authenticated: stored, ignored or held, never refused.
        assert!(!receipt.status.is_client_error(), "{provider}: a correctly signed delivery was refused: {}", receipt.body);
    } else {
        assert!([401, 413].contains(&status), "{provider}: unsigned got {status} {}", receipt.body);
    }
    if receipt.body["status"] == "accepted" {
        let events = store.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw_payload.as_bytes(), &*common::credentials::strip_body(body).body);
        assert_eq!(receipt.body["event_id"], events[0].event_id.as_str());
    } else {
        assert!(store.events().is_empty(), "{provider}: stored but answered {}", receipt.body);
    }
    // Every answer is a JSON object that says what happened.
    assert!(receipt.body.get("status").is_some() || receipt.body.get("error").is_some());
});
