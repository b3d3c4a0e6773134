//! Sealing secrets that must rest in Postgres (cloud accounts' keys, fleet hosts' keys, webhook
//! signing secrets): XChaCha20-Poly1305 under a key that only the environment holds
//! (`TOLLGATE_SECRET_KEY`, 32 bytes in base64).
//!
//! A database dump without the environment reveals no provider key; a sealed value that was
//! tampered with, or sealed under another key, fails to open instead of yielding garbage.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};

const NONCE_LEN: usize = 24;

/// What a sealed value is. It is bound into the seal (as associated data), so one sealed secret
/// cannot be passed off as another: a webhook secret copied into the OpenAI key's column fails to
/// open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A cloud account's key (every one sealed as the OpenAI key was before accounts were named,
    /// so the account `openai` kept its seal through the migration).
    OpenAiKey,
    WebhookSecret,
    /// An OpenAI-compatible fleet host's key.
    HostKey,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Self::OpenAiKey => b"tollgate:openai_api_key:v1",
            Self::WebhookSecret => b"tollgate:webhook_secret:v1",
            Self::HostKey => b"tollgate:host_api_key:v1",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("TOLLGATE_SECRET_KEY must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")]
    BadKey,
    #[error("the stored secret cannot be opened with this TOLLGATE_SECRET_KEY")]
    CannotOpen,
}

/// The key secrets are sealed under.
#[derive(Clone)]
pub struct SecretKey(XChaCha20Poly1305);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// Reads the key from its base64 form.
    pub fn parse(encoded: &SecretString) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(encoded.expose_secret().trim())
            .map_err(|_| SecretError::BadKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        Ok(Self(cipher))
    }

    /// A fresh random key, base64-encoded (for `scripts/dev` and tests).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// The OpenAI key, sealed: see [`SecretKey::seal_as`].
    pub fn seal(&self, plain: &str) -> Vec<u8> {
        self.seal_as(Purpose::OpenAiKey, plain)
    }

    /// Opens the sealed OpenAI key.
    pub fn open(&self, sealed: &[u8]) -> Result<SecretString, SecretError> {
        self.open_as(Purpose::OpenAiKey, sealed)
    }

    /// `nonce || ciphertext` of `plain`, under a random nonce.
    #[expect(
        clippy::expect_used,
        reason = "XChaCha20-Poly1305 fails only on buffers beyond 256 GiB; a key is a few bytes"
    )]
    pub fn seal_as(&self, purpose: Purpose, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: purpose.aad(),
        };
        let sealed = self
            .0
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("encrypting an in-memory buffer cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open_as(&self, purpose: Purpose, sealed: &[u8]) -> Result<SecretString, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::CannotOpen);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: purpose.aad(),
        };
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::CannotOpen)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::CannotOpen)
    }
}

/// The last four characters of a secret: enough to tell keys apart, too few to use one.
pub fn last4(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::parse(&SecretString::from(SecretKey::generate())).expect("valid key")
    }

    #[test]
    fn a_sealed_secret_opens_only_under_its_key() {
        let key = key();
        let sealed = key.seal("sk-live-123456");
        assert!(!String::from_utf8_lossy(&sealed).contains("sk-live"));
        assert_eq!(
            key.open(&sealed).expect("opens").expose_secret(),
            "sk-live-123456"
        );
        assert_eq!(
            self::key().open(&sealed).err(),
            Some(SecretError::CannotOpen)
        );
    }

    #[test]
    fn a_secret_sealed_for_one_purpose_does_not_open_as_another() {
        let key = key();
        let sealed = key.seal_as(Purpose::WebhookSecret, "whsec_abc");
        assert_eq!(key.open(&sealed).err(), Some(SecretError::CannotOpen));
        assert!(key.open_as(Purpose::WebhookSecret, &sealed).is_ok());
    }

    #[test]
    fn tampering_and_short_values_are_refused() {
        let key = key();
        let mut sealed = key.seal("sk-live-123456");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(key.open(&sealed).err(), Some(SecretError::CannotOpen));
        assert_eq!(key.open(b"short").err(), Some(SecretError::CannotOpen));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SecretKey::parse(&SecretString::from("not base64!")).is_err());
        assert!(SecretKey::parse(&SecretString::from(STANDARD.encode([0u8; 16]))).is_err());
    }

    #[test]
    fn last4_is_at_most_four_characters() {
        assert_eq!(last4("sk-abcdef"), "cdef");
        assert_eq!(last4("ab"), "ab");
    }
}
