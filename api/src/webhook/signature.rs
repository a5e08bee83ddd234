//! Webhook signatures (CONTRACT §2, the 401 rules). v1: `x-signature` = hex
//! HMAC-SHA256(secret, raw body), the secret chosen by `x-public-key`. v2:
//! `X-Mirai-Signature: t=<unix seconds>,v1=<hex>` with hex =
//! HMAC-SHA256(secret, "<t>.<raw body>"), any configured secret, and `t`
//! within the tolerance of now (a replayed delivery is refused).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::WebhookSecrets;

/// The v2 signature header.
pub const V2_HEADER: &str = "x-mirai-signature";

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the x-signature header is missing")]
    Missing,
    #[error("the X-Mirai-Signature header is missing (v2 deliveries are signed with it)")]
    MissingV2,
    #[error("X-Mirai-Signature must read `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("x-public-key names no configured secret")]
    UnknownKey,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error(
        "the signature's timestamp is {skew} s from now, more than the tolerance of {tolerance} s (a replay, or a wrong clock)"
    )]
    OutsideTolerance { skew: u64, tolerance: u64 },
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing | Self::MissingV2 => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::UnknownKey => "unknown_public_key",
            Self::Mismatch => "signature_invalid",
            Self::OutsideTolerance { .. } => "signature_timestamp_out_of_tolerance",
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

/// Verify a v2 delivery: `header` is `X-Mirai-Signature`, `now` Unix
/// seconds. Every configured secret is tried (rotation), every `v1=` entry
/// of the header compared in constant time; only a genuine signature is
/// then checked for age, so the window error means "signed, but too old or
/// too new". `Ok(false)`: no secret is configured, nothing was checked.
pub fn verify_v2(
    secrets: Option<&WebhookSecrets>,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<bool, SignatureError> {
    let Some(secrets) = secrets else {
        return Ok(false);
    };
    let header = header.ok_or(SignatureError::MissingV2)?;
    let (t, signatures) = parse_v2_header(header)?;
    // One MAC per secret, compared with every entry in constant time: the
    // number of entries is the sender's choice, the hashing must not be.
    let matches = secrets.entries.iter().any(|(_, secret)| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        signatures.iter().fold(false, |hit, expected| {
            hit | bool::from(tag.as_slice().ct_eq(expected))
        })
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let at: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    let skew = now.abs_diff(at);
    if skew > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance {
            skew,
            tolerance: tolerance.as_secs(),
        });
    }
    Ok(true)
}

/// `t=<digits>,v1=<hex>[,v1=<hex>…]`, other keys ignored: the timestamp as
/// sent (it is signed as text) and the signatures. Hex compares
/// case-insensitively; an entry that is not hex matches nothing (it is
/// ignored, so it cannot hide a good one beside it).
/// `v1=` entries accepted in one header: a rotation needs two or three.
const MAX_V2_SIGNATURES: usize = 8;

fn parse_v2_header(header: &str) -> Result<(&str, Vec<Vec<u8>>), SignatureError> {
    let mut t = None;
    let mut entries = 0;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => {
                entries += 1;
                if entries > MAX_V2_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                signatures.extend(hex::decode(value).ok());
            }
            _ => {}
        }
    }
    match t {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && entries > 0 => {
            Ok((t, signatures))
        }
        _ => Err(SignatureError::Malformed),
    }
}

