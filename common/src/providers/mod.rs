//! One module per provider: its [`Descriptor`] (everything else in refund-relay reads the
//! provider through it), its payload types, its event-name table and `normalize`.
//!
//! Every adapter gets the raw body only after it was verified, and answers with a normalized
//! event, an `Ignored` reason (a non-refund event we acknowledge so it is not retried forever),
//! or a [`PayloadError`] that names the field at fault.

pub mod conscent;
pub mod foloosi;
pub mod foloosi_api;
pub mod memberful;
pub mod rainforest;
pub mod rainforest_api;
pub mod webforce;

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use crate::event::{Normalized, Proof, Provider};
use crate::money::{Currency, MoneyError};
use crate::verify::{SecretError, SecretLists, SharedToken, Verifier, refs};

/// Builds a provider's verifier from its secret variables: `None` when none of them is set.
pub type BuildVerifier = fn(&SecretLists<'_>) -> Result<Option<Arc<dyn Verifier>>, SecretError>;

/// Parses and normalizes a verified body: the body, its media type, the delivery's query string
/// and the deployment's settings.
pub type Normalize = fn(&[u8], Media, Option<&str>, &ProviderSettings) -> Result<Parsed, PayloadError>;

/// Everything refund-relay knows of one provider, declared in the provider's module. Config,
/// the store's dictionaries, the local runner, the `events` writer, `refund-relay describe` and
/// the tests read a provider only through this (docs/adding-a-provider.md).
pub struct Descriptor {
    /// The environment variables that can hold its proof of origin (any one is enough).
    pub secrets: &'static [SecretVar],
    pub verifier: BuildVerifier,
    /// The weakest proof its verifier can give (a token where one is accepted at all): what a
    /// delivery held before held items recorded their proof is reprocessed with.
    pub proof: Proof,
    /// Whether it posts form-encoded bodies too (every provider may post JSON).
    pub forms: bool,
    /// See [`Provider::normalize`].
    pub normalize: Normalize,
    /// Preset DEFLATE dictionaries of its payloads' shape, by an id unique across providers
    /// (`store::packed`); the last one packs. Optional: without one, payloads pack plain.
    pub dictionaries: &'static [(u8, &'static [u8])],
    /// The fixture (under `tests/fixtures/<provider>/`) that `refund-relay events` signs.
    pub example: &'static str,
    /// What its adapter reads of the deployment beyond its secrets.
    pub settings: &'static [Setting],
}

/// One secret variable, and the development secret that the local runner, `events/` and the
/// tests sign with: published in this repository, so a Lambda function refuses it.
pub struct SecretVar {
    pub var: &'static str,
    /// `None` where the local runner needs no second scheme (Conscent.ai's Basic credentials).
    pub dev: Option<&'static str>,
}

/// The verifier of a provider that signs nothing: a shared token from `var`, presented in the
/// `header` or the `query` parameter.
/// A shared token in `header`, or in the query as `?{query}=` unless `query_var` is `false`.
/// The query is on by default for the providers that use tokens: neither WebforceHQ's postback
/// forms nor Foloosi's webhook settings are documented to send a header of ours.
pub(crate) fn shared_token(
    secrets: &SecretLists<'_>,
    var: &'static str,
    header: &'static str,
    query: &'static str,
    query_var: &'static str,
) -> Result<Option<Arc<dyn Verifier>>, SecretError> {
    let in_query = secrets.flag(query_var)?.unwrap_or(true);
    let tokens = secrets.tokens(var)?;
    let query = in_query.then_some(query);
    Ok(tokens.map(|t| Arc::new(SharedToken::new(header, query, &refs(&t))) as Arc<dyn Verifier>))
}

impl Provider {
    /// Its descriptor. A provider without one does not compile.
    pub fn descriptor(self) -> &'static Descriptor {
        match self {
            Provider::Memberful => &memberful::DESCRIPTOR,
            Provider::Conscent => &conscent::DESCRIPTOR,
            Provider::Rainforest => &rainforest::DESCRIPTOR,
            Provider::Webforce => &webforce::DESCRIPTOR,
            Provider::Foloosi => &foloosi::DESCRIPTOR,
        }
    }

    /// The weakest proof its verifier can give ([`Descriptor::proof`]).
    pub fn proof(self) -> Proof {
        self.descriptor().proof
    }

    /// Its example fixture, under `tests/fixtures/`: `<provider>/<file>`.
    pub fn example_fixture(self) -> String {
        format!("{self}/{}", self.descriptor().example)
    }
}

/// What an adapter made of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Event(Box<Normalized>),
    /// Acknowledged and not stored: an event type refund-relay does not handle.
    Ignored(String),
}

