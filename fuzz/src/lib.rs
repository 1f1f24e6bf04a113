//! What the fuzz targets share: how an input is cut into header lines and a body, the secrets the
//! seeds are signed with, and the checks every normalized event must pass.
//!
//! Input format of the signature targets (readable, so the seeds in `corpus/` are too): the first
//! lines (split on `\n`, which no header value may contain) are header values or a query string,
//! the rest is the body. `make-corpus` writes seeds in this format, signed with the secrets below.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use common::event::Provider;
use common::money::MAX_MINOR;
use common::providers::{Parsed, PayloadError};
use http::HeaderValue;

/// The clock every signature target runs at; the seeds are signed at this time.
pub const NOW: i64 = 1_700_000_000;
/// The replay window the targets configure (the production default).
pub const TOLERANCE: u64 = 300;
/// HMAC-SHA256 hex scheme's secret (Memberful / Conscent.ai).
pub const HMAC_SECRET: &str = "fuzz-hmac-secret";
/// Standard Webhooks key: `whsec_` + base64 of "fuzz-standard-webhooks-key".
pub const WHSEC: &str = "whsec_ZnV6ei1zdGFuZGFyZC13ZWJob29rcy1rZXk=";
/// Basic credentials (Conscent.ai's alternative).
pub const BASIC_PAIR: &str = "api-key:api-secret";
/// Shared token (WebforceHQ, Foloosi); at least 16 characters as the configuration demands.
pub const TOKEN: &str = "fuzz-token-0123456789";

/// The first `n` lines of `data` and the rest; `None` when `data` has fewer than `n` newlines.
pub fn lines(data: &[u8], n: usize) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        let i = rest.iter().position(|b| *b == b'\n')?;
        out.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    Some((out, rest))
}

/// A header value as an HTTP front would hand it over: `None` for bytes no front accepts
/// (control characters), which then simply are not sent.
pub fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// What must hold of every adapter's answer, whatever the body: an event has a non-blank id, a
/// known event type, and an amount that is an exact, bounded, non-negative number of minor
/// units of a real ISO 4217 currency; an error names a field.
pub fn check_normalized(provider: Provider, result: &Result<Parsed, PayloadError>) {
    match result {
        Ok(Parsed::Event(n)) => {
            assert!(!n.object_id.trim().is_empty(), "{provider}: blank object id");
            assert!(!n.event_type.is_empty(), "{provider}: empty event type");
            if let Some(m) = &n.amount {
                assert!((0..=MAX_MINOR).contains(&m.minor), "{provider}: amount {} out of bounds", m.minor);
                // Its currency is a `money::Currency`: an ISO 4217 code with a minor unit.
            }
        }
        Ok(Parsed::Ignored(reason)) => assert!(!reason.is_empty()),
        Err(e) => assert!(!e.field().is_empty(), "{provider}: error without a field: {e}"),
    }
}

/// Polls a future that never waits (the in-memory store answers at once) to its end.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory pipeline never waits"),
    }
}
