//! What is never stored: credentials a delivery carries in its headers, its query or its body.
//!
//! Signatures and tokens are checked on the raw bytes first; everything after (the adapters,
//! events, held items, the local store, `GET /held/{id}`) sees the delivery with credentials taken
//! out. Foloosi's plugin callback, for one, posts the merchant's own API key as `secret_key`.

use std::borrow::Cow;

/// Headers and query parameters whose names contain any of these are dropped whole: a header
/// name is the provider's or a proxy's, and guessing wrong only costs a line of context.
const HEADER_WORDS: &[&str] = &["auth", "signature", "token", "secret", "key", "cookie", "password", "session"];

/// A body field is a credential when one of its name's words is one of these...
const FIELD_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "cookie",
    "session",
    "signature",
    "authorization",
    "credential",
    "credentials",
    "apikey",
    "secretkey",
    "privatekey",
    "accesskey",
];
/// ...or a `key` after one of these. Matched by whole words, unlike headers: a body's fields are
/// data, and `idempotency_key`, `last_key` or `auth_code` (Rainforest's) are not credentials.
const KEY_QUALIFIERS: &[&str] = &["api", "secret", "private", "access", "signing"];

/// What replaces a credential's value: the field stays, so whoever reads the body sees that
/// something was there and was taken out.
pub const REMOVED: &str = "[removed]";
const REMOVED_FORM: &[u8] = b"%5Bremoved%5D";

/// Whether a header or query parameter of this name may carry a credential.
pub fn is_secret_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    HEADER_WORDS.iter().any(|w| lower.contains(w))
}

/// Whether a body field of this name is a credential (`secret_key`, `apiKey`, `client_secret`,
/// `access_token`, ...).
pub fn is_credential_field(name: &str) -> bool {
    let words = words(name);
    words.iter().enumerate().any(|(i, w)| {
        FIELD_WORDS.contains(&w.as_str()) || (w == "key" && i > 0 && KEY_QUALIFIERS.contains(&words[i - 1].as_str()))
    })
}

/// `secret_key` → [secret, key]; `apiKey` → [api, key]; `X-Api-Key` → [x, api, key].
pub(crate) fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A body with its credentials' values replaced by [`REMOVED`], and the names of the fields that
/// were. Borrowed, byte for byte, when there was none.
#[derive(Debug, PartialEq, Eq)]
pub struct Stripped<'a> {
    pub body: Cow<'a, [u8]>,
    pub removed: Vec<String>,
}

/// Takes credentials out of a JSON body (at any depth) or, when the body is not JSON, out of
/// form fields. Only their values change; every other byte stays as it came.
pub fn strip_body(body: &[u8]) -> Stripped<'_> {
    let unchanged = || Stripped { body: Cow::Borrowed(body), removed: Vec::new() };
    if !may_name_a_credential(body) {
        return unchanged();
    }
    let stripped =
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() { strip_json(body) } else { strip_form(body) };
    stripped.unwrap_or_else(unchanged)
}

/// A cheap test that lets almost every body through untouched: a credential's name contains one
/// of these, in some case (`%`-escaped form names aside, which [`strip_form`] decodes).
fn may_name_a_credential(body: &[u8]) -> bool {
    const FRAGMENTS: &[&[u8]] = &[
        b"secret",
        b"passw",
        b"passphrase",
        b"token",
        b"cookie",
        b"session",
        b"signature",
        b"authorization",
        b"credential",
        b"key",
    ];
    body.contains(&b'%') || FRAGMENTS.iter().any(|f| body.windows(f.len()).any(|w| w.eq_ignore_ascii_case(f)))
}

fn strip_json(body: &[u8]) -> Option<Stripped<'_>> {
    let mut out = Vec::new();
    let mut removed = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(body, i);
        let after = skip_space(body, end);
        // In valid JSON only an object's key is followed by `:`.
        if body.get(after) == Some(&b':') {
            let name: String = serde_json::from_slice(&body[i..end]).unwrap_or_default();
            if is_credential_field(&name) {
                let start = skip_space(body, after + 1);
                let value_end = value_end(body, start);
                out.extend_from_slice(&body[copied..start]);
                out.push(b'"');
                out.extend_from_slice(REMOVED.as_bytes());
                out.push(b'"');
                copied = value_end;
                removed.push(crate::echo::bounded(&name).into_owned());
                i = value_end;
                continue;
            }
        }
        i = end;
    }
    if removed.is_empty() {
        return None;
    }
    out.extend_from_slice(&body[copied..]);
    Some(Stripped { body: Cow::Owned(out), removed })
}

