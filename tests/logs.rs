//! Logs never carry a secret, a signature, an e-mail address or a phone number: every fixture
//! is run through the pipeline and the fan-out, accepted and refused, and the captured log is
//! searched for each.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::config::DEV_SECRETS;
use common::event::Provider;
use common::fanout::Fanout;
use common::notify::MemoryNotifier;
use support::{Harness, fixture, now, signed};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_signature_email_or_phone_in_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    let notifier = Arc::new(MemoryNotifier::new());
    let fanout = Fanout::new(h.store.clone(), notifier.clone(), support::general_routing(), "Test".into());
    let mut signatures = Vec::new();
    for (provider, rel) in support::all_fixtures() {
        let body = fixture(&rel);
        let headers = signed(&h.config, provider, support::content_type_of(&rel), &body, now(), "msg_log");
        signatures
            .extend(headers.iter().filter(|(k, _)| *k != "content-type").map(|(_, v)| v.to_str().unwrap().to_owned()));
        let receipt = h.send(provider, &headers, None, &body).await;
        if let Some(event) = receipt.stored {
            fanout.deliver(&event).await.unwrap();
        }
        // And refused: a changed byte, and no credentials at all.
        let mut tampered = body.clone();
        tampered[1] ^= 0x20;
        h.send(provider, &headers, None, &tampered).await;
        h.send(provider, &http::HeaderMap::new(), None, &body).await;
    }
    // A store outage logs its error too.
    h.store.set_failing(true);
    h.send_fixture("memberful/order.refunded.json").await;
    assert!(!notifier.sent().is_empty());

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.lines().count() > 50, "the run logged: {} lines", log.lines().count());
    assert!(log.contains("accepted") && log.contains("refused"));
    for (_, secret) in DEV_SECRETS {
        assert!(!log.contains(secret), "a secret leaked");
        assert!(!log.contains(secret.trim_start_matches("whsec_")), "a secret leaked");
    }
    for sig in &signatures {
        let bare = sig.trim_start_matches("v1,");
        assert!(!log.contains(bare), "a signature leaked: {sig}");
    }
    assert!(!log.contains('@'), "an e-mail address leaked");
    for phone in
        ["555-12345", "8948948898", "8383884833", "9598598585", "+1 555 0100", "+971500000001", "+971500000002"]
    {
        assert!(!log.contains(phone), "a phone number leaked: {phone}");
    }
    assert!(Provider::ALL.iter().all(|p| log.contains(p.as_str())));
}
