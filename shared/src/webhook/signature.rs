//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where
//! the key is the base64 part of a `whsec_…` secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the spec allows 24 to 64).
const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("a webhook secret is `whsec_` followed by 24 to 64 bytes in base64")]
    Malformed,
}

/// A tenant's signing key.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    /// A fresh secret in its `whsec_` form (shown to an admin once, then stored sealed).
    pub fn generate() -> String {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    pub fn parse(secret: &str) -> Result<Self, SignatureError> {
        let encoded = secret
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::Malformed)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::Malformed)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SignatureError::Malformed);
        }
        Ok(Self(key))
    }

    /// `v1,<base64 signature>` of one message.
    #[expect(clippy::expect_used, reason = "HMAC takes a key of any length")]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated, so a receiver in the
/// middle of a rotation accepts the message under either.
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_test_vector_signs_as_published() {
        let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("valid");
        let signature = secret.sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn a_generated_secret_parses_and_malformed_ones_do_not() {
        let secret = SigningSecret::generate();
        assert!(secret.starts_with("whsec_"));
        assert!(SigningSecret::parse(&secret).is_ok());
        assert!(SigningSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(SigningSecret::parse("whsec_not base64").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn the_header_carries_one_signature_per_secret() {
        let a = SigningSecret::parse(&SigningSecret::generate()).expect("valid");
        let b = SigningSecret::parse(&SigningSecret::generate()).expect("valid");
        let header = signature_header(&[a.clone(), b.clone()], "msg_1", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(
            parts,
            [a.sign("msg_1", 1, b"{}"), b.sign("msg_1", 1, b"{}")]
        );
        assert_ne!(parts[0], parts[1]);
    }
}