/// The body is not a payload we can store. After authentication every variant holds the delivery
/// ([`crate::held`]) with a reason naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: {source}")]
    Amount { field: &'static str, source: MoneyError },
    #[error("{field}: unknown refund event `{name}`")]
    UnknownRefundEvent { field: &'static str, name: String },
    #[error("{field}: unknown status")]
    UnknownStatus { field: &'static str },
    #[error("{field}: absent; only the provider's API can say")]
    NeedsConfirmation { field: &'static str },
}

impl PayloadError {
    pub fn field(&self) -> &str {
        match self {
            PayloadError::Invalid { field, .. } => field,
            PayloadError::Amount { field, .. }
            | PayloadError::UnknownRefundEvent { field, .. }
            | PayloadError::UnknownStatus { field }
            | PayloadError::NeedsConfirmation { field } => field,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PayloadError::Invalid { field: field.into(), message: message.into() }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        PayloadError::invalid(field, "missing field")
    }
}

/// A deployment setting a provider's adapter reads, from an environment variable. Declared in
/// the provider's descriptor; [`ProviderSettings::load`] reads and checks every one at start.
#[derive(Debug, Clone, Copy)]
pub enum Setting {
    Currency(&'static CurrencySetting),
    Text(&'static TextSetting),
}

/// An ISO 4217 currency code; `default` where the variable is unset.
#[derive(Debug)]
pub struct CurrencySetting {
    pub var: &'static str,
    pub default: Currency,
}

/// Free text; absent where the variable is unset.
#[derive(Debug)]
pub struct TextSetting {
    pub var: &'static str,
}

impl Setting {
    pub fn var(self) -> &'static str {
        match self {
            Setting::Currency(s) => s.var,
            Setting::Text(s) => s.var,
        }
    }
}

/// The values of every provider's settings, read once. An adapter reads its own through the
/// setting it declared, so a setting cannot be read under a name it was not loaded by.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    currencies: std::collections::BTreeMap<&'static str, Currency>,
    texts: std::collections::BTreeMap<&'static str, String>,
}

impl ProviderSettings {
    /// Every provider's settings from `env`; a value that is not valid names its variable.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, (&'static str, String)> {
        let mut settings = ProviderSettings::default();
        for &setting in Provider::ALL.iter().flat_map(|p| p.descriptor().settings) {
            if let Some(value) = env(setting.var()) {
                settings = settings.with(setting, &value).map_err(|e| (setting.var(), e))?;
            }
        }
        Ok(settings)
    }

    /// `setting` set to `value`, or why `value` is not one.
    pub fn with(mut self, setting: Setting, value: &str) -> Result<Self, String> {
        match setting {
            Setting::Currency(s) => {
                self.currencies.insert(s.var, Currency::parse(value).map_err(|e| e.to_string())?);
            }
            Setting::Text(s) => {
                self.texts.insert(s.var, value.to_owned());
            }
        }
        Ok(self)
    }

    pub fn currency(&self, setting: &CurrencySetting) -> Currency {
        self.currencies.get(setting.var).copied().unwrap_or(setting.default)
    }

    pub fn text(&self, setting: &TextSetting) -> Option<String> {
        self.texts.get(setting.var).cloned()
    }
}

/// The body's media type, as far as the adapters care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Form,
}

impl Provider {
    /// Whether this provider may post `media`: JSON always, forms where it says so (WebforceHQ's
    /// postback forms, Foloosi's server callbacks).
    pub fn accepts(self, media: Media) -> bool {
        match media {
            Media::Json => true,
            Media::Form => self.descriptor().forms,
        }
    }

    /// Parses and normalizes a verified body. `query` is the delivery's query string, where a
    /// provider's URL says what its body does not (WebforceHQ's `?event=`).
    pub fn normalize(
        self,
        body: &[u8],
        media: Media,
        query: Option<&str>,
        settings: &ProviderSettings,
    ) -> Result<Parsed, PayloadError> {
        (self.descriptor().normalize)(body, media, query, settings)
    }
}

/// Deserializes `bytes` as JSON, naming the path of the first field at fault. `at` prefixes the
/// path when `bytes` is a nested part of the body.
///
/// A valid body is parsed once without tracking the path ([`parse_fast`]); only a body that fails
/// is parsed again with the tracking, which is what names the field. Both runs use the same
/// deserializer and the same types, so they accept exactly the same bodies and build the same
/// values: the fast run changes the cost of a valid body, never an answer.
pub(crate) fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8], at: &str) -> Result<T, PayloadError> {
    match parse_fast(bytes) {
        Some(value) => Ok(value),
        None => parse_tracked(bytes, at),
    }
}

