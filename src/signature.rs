//! Webhook signatures exactly per the Standard Webhooks specification (standardwebhooks.com):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, with secrets
//! written `whsec_<base64>`; several active secrets (rotation) give several space-separated
//! signatures, any one of which verifies.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use mxc::Secret;

const PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (the specification asks for 24 to 64).
const GENERATED_BYTES: usize = 32;
/// Fewest key bytes accepted.
pub const MIN_KEY_BYTES: usize = 24;

/// A signing secret. `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
    text: Secret,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What is wrong with a secret or a delivery; the texts never quote a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("a webhook secret is `whsec_` followed by base64 of at least {MIN_KEY_BYTES} bytes")]
    BadSecret,
    #[error("webhook-timestamp {0:?} is not unix seconds")]
    BadTimestamp(String),
    #[error("webhook-timestamp is {age_s} s away from now; at most {tolerance_s} s is accepted")]
    OutsideTolerance { age_s: i64, tolerance_s: i64 },
    #[error("no v1 signature in webhook-signature matches the body with any of the {0} secret(s)")]
    NoMatch(usize),
}

impl WebhookSecret {
    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<WebhookSecret, SignatureError> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::BadSecret)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::BadSecret)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SignatureError::BadSecret);
        }
        Ok(WebhookSecret {
            key,
            text: Secret::new(text.trim()),
        })
    }

    /// A new secret of 32 random bytes.
    pub fn generate() -> WebhookSecret {
        let mut key = vec![0u8; GENERATED_BYTES];
        rand::thread_rng().fill_bytes(&mut key);
        let text = Secret::new(format!("{PREFIX}{}", STANDARD.encode(&key)));
        WebhookSecret { key, text }
    }

    /// The `whsec_…` text, to hand to the receiver.
    pub fn expose(&self) -> &str {
        self.text.expose()
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64>` for one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let digest = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(digest))
    }
}

/// The `webhook-signature` header: one signature per active secret, space-separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a delivery as a receiver does: the timestamp within `tolerance_s` of `now` (unless
/// `None`), and at least one `v1` signature made with one of `secrets`. Returns the index of
/// the secret that verified.
pub fn verify(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_and_tolerance_s: Option<(i64, i64)>,
) -> Result<usize, SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(timestamp.chars().take(32).collect()))?;
    if let Some((now, tolerance_s)) = now_and_tolerance_s {
        let age_s = now.saturating_sub(ts);
        // In i128: `i64::MIN.abs()` overflows.
        if i128::from(age_s).abs() > i128::from(tolerance_s) {
            return Err(SignatureError::OutsideTolerance { age_s, tolerance_s });
        }
    }
    let candidates: Vec<Vec<u8>> = signature_header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    for (index, secret) in secrets.iter().enumerate() {
        for candidate in &candidates {
            // Constant-time comparison.
            if secret
                .mac(id, timestamp.trim(), body)
                .verify_slice(candidate)
                .is_ok()
            {
                return Ok(index);
            }
        }
    }
    Err(SignatureError::NoMatch(secrets.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's published test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_published_vector_signs_and_verifies() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(
            verify(
                &[secret],
                ID,
                "1614265330",
                SIGNATURE,
                BODY,
                Some((TIMESTAMP + 10, 300))
            ),
            Ok(0)
        );
    }

    #[test]
    fn with_two_secrets_both_sign_and_either_verifies() {
        let old = WebhookSecret::parse(SECRET).unwrap();
        let new = WebhookSecret::generate();
        let header = signature_header(&[old.clone(), new.clone()], ID, TIMESTAMP, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.starts_with(SIGNATURE));
        // A receiver that knows only one of them still verifies.
        assert_eq!(
            verify(
                std::slice::from_ref(&new),
                ID,
                "1614265330",
                &header,
                BODY,
                None
            ),
            Ok(0)
        );
        assert_eq!(
            verify(
                &[WebhookSecret::generate(), old],
                ID,
                "1614265330",
                &header,
                BODY,
                None
            ),
            Ok(1)
        );
    }

    #[test]
    fn tampering_and_old_timestamps_fail() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let s = std::slice::from_ref(&secret);
        assert_eq!(
            verify(
                s,
                ID,
                "1614265330",
                SIGNATURE,
                br#"{"test": 2432232315}"#,
                None
            ),
            Err(SignatureError::NoMatch(1))
        );
        assert_eq!(
            verify(s, "msg_other", "1614265330", SIGNATURE, BODY, None),
            Err(SignatureError::NoMatch(1))
        );
        assert_eq!(
            verify(s, ID, "1614265331", SIGNATURE, BODY, None),
            Err(SignatureError::NoMatch(1))
        );
        assert_eq!(
            verify(
                s,
                ID,
                "1614265330",
                SIGNATURE,
                BODY,
                Some((TIMESTAMP + 301, 300))
            ),
            Err(SignatureError::OutsideTolerance {
                age_s: 301,
                tolerance_s: 300
            })
        );
        assert!(matches!(
            verify(s, ID, "yesterday", SIGNATURE, BODY, None),
            Err(SignatureError::BadTimestamp(_))
        ));
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SignatureError::BadSecret
        );
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SignatureError::BadSecret
        );
        let generated = WebhookSecret::generate();
        assert!(generated.expose().starts_with("whsec_"));
        assert_eq!(
            WebhookSecret::parse(generated.expose())
                .unwrap()
                .sign(ID, 1, BODY),
            generated.sign(ID, 1, BODY)
        );
        assert_eq!(format!("{generated:?}"), "[redacted]");
        assert!(!SignatureError::BadSecret.to_string().contains("whsec_M"));
    }
}
