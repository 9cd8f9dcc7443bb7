//! Real HS256 JWTs, as the Security API issues them: `iat`, `exp` and a `domain.id` claim.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a bearer token was refused; the text goes into the 401 body.
#[derive(Debug, PartialEq)]
pub enum Rejection {
    Missing,
    Malformed,
    BadSignature,
    Expired,
}

impl Rejection {
    pub fn message(&self) -> &'static str {
        match self {
            Rejection::Missing => "Full authentication is required: missing bearer token",
            Rejection::Malformed => "JWT is malformed",
            Rejection::BadSignature => "JWT signature does not match",
            Rejection::Expired => "JWT expired",
        }
    }
}

pub struct JwtKey {
    key: Vec<u8>,
}

impl JwtKey {
    pub fn new(key: Vec<u8>) -> Self {
        JwtKey { key }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    pub fn issue(&self, subject: &str, domain_id: &str, iat: i64, exp: i64, jti: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "sub": subject,
            "domain": { "id": domain_id },
            "iat": iat,
            "exp": exp,
            "jti": jti.to_string(),
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Checks signature and expiry; `max_age` rejects tokens older than it even before `exp`
    /// (the "JWT expires early" fault).
    pub fn verify(&self, token: &str, now: i64, max_age: Option<i64>) -> Result<(), Rejection> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejection::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Rejection::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| Rejection::BadSignature)?;
        let claims: serde_json::Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(Rejection::Malformed)?;
        let iat = claims["iat"].as_i64().ok_or(Rejection::Malformed)?;
        let exp = claims["exp"].as_i64().ok_or(Rejection::Malformed)?;
        if now >= exp || max_age.is_some_and(|age| now - iat >= age) {
            return Err(Rejection::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let key = JwtKey::new(b"k".to_vec());
        let t = key.issue("sim", "1", 1000, 1600, 1);
        assert!(key.verify(&t, 1599, None).is_ok());
        assert_eq!(key.verify(&t, 1600, None).err(), Some(Rejection::Expired));
        assert_eq!(
            key.verify(&t, 1010, Some(10)).err(),
            Some(Rejection::Expired)
        );
    }

    #[test]
    fn forged_tokens_are_refused() {
        let t = JwtKey::new(b"k".to_vec()).issue("sim", "1", 1000, 1600, 1);
        let other = JwtKey::new(b"other".to_vec());
        assert_eq!(
            other.verify(&t, 1001, None).err(),
            Some(Rejection::BadSignature)
        );
        assert_eq!(
            other.verify("abc", 1001, None).err(),
            Some(Rejection::Malformed)
        );
    }
}
