//! v1 webhook signatures: `x-signature` = hex HMAC-SHA256(secret, raw body),
//! the secret chosen by `x-public-key` (CONTRACT §2, the 401 rules).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookSecrets;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the x-signature header is missing")]
    Missing,
    #[error("x-public-key names no configured secret")]
    UnknownKey,
    #[error("the signature does not match the body")]
    Mismatch,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::UnknownKey => "unknown_public_key",
            Self::Mismatch => "signature_invalid",
        }
    }
}

/// Verify a delivery. `Ok(true)`: signed by a configured secret;
/// `Ok(false)`: no secret is configured, so it was not checked.
pub fn verify(
    secrets: Option<&WebhookSecrets>,
    signature: Option<&str>,
    public_key: Option<&str>,
    body: &[u8],
) -> Result<bool, SignatureError> {
    let Some(secrets) = secrets else {
        return Ok(false);
    };
    let signature = signature.ok_or(SignatureError::Missing)?;
    // Hex compares case-insensitively: decode it, then compare bytes in constant time.
    let expected = hex::decode(signature.trim()).map_err(|_| SignatureError::Mismatch)?;
    let candidates: Vec<&str> = match public_key {
        Some(pk) => {
            let chosen: Vec<&str> = secrets
                .entries
                .iter()
                .filter(|(k, _)| k.as_deref() == Some(pk))
                .map(|(_, s)| s.0.as_str())
                .collect();
            if chosen.is_empty() {
                return Err(SignatureError::UnknownKey);
            }
            chosen
        }
        None => secrets.entries.iter().map(|(_, s)| s.0.as_str()).collect(),
    };
    let matches = candidates.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    });
    if matches {
        Ok(true)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The v1 signature of a body: what the platform (and `calltrail simulate`) sends.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event":{"type":"call.initiate"}}"#;

    fn secrets() -> WebhookSecrets {
        "pk_a:sk_a,sk_bare".parse().unwrap()
    }

    #[test]
    fn the_named_pair_verifies_and_only_its_secret_is_tried() {
        let s = secrets();
        assert_eq!(
            verify(Some(&s), Some(&sign("sk_a", BODY)), Some("pk_a"), BODY),
            Ok(true)
        );
        let by_bare = sign("sk_bare", BODY);
        assert_eq!(
            verify(Some(&s), Some(&by_bare), Some("pk_a"), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn without_a_public_key_every_secret_is_tried() {
        let s = secrets();
        assert_eq!(
            verify(Some(&s), Some(&sign("sk_bare", BODY)), None, BODY),
            Ok(true)
        );
        assert_eq!(
            verify(Some(&s), Some(&sign("sk_a", BODY)), None, BODY),
            Ok(true)
        );
    }

    #[test]
    fn refusals_say_why() {
        let s = secrets();
        let good = sign("sk_a", BODY);
        assert_eq!(
            verify(Some(&s), None, None, BODY),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&s), Some(&good), Some("pk_zz"), BODY),
            Err(SignatureError::UnknownKey)
        );
        assert_eq!(
            verify(Some(&s), Some(&good), None, b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&s), Some("zz"), None, BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn uppercase_hex_is_accepted_and_no_secret_means_unchecked() {
        let s = secrets();
        assert_eq!(
            verify(
                Some(&s),
                Some(&sign("sk_a", BODY).to_uppercase()),
                None,
                BODY
            ),
            Ok(true)
        );
        assert_eq!(verify(None, None, None, BODY), Ok(false));
    }
}
