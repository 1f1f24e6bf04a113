//! Proof of origin: one small type per signature scheme, behind [`Verifier`].
//!
//! Every scheme checks the raw body bytes before anything parses them, compares in constant
//! time, and holds a list of keys so a secret can be rotated without downtime (any one may match).
//! Each scheme can also `sign`, which the CLI, the `events/` generator and the tests use to make
//! exactly the headers a provider sends.

mod basic;
mod hmac_hex;
mod standard_webhooks;
mod token;

pub use basic::BasicAuth;
pub use hmac_hex::HmacSha256Hex;
pub use standard_webhooks::StandardWebhooks;
pub use token::SharedToken;

use std::fmt;

use hmac::{Hmac, KeyInit};
use http::HeaderMap;
use sha2::Sha256;

/// Replay window for schemes that sign a timestamp, per the Standard Webhooks spec.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// What a verifier needs of a request: headers, the query string (tokens may ride in the URL)
/// and the exact body bytes.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// What a successful verification learned about the delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The provider's delivery id (`svix-id` / `webhook-id`), where the scheme has one.
    pub delivery_id: Option<String>,
    /// How strong the proof was: a signature over the body, or a shared credential.
    pub proof: crate::event::Proof,
}

impl Verified {
    /// A signature over the body matched.
    pub fn signed(delivery_id: Option<String>) -> Self {
        Verified { delivery_id, proof: crate::event::Proof::Signature }
    }
}