/// The v2 `X-Mirai-Signature` of a body sent at `t` (Unix seconds): what the
/// platform (and `calltrail simulate --format v2`) sends.
pub fn sign_v2(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
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

    /// The fixtures' own recipe (`openssl dgst -sha256 -hmac …` of the first
    /// happy-path line without its newline), computed outside calltrail: a
    /// wrong HMAC in `sign` and `verify` alike would pass every other test.
    #[test]
    fn the_fixtures_known_answer_verifies() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/v1/happy-path.jsonl");
        let lines = std::fs::read(path).unwrap();
        let body = lines.split(|b| *b == b'\n').next().unwrap();
        let known = "569adeef2390b6ef070b4ff87b518fc19275523f6c54d3747919c9c182652be7";
        assert_eq!(sign("sk_test_0123456789abcdef", body), known);
        let s: WebhookSecrets = "pk_test:sk_test_0123456789abcdef".parse().unwrap();
        assert_eq!(
            verify(Some(&s), Some(known), Some("pk_test"), body),
            Ok(true)
        );
        assert_eq!(
            verify(Some(&s), Some(&known.to_uppercase()), Some("pk_test"), body),
            Ok(true),
            "hex case does not matter"
        );
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

    /// The platform's published v2 test vector.
    const VECTOR_SECRET: &str = "whsec_7d4f1a09c2e58b36a1f0d7c93b2e64a8";
    const VECTOR_BODY: &[u8] = br#"{"id":"evt_01JZQ9C5N9P4R7S3T6V8W2X4YB","type":"call.completed","created_at":"2026-07-26T09:16:38Z","data":{"call":{"id":"call_01JZQ9B4M8N3P6R2S5T7V9W1YA","status":"completed"}}}"#;
    const VECTOR_T: i64 = 1_785_057_398;
    const VECTOR_HEADER: &str =
        "t=1785057398,v1=771bca27e1647dfbe59ff5d8f32d9de69be246f6e604c05bddcbaefd8604ccb3";
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn v2(header: &str, body: &[u8], now: i64) -> Result<bool, SignatureError> {
        let s: WebhookSecrets = format!("pk_a:sk_a,{VECTOR_SECRET}").parse().unwrap();
        verify_v2(Some(&s), Some(header), body, now, FIVE_MINUTES)
    }

    #[test]
    fn the_published_v2_test_vector_verifies_and_a_flipped_byte_does_not() {
        assert_eq!(VECTOR_BODY.len(), 177);
        assert_eq!(sign_v2(VECTOR_SECRET, VECTOR_T, VECTOR_BODY), VECTOR_HEADER);
        assert_eq!(v2(VECTOR_HEADER, VECTOR_BODY, VECTOR_T), Ok(true));
        for i in [0, 88, 176] {
            let mut flipped = VECTOR_BODY.to_vec();
            flipped[i] ^= 0x01;
            assert_eq!(
                v2(VECTOR_HEADER, &flipped, VECTOR_T),
                Err(SignatureError::Mismatch),
                "byte {i}"
            );
        }
        let other_t = VECTOR_HEADER.replace("t=1785057398", "t=1785057399");
        assert_eq!(
            v2(&other_t, VECTOR_BODY, VECTOR_T),
            Err(SignatureError::Mismatch),
            "the timestamp is signed too"
        );
    }

    #[test]
    fn the_v2_window_is_inclusive_at_the_tolerance_both_ways() {
        for (offset, ok) in [(0, true), (299, true), (300, true), (301, false)] {
            for now in [VECTOR_T + offset, VECTOR_T - offset] {
                let got = v2(VECTOR_HEADER, VECTOR_BODY, now);
                if ok {
                    assert_eq!(got, Ok(true), "now = t{offset:+}");
                } else {
                    assert_eq!(
                        got,
                        Err(SignatureError::OutsideTolerance {
                            skew: offset as u64,
                            tolerance: 300
                        })
                    );
                }
            }
        }
    }

    #[test]
    fn v2_tries_every_secret_and_every_v1_entry() {
        let s: WebhookSecrets = "pk_a:sk_a,whsec_old,whsec_new".parse().unwrap();
        let now = VECTOR_T;
        for secret in ["sk_a", "whsec_old", "whsec_new"] {
            let header = sign_v2(secret, now, VECTOR_BODY);
            assert_eq!(
                verify_v2(Some(&s), Some(&header), VECTOR_BODY, now, FIVE_MINUTES),
                Ok(true),
                "{secret}"
            );
        }
        let stranger = sign_v2("whsec_stranger", now, VECTOR_BODY);
        assert_eq!(
            verify_v2(Some(&s), Some(&stranger), VECTOR_BODY, now, FIVE_MINUTES),
            Err(SignatureError::Mismatch)
        );
        // Two signatures, as a sender rotating its own secret sends them, in
        // either order, hex in either case.
        let hex_of = |h: &str| h.split_once(",v1=").unwrap().1.to_owned();
        let (theirs, ours) = (
            hex_of(&stranger),
            hex_of(&sign_v2("whsec_new", now, VECTOR_BODY)),
        );
        for header in [
            format!("t={now},v1={ours},v1={theirs}"),
            format!("t={now}, v1={theirs}, v1={}", ours.to_uppercase()),
        ] {
            assert_eq!(
                verify_v2(Some(&s), Some(&header), VECTOR_BODY, now, FIVE_MINUTES),
                Ok(true),
                "{header}"
            );
        }
    }

    #[test]
    fn v2_refusals_say_why() {
        assert_eq!(
            verify_v2(Some(&secrets()), None, VECTOR_BODY, 0, FIVE_MINUTES),
            Err(SignatureError::MissingV2)
        );
        for header in [
            "",
            "v1=00",
            "t=1785057398",
            "t=soon,v1=00",
            "t=-5,v1=00",
            "771bca27",
        ] {
            assert_eq!(
                v2(header, VECTOR_BODY, VECTOR_T),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
        assert_eq!(
            v2("t=1785057398,v1=zz", VECTOR_BODY, VECTOR_T),
            Err(SignatureError::Mismatch)
        );
        let beside_junk = VECTOR_HEADER.replace(",v1=", ",v1=zz,v1=");
        assert_eq!(v2(&beside_junk, VECTOR_BODY, VECTOR_T), Ok(true));
        assert_eq!(
            verify_v2(None, None, VECTOR_BODY, 0, FIVE_MINUTES),
            Ok(false)
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

    /// The header is the sender's to fill before any signature is known to
    /// be good: more `v1=` entries than a rotation needs are refused unread.
    #[test]
    fn a_header_with_more_than_eight_signatures_is_malformed() {
        let s = secrets();
        let good = sign_v2("sk_bare", 1000, BODY);
        let (_, v1) = good.split_once(",v1=").unwrap();
        let junk = format!(",v1={}", "ab".repeat(32));
        let eight = format!("t=1000{}{junk}", junk.repeat(6)) + &format!(",v1={v1}");
        assert_eq!(
            verify_v2(Some(&s), Some(&eight), BODY, 1000, Duration::from_secs(300)),
            Ok(true)
        );
        let nine = format!("t=1000{},v1={v1}", junk.repeat(8));
        assert_eq!(
            verify_v2(Some(&s), Some(&nine), BODY, 1000, Duration::from_secs(300)),
            Err(SignatureError::Malformed)
        );
    }
}
