//! The Standard Webhooks / Svix scheme (Rainforest).
//!
//! Signed content is `{id}.{timestamp}.{body}`; the signature header is a space-separated list
//! of `v1,<base64 HMAC-SHA256>`; the key is the base64 after a secret's `whsec_` prefix. Both the
//! `svix-*` and the `webhook-*` header names carry the same math.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::Mac;
use subtle::ConstantTimeEq;

use super::{Keyed, Presented, Verified, Verifier, VerifyError, header};

/// Signatures a header may carry that we look at; more is a malformed header, not work to do.
const MAX_SIGNATURES: usize = 16;

struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const SVIX: Names = Names { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };
const STANDARD: Names = Names { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };

#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    keys: Vec<Keyed>,
    tolerance_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSecret {
    #[error("secret #{0} is not `whsec_` followed by base64")]
    NotBase64(usize),
    /// `whsec_` alone decodes to no key at all, and then anyone can sign.
    #[error("secret #{0} decodes to {1} bytes; at least {2} are needed")]
    TooShort(usize, usize, usize),
}

impl StandardWebhooks {
    /// Keys are `whsec_` + base64 of at least `min_key_bytes` bytes.
    pub fn new(secrets: &[&str], tolerance_secs: u64, min_key_bytes: usize) -> Result<Self, BadSecret> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let b64 = s.strip_prefix("whsec_").unwrap_or(s);
                let key = B64.decode(b64).map_err(|_| BadSecret::NotBase64(i + 1))?;
                if key.len() < min_key_bytes {
                    return Err(BadSecret::TooShort(i + 1, key.len(), min_key_bytes));
                }
                Ok(Keyed::new(&key))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StandardWebhooks { keys, tolerance_secs })
    }

    fn tag(key: &Keyed, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = key.mac();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    fn names(req: &Presented<'_>) -> &'static Names {
        if req.headers.contains_key(SVIX.id) || !req.headers.contains_key(STANDARD.id) { &SVIX } else { &STANDARD }
    }
}

impl Verifier for StandardWebhooks {
    fn verify(&self, req: &Presented<'_>, now: i64) -> Result<Verified, VerifyError> {
        let names = Self::names(req);
        let id = header(req.headers, names.id)?.ok_or(VerifyError::MissingHeader(names.id))?;
        let ts_text = header(req.headers, names.timestamp)?.ok_or(VerifyError::MissingHeader(names.timestamp))?;
        let sigs = header(req.headers, names.signature)?.ok_or(VerifyError::MissingHeader(names.signature))?;

        // Checked integers: a huge timestamp must be a 401, not an overflow.
        let ts: i64 = ts_text.parse().map_err(|_| VerifyError::MalformedHeader(names.timestamp))?;
        if now.abs_diff(ts) > self.tolerance_secs {
            return Err(VerifyError::OutsideWindow);
        }

        let mut candidates = Vec::new();
        for entry in sigs.split(' ').filter(|e| !e.is_empty()) {
            if candidates.len() == MAX_SIGNATURES {
                return Err(VerifyError::MalformedHeader(names.signature));
            }
            // Only `v1` is a scheme we know; other versions are skipped, never trusted.
            if let Some(b64) = entry.strip_prefix("v1,")
                && let Ok(sig) = B64.decode(b64)
            {
                candidates.push(sig);
            }
        }
        if candidates.is_empty() {
            return Err(VerifyError::MalformedHeader(names.signature));
        }
        for key in &self.keys {
            let expected = Self::tag(key, id, ts_text, req.body);
            if candidates.iter().any(|c| bool::from(c.as_slice().ct_eq(&expected))) {
                return Ok(Verified::signed(Some(id.to_owned())));
            }
        }
        Err(VerifyError::NoMatch)
    }

    fn presented(&self, req: &Presented<'_>) -> bool {
        req.headers.contains_key(SVIX.signature) || req.headers.contains_key(STANDARD.signature)
    }

    fn sign(&self, body: &[u8], now: i64, delivery_id: &str) -> Vec<(String, String)> {
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        let ts = now.to_string();
        let sig = B64.encode(Self::tag(key, delivery_id, &ts, body));
        vec![
            (SVIX.id.to_owned(), delivery_id.to_owned()),
            (SVIX.timestamp.to_owned(), ts),
            (SVIX.signature.to_owned(), format!("v1,{sig}")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn check(scheme: &StandardWebhooks, h: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, VerifyError> {
        scheme.verify(&Presented { headers: h, query: None, body }, now)
    }

    /// The vectors published by Svix and the Standard Webhooks reference libraries.
    #[test]
    fn published_vectors() {
        let vectors = [
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#,
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
            (
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#,
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            ),
        ];
        for (secret, id, ts, body, sig) in vectors {
            let s = StandardWebhooks::new(&[secret], 300, 16).unwrap();
            let signed = s.sign(body.as_bytes(), ts, id);
            assert_eq!(signed[2].1, sig);
            let ts = ts.to_string();
            for prefix in ["svix", "webhook"] {
                let h = headers(&[
                    (&format!("{prefix}-id"), id),
                    (&format!("{prefix}-timestamp"), &ts),
                    (&format!("{prefix}-signature"), sig),
                ]);
                let now = ts.parse().unwrap();
                assert_eq!(check(&s, &h, body.as_bytes(), now).unwrap().delivery_id.as_deref(), Some(id));
                // One changed byte never verifies.
                let mut changed = body.as_bytes().to_vec();
                changed[3] ^= 1;
                assert_eq!(check(&s, &h, &changed, now), Err(VerifyError::NoMatch));
            }
        }
    }

    fn fixture() -> (StandardWebhooks, Vec<(String, String)>) {
        let s = StandardWebhooks::new(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], 300, 16).unwrap();
        let h = s.sign(b"{}", 1_000_000, "msg_1");
        (s, h)
    }

    fn as_map(pairs: &[(String, String)]) -> HeaderMap {
        headers(&pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>())
    }

    #[test]
    fn replay_window_both_ways_and_huge_timestamps() {
        let (s, h) = fixture();
        let h = as_map(&h);
        assert!(check(&s, &h, b"{}", 1_000_300).is_ok());
        assert_eq!(check(&s, &h, b"{}", 1_000_301), Err(VerifyError::OutsideWindow));
        assert_eq!(check(&s, &h, b"{}", 999_699), Err(VerifyError::OutsideWindow));
        let mut huge = h.clone();
        huge.insert("svix-timestamp", "99999999999999999999999".parse().unwrap());
        assert_eq!(check(&s, &huge, b"{}", 0), Err(VerifyError::MalformedHeader("svix-timestamp")));
        huge.insert("svix-timestamp", i64::MIN.to_string().parse().unwrap());
        assert_eq!(check(&s, &huge, b"{}", i64::MAX), Err(VerifyError::OutsideWindow));
    }

    #[test]
    fn several_signatures_and_rotated_keys() {
        let (old, h) = fixture();
        let sig = h[2].1.clone();
        let rotated = StandardWebhooks::new(
            &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            300,
            16,
        )
        .unwrap();
        let mut m = as_map(&h);
        m.insert("svix-signature", format!("v1a,xyz v1,AAAA {sig}").parse().unwrap());
        assert!(old.verify(&Presented { headers: &m, query: None, body: b"{}" }, 1_000_000).is_ok());
        assert!(rotated.verify(&Presented { headers: &m, query: None, body: b"{}" }, 1_000_000).is_ok());
    }

    #[test]
    fn unknown_versions_and_missing_headers_are_refused() {
        let (s, h) = fixture();
        let mut m = as_map(&h);
        let b64 = h[2].1.trim_start_matches("v1,").to_owned();
        m.insert("svix-signature", format!("v0,{b64}").parse().unwrap());
        assert_eq!(check(&s, &m, b"{}", 1_000_000), Err(VerifyError::MalformedHeader("svix-signature")));
        let many = vec!["v1,AAAA"; 1000].join(" ");
        m.insert("svix-signature", many.parse().unwrap());
        assert_eq!(check(&s, &m, b"{}", 1_000_000), Err(VerifyError::MalformedHeader("svix-signature")));
        m.remove("svix-signature");
        assert_eq!(check(&s, &m, b"{}", 1_000_000), Err(VerifyError::MissingHeader("svix-signature")));
        assert_eq!(check(&s, &HeaderMap::new(), b"{}", 1_000_000), Err(VerifyError::MissingHeader("svix-id")));
    }

    #[test]
    fn bad_secrets_are_a_configuration_error() {
        assert_eq!(StandardWebhooks::new(&["whsec_b2s=", "whsec_!!"], 300, 0).unwrap_err(), BadSecret::NotBase64(2));
        assert_eq!(StandardWebhooks::new(&["whsec_b2s="], 300, 16).unwrap_err(), BadSecret::TooShort(1, 2, 16));
        assert_eq!(StandardWebhooks::new(&["whsec_"], 300, 16).unwrap_err(), BadSecret::TooShort(1, 0, 16));
    }
}
