//! A shared secret token, for providers that sign nothing (WebforceHQ, Foloosi): in a header,
//! or in the URL's query because postback forms often take only a URL.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Presented, Verified, Verifier, VerifyError, header};

#[derive(Clone)]
pub struct SharedToken {
    header: &'static str,
    /// `None`: the query is not read (the provider sends the header).
    query_param: Option<&'static str>,
    tokens: Vec<String>,
    digests: SecretDigests,
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let query = self.query_param.unwrap_or("(off)");
        write!(f, "SharedToken({}, ?{query}=, {} tokens)", self.header, self.tokens.len())
    }
}

/// The SHA-256 of each configured secret (several while one is rotated), hashed once at start.
/// Comparing hashes in constant time tells neither the position of the first difference nor
/// the length of a secret.
#[derive(Clone)]
pub(crate) struct SecretDigests(Vec<[u8; 32]>);

impl SecretDigests {
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        SecretDigests(secrets.into_iter().map(|s| Sha256::digest(s.as_bytes()).into()).collect())
    }

    /// Whether `presented` is one of the secrets. Every entry is compared, so timing does not
    /// tell which one (or whether any) matched.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let presented = Sha256::digest(presented.as_bytes());
        self.0.iter().fold(false, |acc, d| acc | bool::from(d.ct_eq(presented.as_slice())))
    }
}

impl SharedToken {
    pub fn new(header: &'static str, query_param: Option<&'static str>, tokens: &[&str]) -> Self {
        let digests = SecretDigests::new(tokens.iter().copied());
        SharedToken { header, query_param, tokens: tokens.iter().map(|t| (*t).to_owned()).collect(), digests }
    }

    fn token_in_query<'a>(&self, query: Option<&'a str>) -> Option<std::borrow::Cow<'a, str>> {
        let param = self.query_param?;
        form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == param).map(|(_, v)| v)
    }
}

impl Verifier for SharedToken {
    fn verify(&self, req: &Presented<'_>, _now: i64) -> Result<Verified, VerifyError> {
        let presented = match header(req.headers, self.header)? {
            Some(h) => std::borrow::Cow::Borrowed(h.trim()),
            None => self.token_in_query(req.query).ok_or(VerifyError::MissingHeader(self.header))?,
        };
        if self.digests.matches(&presented) { Ok(Verified::default()) } else { Err(VerifyError::WrongCredentials) }
    }

    fn presented(&self, req: &Presented<'_>) -> bool {
        req.headers.contains_key(self.header) || self.token_in_query(req.query).is_some()
    }

    fn sign(&self, _body: &[u8], _now: i64, _delivery_id: &str) -> Vec<(String, String)> {
        self.tokens.first().map(|t| vec![(self.header.to_owned(), t.clone())]).unwrap_or_default()
    }

    fn sign_query(&self) -> Option<String> {
        let (param, t) = (self.query_param?, self.tokens.first()?);
        Some(form_urlencoded::Serializer::new(String::new()).append_pair(param, t).finish())
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    #[test]
    fn header_or_query_any_rotated_token() {
        let s = SharedToken::new("x-webhook-token", Some("token"), &["new-token", "old token"]);
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

    /// With the query switched off (`<PROVIDER>_QUERY_TOKEN=false`), a token in the URL, where
    /// proxies and logs see it, proves nothing.
    #[test]
    fn a_token_in_the_query_is_refused_when_the_query_is_off() {
        let s = SharedToken::new("x-webhook-token", None, &["new-token"]);
        let h = HeaderMap::new();
        let q = Presented { headers: &h, query: Some("token=new-token"), body: b"" };
        assert_eq!(s.verify(&q, 0), Err(VerifyError::MissingHeader("x-webhook-token")));
        assert!(!s.presented(&q));
        assert_eq!(s.sign_query(), None);
    }

    #[test]
    fn digests_match_only_a_whole_configured_secret() {
        let d = SecretDigests::new(["abc", "rotated"]);
        assert!(d.matches("abc"));
        assert!(d.matches("rotated"));
        assert!(!d.matches("abd"));
        assert!(!d.matches("abcd"));
        assert!(!d.matches("ab"));
        assert!(!d.matches(""));
        assert!(!SecretDigests::new([]).matches(""));
    }
}