/// The index just past the string starting at `start` (its opening quote).
fn string_end(body: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    body.len()
}

fn skip_space(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && matches!(body[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index just past the JSON value starting at `start`, in a body already known to be valid.
fn value_end(body: &[u8], start: usize) -> usize {
    match body.get(start) {
        Some(b'"') => string_end(body, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < body.len() {
                match body[i] {
                    b'"' => {
                        i = string_end(body, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            body.len()
        }
        _ => {
            let mut i = start;
            while i < body.len() && !matches!(body[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
            }
            i
        }
    }
}

fn strip_form(body: &[u8]) -> Option<Stripped<'_>> {
    let (out, removed) = replace_form_values(body, REMOVED_FORM, |name, _| is_credential_field(name));
    (!removed.is_empty()).then_some(Stripped { body: Cow::Owned(out), removed })
}

/// A form with the value of each field (one that has a value) that `pick` chooses by its decoded
/// name and value replaced with `marker`, every other byte as it was; and the chosen names.
pub(crate) fn replace_form_values(
    body: &[u8],
    marker: &[u8],
    pick: impl Fn(&str, &str) -> bool,
) -> (Vec<u8>, Vec<String>) {
    let mut out = Vec::with_capacity(body.len());
    let mut picked = Vec::new();
    for (n, pair) in body.split(|b| *b == b'&').enumerate() {
        if n > 0 {
            out.push(b'&');
        }
        let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
        match form_urlencoded::parse(pair).next() {
            Some((k, v)) if name.len() < pair.len() && pick(&k, &v) => {
                out.extend_from_slice(name);
                out.push(b'=');
                out.extend_from_slice(marker);
                picked.push(crate::echo::bounded(&k).into_owned());
            }
            _ => out.extend_from_slice(pair),
        }
    }
    (out, picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(body: &str) -> (String, Vec<String>) {
        let s = strip_body(body.as_bytes());
        (String::from_utf8(s.body.into_owned()).unwrap(), s.removed)
    }

    #[test]
    fn credential_names_are_words_not_fragments() {
        for name in
            ["secret_key", "apiKey", "API_KEY", "client_secret", "access_token", "password", "X-Api-Key", "privateKey"]
        {
            assert!(is_credential_field(name), "{name}");
        }
        for name in
            ["idempotency_key", "last_key", "auth_code", "public_key", "key", "cancel_access", "tokenization_method"]
        {
            assert!(!is_credential_field(name), "{name}");
        }
    }

    /// Foloosi's plugin callback posts the merchant's API key: its value goes, the field and
    /// every other byte stay.
    #[test]
    fn a_form_keeps_every_field_but_a_credentials_value() {
        let (body, removed) = stripped("transaction_no=FL1&secret%5Fkey=sk_live_1&status=closed&token");
        assert_eq!(body, "transaction_no=FL1&secret%5Fkey=%5Bremoved%5D&status=closed&token");
        assert_eq!(removed, ["secret_key"]);
    }

    #[test]
    fn json_loses_only_credential_values_at_any_depth() {
        let raw = r#"{"id":"rfd_1", "idempotency_key":"k1","auth":{"api_key" : {"a":[1,"}"]},"n":2},"x":[{"Password":12.5e3}],"s":"\"secret\":1"}"#;
        let (body, removed) = stripped(raw);
        assert_eq!(
            body,
            r#"{"id":"rfd_1", "idempotency_key":"k1","auth":{"api_key" : "[removed]","n":2},"x":[{"Password":"[removed]"}],"s":"\"secret\":1"}"#
        );
        assert_eq!(removed, ["api_key", "Password"]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["auth"]["n"], 2);
    }

    #[test]
    fn a_body_without_credentials_is_borrowed_as_it_came() {
        for body in [&br#"{"id":"rfd_1","idempotency_key":"k"}"#[..], b"a=1&b=2", b"\xff\xfe", b"{\"secret\":"] {
            let s = strip_body(body);
            assert!(matches!(s.body, Cow::Borrowed(_)) && s.removed.is_empty(), "{body:?}");
        }
    }
}