/// `bytes` as `T` in one pass with nothing tracked (serde_path_to_error records every key it
/// passes, an allocation each), or `None` if anything is wrong: trailing bytes, a duplicate key,
/// nesting beyond serde_json's limit. The caller then asks [`parse_json`] for the error.
pub(crate) fn parse_fast<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
    #[cfg(test)]
    if tests::SLOW_ONLY.get() {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// The slow half of [`parse_json`]: the same parse, tracking the path to name the field at fault.
fn parse_tracked<'de, T: Deserialize<'de>>(bytes: &'de [u8], at: &str) -> Result<T, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner().to_string();
        let path = join_path(at, &e.path().to_string());
        // serde reports a missing field at its parent; name the field itself.
        match inner.strip_prefix("missing field `").and_then(|r| r.split_once('`')) {
            Some((name, _)) => PayloadError::missing(join_path(&path, name)),
            None => PayloadError::invalid(if path.is_empty() { "body".into() } else { path }, strip_position(&inner)),
        }
    })?;
    de.end().map_err(|e| PayloadError::invalid("body", strip_position(&e.to_string())))?;
    Ok(value)
}

/// A form-encoded body as a JSON object of strings, for the same typed parse as a JSON body. A
/// repeated key is an error: JSON bodies refuse one (serde), and a form must not quietly keep the
/// last of two ids either.
pub(crate) fn form_to_json(body: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        if map.insert(k.clone().into_owned(), serde_json::Value::String(v.into_owned())).is_some() {
            let field = if k.is_empty() { "body".to_owned() } else { crate::echo::bounded(&k).into_owned() };
            return Err(PayloadError::invalid(field, "a key appears more than once"));
        }
    }
    serde_json::to_vec(&map).map_err(|e| PayloadError::invalid("body", e.to_string()))
}

/// A nested part of the body kept raw until the envelope says it is worth parsing.
pub(crate) fn parse_raw<T: DeserializeOwned>(raw: &RawValue, at: &str) -> Result<T, PayloadError> {
    parse_json(raw.get().as_bytes(), at)
}

fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty() || a == ".", b.is_empty() || b == ".") {
        (true, true) => String::new(),
        (true, false) => b.to_owned(),
        (false, true) => a.to_owned(),
        (false, false) => format!("{a}.{b}"),
    }
}

/// serde_json appends "at line 1 column 42"; the field path says more and the column leaks
/// nothing useful.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// An event that is not in a provider's table: ignored, unless it looks like a refund, which
/// must not be dropped silently.
pub(crate) fn unhandled(provider: Provider, field: &'static str, name: &str) -> Result<Parsed, PayloadError> {
    let quoted = crate::echo::bounded(name);
    if name.to_ascii_lowercase().contains("refund") {
        Err(PayloadError::UnknownRefundEvent { field, name: quoted.into_owned() })
    } else {
        Ok(Parsed::Ignored(format!("{provider} event `{quoted}` is not handled")))
    }
}

/// A required id: present and not blank.
pub(crate) fn required(value: Option<String>, field: &str) -> Result<String, PayloadError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(PayloadError::invalid(field, "must not be empty")),
        None => Err(PayloadError::missing(field)),
    }
}

/// Providers fill optional fields with `""`; treat those as absent.
pub(crate) fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// An id or amount that providers send as a string or as a number, kept as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) fn text(value: Option<Text>) -> Option<String> {
    present(value.map(|t| t.0))
}

/// A major-units amount kept as its exact JSON text (a number or a string), so no float ever
/// rounds it.
pub(crate) fn amount_text(raw: &RawValue) -> Result<String, &'static str> {
    let s = raw.get().trim();
    if let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Ok(inner.to_owned())
    } else if s.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("must be a number or a decimal string")
    }
}

