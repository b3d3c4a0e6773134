//! API tokens: 32 random bytes shown once as `tg_<base64url>`, stored only as their SHA-256.
//!
//! SHA-256 rather than a password hash: the tokens carry 256 bits of entropy, so there is nothing to
//! brute-force, and a password hash would cost ~30 ms on every request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "tg_";
/// How many characters of a token listings show.
const DISPLAY_CHARS: usize = 10;

/// A freshly minted token: the secret to show once, and what is stored.
pub struct NewToken {
    pub secret: String,
    pub hash: [u8; 32],
    pub display_prefix: String,
}

pub fn generate() -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    NewToken {
        hash: hash(&secret),
        display_prefix: secret.chars().take(DISPLAY_CHARS).collect(),
        secret,
    }
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_long_random_and_hashes_to_what_is_stored() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("tg_"));
        assert_eq!(a.secret.len(), 3 + 43, "32 bytes in unpadded base64url");
        assert_eq!(hash(&a.secret), a.hash);
        assert!(a.secret.starts_with(&a.display_prefix));
    }
}
