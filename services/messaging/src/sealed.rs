//! Signing secrets at rest. A webhook secret must be read back to sign, so it cannot
//! be hashed like a password; it is sealed with AES-256-GCM under the service's key
//! (`PMCORE_MESSAGING_SECRETS_KEY`), so a database dump alone forges nothing.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::STANDARD};

/// Why a key or a sealed value is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the secrets key must be 32 bytes in base64: {0}")]
    Key(String),
    #[error("a sealed secret does not open under this key (was the key changed?)")]
    Open,
}

pub struct SecretsKey(LessSafeKey);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// From 32 bytes in standard base64.
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| SealError::Key(e.to_string()))?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| SealError::Key(format!("got {} bytes", bytes.len())))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// A random key, for tests and for a service started without one.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("32 bytes is an AES-256 key"))
    }

    /// Nonce, then ciphertext and tag. The nonce is random: a key seals few secrets.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut out = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut out,
            )
            .unwrap_or_else(|_| unreachable!("AES-GCM seals any input below 64 GiB"));
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&out);
        sealed
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let key = SecretsKey::generate();
        let sealed = key.seal(b"whsec_abc");
        assert_ne!(&sealed[NONCE_LEN..], b"whsec_abc".as_slice());
        assert_eq!(key.open(&sealed).expect("opens"), b"whsec_abc");
        assert_ne!(sealed, key.seal(b"whsec_abc"), "fresh nonce each time");
    }

    #[test]
    fn another_key_or_a_flipped_bit_does_not_open() {
        let key = SecretsKey::generate();
        let mut sealed = key.seal(b"whsec_abc");
        assert!(SecretsKey::generate().open(&sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(key.open(&sealed).is_err());
        assert!(key.open(b"short").is_err());
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretsKey::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(SecretsKey::from_base64(&STANDARD.encode([7u8; 16])).is_err());
        assert!(SecretsKey::from_base64("not base64!").is_err());
    }
}
