//! A shared secret token, for providers that sign nothing (WebforceHQ, Foloosi): in a header,
//! or in the URL's query because postback forms often take only a URL.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Presented, Verified, Verifier, VerifyError, header};

#[derive(Clone)]
pub struct SharedToken {
    header: &'static str,
    query_param: &'static str,
    tokens: Vec<String>,
    /// SHA-256 of each token, hashed once: [`ct_eq_digest`] compares the presented token's hash.
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedToken({}, ?{}=, {} tokens)", self.header, self.query_param, self.tokens.len())
    }
}

/// Constant-time equality of two strings of any lengths: both are hashed first, so neither the
/// position of the first difference nor the length leaks.
pub(crate) fn ct_eq_str(a: &str, b: &str) -> bool {
    ct_eq_digest(&Sha256::digest(a.as_bytes()).into(), b)
}

/// [`ct_eq_str`] with the first string's SHA-256 already computed.
pub(crate) fn ct_eq_digest(a: &[u8; 32], b: &str) -> bool {
    a.ct_eq(Sha256::digest(b.as_bytes()).as_slice()).into()
}

impl SharedToken {
    pub fn new(header: &'static str, query_param: &'static str, tokens: &[&str]) -> Self {
        let digests = tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect();
        SharedToken { header, query_param, tokens: tokens.iter().map(|t| (*t).to_owned()).collect(), digests }
    }

    fn token_in_query<'a>(&self, query: Option<&'a str>) -> Option<std::borrow::Cow<'a, str>> {
        form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == self.query_param).map(|(_, v)| v)
    }
}

impl Verifier for SharedToken {
    fn verify(&self, req: &Presented<'_>, _now: i64) -> Result<Verified, VerifyError> {
        let presented = match header(req.headers, self.header)? {
            Some(h) => std::borrow::Cow::Borrowed(h.trim()),
            None => self.token_in_query(req.query).ok_or(VerifyError::MissingHeader(self.header))?,
        };
        let matched = self.digests.iter().fold(false, |acc, d| acc | ct_eq_digest(d, &presented));
        if matched { Ok(Verified::default()) } else { Err(VerifyError::WrongCredentials) }
    }

    fn presented(&self, req: &Presented<'_>) -> bool {
        req.headers.contains_key(self.header) || self.token_in_query(req.query).is_some()
    }

    fn sign(&self, _body: &[u8], _now: i64, _delivery_id: &str) -> Vec<(String, String)> {
        self.tokens.first().map(|t| vec![(self.header.to_owned(), t.clone())]).unwrap_or_default()
    }

    fn sign_query(&self) -> Option<String> {
        let t = self.tokens.first()?;
        Some(form_urlencoded::Serializer::new(String::new()).append_pair(self.query_param, t).finish())
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    #[test]
    fn header_or_query_any_rotated_token() {
        let s = SharedToken::new("x-webhook-token", "token", &["new-token", "old token"]);
        let mut h = HeaderMap::new();
        let none = Presented { headers: &h, query: None, body: b"" };
        assert_eq!(s.verify(&none, 0), Err(VerifyError::MissingHeader("x-webhook-token")));
        let q = Presented { headers: &h, query: Some("a=1&token=old+token"), body: b"" };
        assert!(s.verify(&q, 0).is_ok());
        let wrong = Presented { headers: &h, query: Some("token=nope"), body: b"" };
        assert_eq!(s.verify(&wrong, 0), Err(VerifyError::WrongCredentials));
        h.insert("x-webhook-token", "new-token".parse().unwrap());
        assert!(s.verify(&Presented { headers: &h, query: None, body: b"" }, 0).is_ok());
        assert_eq!(s.sign_query().unwrap(), "token=new-token");
    }

    #[test]
    fn ct_eq_compares_content() {
        assert!(ct_eq_str("abc", "abc"));
        assert!(!ct_eq_str("abc", "abd"));
        assert!(!ct_eq_str("abc", "abcd"));
    }
}
