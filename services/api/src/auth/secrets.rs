//! Client and gateway secrets: random, shown once, stored as argon2id hashes.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{
        SaltString,
        rand_core::{OsRng, RngCore},
    },
};
use base64::Engine;

/// A new secret: 32 random bytes, URL-safe base64 (43 characters).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a secret: {e}"))
}

/// Constant-time check of `secret` against a stored hash; false for a malformed hash.
pub fn verify(secret: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let secret = generate();
        assert_eq!(secret.len(), 43);
        let stored = hash(&secret).expect("hashes");
        assert!(
            !stored.contains(&secret),
            "the hash does not contain the secret"
        );
        assert!(verify(&secret, &stored));
        assert!(!verify("wrong", &stored));
        assert!(!verify(&secret, "not a hash"));
        assert_ne!(generate(), secret);
    }
}
