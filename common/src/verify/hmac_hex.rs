//! HMAC-SHA256 of the raw body, hex in one header (Memberful, Conscent.ai).

use hmac::Mac;

use super::{Keyed, Presented, Verified, Verifier, VerifyError, header};

#[derive(Debug, Clone)]
pub struct HmacSha256Hex {
    header: &'static str,
    keys: Vec<Keyed>,
}

impl HmacSha256Hex {
    /// `secrets` must hold at least one secret; the configuration layer guarantees it.
    pub fn new(header: &'static str, secrets: &[&str]) -> Self {
        let keys = secrets.iter().map(|s| Keyed::new(s.as_bytes())).collect();
        HmacSha256Hex { header, keys }
    }
}

impl Verifier for HmacSha256Hex {
    fn verify(&self, req: &Presented<'_>, _now: i64) -> Result<Verified, VerifyError> {
        let sig = header(req.headers, self.header)?.ok_or(VerifyError::MissingHeader(self.header))?;
        // Hex is compared as bytes, so upper- and lower-case digits both verify. Anything but 64
        // hex digits (32 bytes) is malformed.
        let mut tag = [0u8; 32];
        hex::decode_to_slice(sig.trim(), &mut tag).map_err(|_| VerifyError::MalformedHeader(self.header))?;
        for key in &self.keys {
            let mut mac = key.mac();
            mac.update(req.body);
            if mac.verify_slice(&tag).is_ok() {
                return Ok(Verified::signed(None));
            }
        }
        Err(VerifyError::NoMatch)
    }

    fn presented(&self, req: &Presented<'_>) -> bool {
        req.headers.contains_key(self.header)
    }

    fn sign(&self, body: &[u8], _now: i64, _delivery_id: &str) -> Vec<(String, String)> {
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        let mut mac = key.mac();
        mac.update(body);
        vec![(self.header.to_owned(), hex::encode(mac.finalize().into_bytes()))]
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn req<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Presented<'a> {
        Presented { headers, query: None, body }
    }

    fn signed(scheme: &HmacSha256Hex, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in scheme.sign(body, 0, "") {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = HmacSha256Hex::new("x-sig", &["Jefe"]);
        let h = signed(&s, b"what do ya want for nothing?");
        assert_eq!(h["x-sig"], "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn verifies_either_case_and_any_rotated_key() {
        let body = br#"{"a":1}"#;
        let old = HmacSha256Hex::new("x-sig", &["old"]);
        let both = HmacSha256Hex::new("x-sig", &["new", "old"]);
        let mut h = signed(&old, body);
        assert_eq!(both.verify(&req(&h, body), 0), Ok(Verified::signed(None)));
        let upper = h["x-sig"].to_str().unwrap().to_ascii_uppercase();
        h.insert("x-sig", upper.parse().unwrap());
        assert!(both.verify(&req(&h, body), 0).is_ok());
    }

    #[test]
    fn rejects_changed_body_missing_and_malformed() {
        let s = HmacSha256Hex::new("x-sig", &["k"]);
        let h = signed(&s, b"body");
        assert_eq!(s.verify(&req(&h, b"bodY"), 0), Err(VerifyError::NoMatch));
        assert_eq!(s.verify(&req(&HeaderMap::new(), b"body"), 0), Err(VerifyError::MissingHeader("x-sig")));
        let mut bad = HeaderMap::new();
        bad.insert("x-sig", "zz".parse().unwrap());
        assert_eq!(s.verify(&req(&bad, b"body"), 0), Err(VerifyError::MalformedHeader("x-sig")));
        bad.insert("x-sig", "abcd".parse().unwrap());
        assert_eq!(s.verify(&req(&bad, b"body"), 0), Err(VerifyError::MalformedHeader("x-sig")));
    }
}