/// Why a request was not accepted as the provider's. Every variant is a 401; the names end up in
/// logs, never the secrets or the signatures themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    #[error("malformed `{0}` header")]
    MalformedHeader(&'static str),
    #[error("no credentials: expected one of {0}")]
    NoCredentials(&'static str),
    #[error("no signature matched")]
    NoMatch,
    #[error("wrong credentials")]
    WrongCredentials,
    #[error("timestamp is outside the replay window")]
    OutsideWindow,
}

pub trait Verifier: Send + Sync + fmt::Debug {
    /// Checks `req` at unix time `now`.
    fn verify(&self, req: &Presented<'_>, now: i64) -> Result<Verified, VerifyError>;

    /// Whether the request carries this scheme's credentials at all (to choose among
    /// alternatives, as Conscent.ai's signature-or-Basic).
    fn presented(&self, req: &Presented<'_>) -> bool;

    /// The headers a provider would send with `body` at `now`, signed with the first key.
    /// `delivery_id` is used by schemes that sign one.
    fn sign(&self, body: &[u8], now: i64, delivery_id: &str) -> Vec<(String, String)>;

    /// The query string a provider would append to the URL, for schemes that put a token there.
    fn sign_query(&self) -> Option<String> {
        None
    }
}

/// An HMAC-SHA256 key made ready once: the state after the key's inner and outer blocks, which
/// every message under that key starts from. Cloning it per request saves hashing the key twice.
/// Debug never prints it (it is as secret as the key).
#[derive(Clone)]
pub(crate) struct Keyed(Hmac<Sha256>);

impl Keyed {
    pub(crate) fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length, so this cannot fail.
        Keyed(<Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length"))
    }

    /// A fresh MAC under this key.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

impl fmt::Debug for Keyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Splits a configured secret list (`a,b`) into its entries; blank entries are dropped.
pub fn split_secrets(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// Tokens for providers that sign nothing must be hard to guess.
pub const MIN_TOKEN_LEN: usize = 16;

/// HMAC and Standard Webhooks keys shorter than this are refused: a short key is guessable, and
/// an empty one (`whsec_` alone) lets anyone sign.
pub const MIN_KEY_BYTES: usize = 16;

/// Standard Webhooks (Svix) keys decode to 24 to 64 bytes: the spec's minimum.
pub const MIN_STANDARD_WEBHOOKS_KEY_BYTES: usize = 24;

/// The shortest Basic password accepted: one that could be guessed is no proof of origin.
pub const MIN_BASIC_PASSWORD_LEN: usize = 16;

/// A configured secret that cannot be used: which variable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SecretError {
    pub var: &'static str,
    pub message: String,
}

/// A provider's secret variables as its verifier is built from them (each provider's
/// `Descriptor::verifier`): every variable a list, `old,new` while a secret rotates, and
/// nothing accepted that cannot be a real secret.
pub struct SecretLists<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    /// How old a signed timestamp may be.
    pub tolerance_secs: u64,
}

impl<'a> SecretLists<'a> {
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>, tolerance_secs: u64) -> Self {
        SecretLists { env, tolerance_secs }
    }

    /// `var`'s entries, or `None` when it holds none.
    pub fn list(&self, var: &str) -> Option<Vec<String>> {
        (self.env)(var)
            .map(|v| split_secrets(&v).into_iter().map(str::to_owned).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
    }

    /// HMAC keys, each at least [`MIN_KEY_BYTES`].
    pub fn keys(&self, var: &'static str) -> Result<Option<Vec<String>>, SecretError> {
        self.checked(
            var,
            |k| k.len() >= MIN_KEY_BYTES,
            || format!("each secret must be at least {MIN_KEY_BYTES} bytes"),
        )
    }

    /// A switch: `true` or `false` (case ignored), `None` when unset.
    pub fn flag(&self, var: &'static str) -> Result<Option<bool>, SecretError> {
        match (self.env)(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" => Ok(Some(true)),
            Some(v) if v == "false" => Ok(Some(false)),
            Some(_) => Err(SecretError { var, message: "must be true or false".into() }),
        }
    }

    /// Shared tokens, each at least [`MIN_TOKEN_LEN`] characters.
    pub fn tokens(&self, var: &'static str) -> Result<Option<Vec<String>>, SecretError> {
        self.checked(
            var,
            |t| t.len() >= MIN_TOKEN_LEN,
            || format!("each token must be at least {MIN_TOKEN_LEN} characters"),
        )
    }

    /// `var`'s entries if every one passes `ok`.
    pub fn checked(
        &self,
        var: &'static str,
        ok: impl Fn(&str) -> bool,
        message: impl FnOnce() -> String,
    ) -> Result<Option<Vec<String>>, SecretError> {
        match self.list(var) {
            Some(entries) if !entries.iter().all(|e| ok(e)) => Err(SecretError { var, message: message() }),
            other => Ok(other),
        }
    }
}

/// The entries of a secret list as the verifiers' constructors take them.
pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The scheme for a provider that offers alternatives: the first whose credentials the request
/// carries decides. No credentials at all is a 401, never a pass.
#[derive(Debug)]
pub struct FirstPresented {
    schemes: Vec<Box<dyn Verifier>>,
    expected: &'static str,
}

impl FirstPresented {
    /// `expected` names the headers a caller may use, for the 401's message.
    pub fn new(schemes: Vec<Box<dyn Verifier>>, expected: &'static str) -> Self {
        FirstPresented { schemes, expected }
    }
}

impl Verifier for FirstPresented {
    fn verify(&self, req: &Presented<'_>, now: i64) -> Result<Verified, VerifyError> {
        match self.schemes.iter().find(|s| s.presented(req)) {
            Some(scheme) => scheme.verify(req, now),
            None => Err(VerifyError::NoCredentials(self.expected)),
        }
    }

    fn presented(&self, req: &Presented<'_>) -> bool {
        self.schemes.iter().any(|s| s.presented(req))
    }

    fn sign(&self, body: &[u8], now: i64, delivery_id: &str) -> Vec<(String, String)> {
        self.schemes.first().map(|s| s.sign(body, now, delivery_id)).unwrap_or_default()
    }

    fn sign_query(&self) -> Option<String> {
        self.schemes.first().and_then(|s| s.sign_query())
    }
}

/// The first value of `name`, as text; a non-text value is malformed.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| VerifyError::MalformedHeader(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_lists_split_on_commas() {
        assert_eq!(split_secrets(" a, b ,,c"), vec!["a", "b", "c"]);
        assert!(split_secrets(" , ").is_empty());
    }

    #[test]
    fn keys_never_print() {
        assert_eq!(format!("{:?}", Keyed::new(b"hunter2")), "Key(<redacted>)");
    }
}
