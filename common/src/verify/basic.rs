//! HTTP Basic authentication (Conscent.ai's older webhooks: API key as user, API secret as
//! password).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::token::SecretDigests;
use super::{Presented, Verified, Verifier, VerifyError, header};

const AUTHORIZATION: &str = "authorization";

#[derive(Clone)]
pub struct BasicAuth {
    /// `user:password` pairs.
    credentials: Vec<String>,
    digests: SecretDigests,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({} credentials)", self.credentials.len())
    }
}

impl BasicAuth {
    /// Each entry is `user:password`.
    pub fn new(credentials: &[&str]) -> Self {
        BasicAuth {
            credentials: credentials.iter().map(|c| (*c).to_owned()).collect(),
            digests: SecretDigests::new(credentials.iter().copied()),
        }
    }
}

impl Verifier for BasicAuth {
    fn verify(&self, req: &Presented<'_>, _now: i64) -> Result<Verified, VerifyError> {
        let value = header(req.headers, AUTHORIZATION)?.ok_or(VerifyError::MissingHeader(AUTHORIZATION))?;
        let (scheme, b64) = value.trim().split_once(' ').ok_or(VerifyError::MalformedHeader(AUTHORIZATION))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(VerifyError::MalformedHeader(AUTHORIZATION));
        }
        let decoded = B64.decode(b64.trim()).map_err(|_| VerifyError::MalformedHeader(AUTHORIZATION))?;
        let presented = std::str::from_utf8(&decoded).map_err(|_| VerifyError::MalformedHeader(AUTHORIZATION))?;
        if self.digests.matches(presented) { Ok(Verified::default()) } else { Err(VerifyError::WrongCredentials) }
    }

    fn presented(&self, req: &Presented<'_>) -> bool {
        req.headers.contains_key(AUTHORIZATION)
    }

    fn sign(&self, _body: &[u8], _now: i64, _delivery_id: &str) -> Vec<(String, String)> {
        self.credentials
            .first()
            .map(|c| vec![("Authorization".to_owned(), format!("Basic {}", B64.encode(c)))])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn check(s: &BasicAuth, value: Option<&str>) -> Result<Verified, VerifyError> {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert("authorization", v.parse().unwrap());
        }
        s.verify(&Presented { headers: &h, query: None, body: b"" }, 0)
    }

    #[test]
    fn accepts_any_configured_pair() {
        let s = BasicAuth::new(&["key:secret", "key2:secret2"]);
        let v = s.sign(b"", 0, "")[0].1.clone();
        assert_eq!(v, "Basic a2V5OnNlY3JldA==");
        assert!(check(&s, Some(&v)).is_ok());
        assert!(check(&s, Some(&format!("Basic {}", B64.encode("key2:secret2")))).is_ok());
        assert_eq!(check(&s, Some(&format!("Basic {}", B64.encode("key:nope")))), Err(VerifyError::WrongCredentials));
        assert_eq!(check(&s, Some("Bearer abc")), Err(VerifyError::MalformedHeader("authorization")));
        assert_eq!(check(&s, Some("Basic !!!")), Err(VerifyError::MalformedHeader("authorization")));
        assert_eq!(check(&s, None), Err(VerifyError::MissingHeader("authorization")));
    }
}