/// Unix seconds → RFC 3339, for payloads that carry only a timestamp.
pub(crate) fn unix_to_rfc3339(secs: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::{Value, json};

    use super::*;

    thread_local! {
        /// Makes [`parse_fast`] give up, so every parse takes the tracked path.
        pub(super) static SLOW_ONLY: Cell<bool> = const { Cell::new(false) };
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        data: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        id: String,
        amount: i64,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Outer>(br#"{"data":{"amount":1}}"#, "").unwrap_err();
        assert_eq!(e.field(), "data.id");
        let e = parse_json::<Outer>(br#"{"data":{"id":"x","amount":"1"}}"#, "").unwrap_err();
        assert_eq!(e.field(), "data.amount");
        let e = parse_json::<Outer>(br#"{"data":"#, "").unwrap_err();
        assert_eq!(e.field(), "data");
        let e = parse_json::<Outer>(b"not json", "").unwrap_err();
        assert_eq!(e.field(), "body");
        let e = parse_json::<Inner>(br#"{"amount":1}"#, "payload.refund").unwrap_err();
        assert_eq!(e.field(), "payload.refund.id");
        let e = parse_json::<Inner>(br#"{"id":"x","amount":1} trailing"#, "").unwrap_err();
        assert_eq!(e.field(), "body");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse_json::<serde_json::Value>(deep.as_bytes(), "").is_err());
    }

    /// What config, the local runner and `refund-relay events` take from each descriptor is
    /// there: a development secret to start on, variables no other provider claims, the fixture
    /// `events` signs.
    #[test]
    fn every_descriptor_is_complete() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut vars = Vec::new();
        for provider in Provider::ALL {
            let d = provider.descriptor();
            assert!(d.secrets.iter().any(|s| s.dev.is_some()), "{provider}: no development secret");
            vars.extend(d.secrets.iter().map(|s| s.var));
            let example = fixtures.join(provider.as_str()).join(d.example);
            assert!(example.is_file(), "{provider}: no fixture {}", example.display());
            let dev = |var: &str| d.secrets.iter().find(|s| s.var == var).and_then(|s| s.dev).map(str::to_owned);
            vars.extend(d.settings.iter().map(|s| s.var()));
            for setting in d.settings {
                for doc in ["README.md", "template.yaml"] {
                    let text = std::fs::read_to_string(fixtures.join("../..").join(doc)).unwrap();
                    assert!(text.contains(setting.var()), "{provider}: {doc} does not name {}", setting.var());
                }
            }
            let verifier = (d.verifier)(&SecretLists::new(&dev, 300)).unwrap();
            assert!(verifier.is_some(), "{provider}: its development secrets build no verifier");
            assert!((d.verifier)(&SecretLists::new(&|_| None, 300)).unwrap().is_none(), "{provider}");
        }
        let mut unique = vars.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), vars.len(), "a variable claimed twice: {vars:?}");
    }

    #[test]
    fn settings_are_read_through_what_declares_them() {
        let env = |var: &str| match var {
            "MEMBERFUL_CURRENCY" => Some("EUR".to_owned()),
            "MEMBERFUL_ACCOUNT" => Some("acct_1".to_owned()),
            _ => None,
        };
        let settings = ProviderSettings::load(&env).unwrap();
        assert_eq!(settings.currency(&memberful::CURRENCY).code(), "EUR");
        assert_eq!(settings.text(&memberful::ACCOUNT).as_deref(), Some("acct_1"));
        assert_eq!(settings.currency(&webforce::CURRENCY), Currency::USD, "the default where unset");
        assert_eq!(settings.text(&foloosi::MERCHANT), None);
        let bad = |var: &str| (var == "WEBFORCE_CURRENCY").then(|| "DOLLARS".to_owned());
        assert_eq!(ProviderSettings::load(&bad).unwrap_err().0, "WEBFORCE_CURRENCY");
    }

    #[test]
    fn refund_looking_names_are_not_ignored() {
        assert!(matches!(unhandled(Provider::Memberful, "event", "order.purchased"), Ok(Parsed::Ignored(_))));
        assert!(unhandled(Provider::Memberful, "event", "order.partially_refunded").is_err());
    }

    fn leaves(v: &Value, at: &str, out: &mut Vec<String>) {
        out.push(at.to_owned());
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| leaves(v, &format!("{at}/{k}"), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| leaves(v, &format!("{at}/{i}"), out)),
            _ => {}
        }
    }

    /// Every fixture, and every fixture with one member replaced by a value of another type or
    /// removed: the one-pass reading answers exactly what the tracked reading answers (the same
    /// event, the same ignored reason, the same error naming the same field).
    #[test]
    fn the_fast_path_answers_what_the_tracked_path_answers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let settings = ProviderSettings::default();
        let mut compared = 0;
        for provider in Provider::ALL {
            for entry in std::fs::read_dir(dir.join(provider.as_str())).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let fixture: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                let mut pointers = Vec::new();
                leaves(&fixture, "", &mut pointers);
                let mut bodies = vec![fixture.to_string()];
                for pointer in pointers.iter().filter(|p| !p.is_empty()) {
                    for replacement in [json!(null), json!(7), json!("7"), json!(""), json!([]), json!({}), json!(1.5)]
                    {
                        let mut v = fixture.clone();
                        *v.pointer_mut(pointer).unwrap() = replacement;
                        bodies.push(v.to_string());
                    }
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    let mut v = fixture.clone();
                    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
                        m.remove(key);
                        bodies.push(v.to_string());
                    }
                }
                let text = fixture.to_string();
                bodies.push(text.replacen('{', "{\"event\":\"x\",", 1));
                bodies.push(format!("{text} x"));
                bodies.push(text[..text.len() / 2].to_owned());
                for body in bodies {
                    let fast = provider.normalize(body.as_bytes(), Media::Json, None, &settings);
                    SLOW_ONLY.set(true);
                    let slow = provider.normalize(body.as_bytes(), Media::Json, None, &settings);
                    SLOW_ONLY.set(false);
                    assert_eq!(fast, slow, "{provider}: {body}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 1000, "{compared}");
    }
}
