//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): `v1,` and the
//! base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` under the
//! endpoint's secret, several space-separated while a rotated secret is still valid.

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::STANDARD};

/// Prefix of a signing secret as the receiver sees it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a new secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A new signing secret, `whsec_` + base64 of [`SECRET_BYTES`] random bytes.
pub fn generate() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_…` secret.
pub fn key_bytes(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
}

/// One `v1,<base64>` signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

/// The `webhook-signature` header: one signature per valid key, current first.
pub fn header(keys: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn the_specifications_test_vector() {
        let key = key_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one() {
        let header = header(&[b"new", b"old"], "msg_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(b"new", "msg_1", 1, b"{}"));
        assert_eq!(parts[1], sign(b"old", "msg_1", 1, b"{}"));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn new_secrets_are_random_and_long_enough() {
        let a = generate();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(key_bytes(&a).expect("base64").len(), SECRET_BYTES);
        assert_ne!(a, generate());
    }

    #[test]
    fn any_change_to_the_message_changes_the_signature() {
        let base = sign(b"k", "msg_1", 10, b"body");
        assert_ne!(base, sign(b"k", "msg_2", 10, b"body"));
        assert_ne!(base, sign(b"k", "msg_1", 11, b"body"));
        assert_ne!(base, sign(b"k", "msg_1", 10, b"bodY"));
        assert_ne!(base, sign(b"K", "msg_1", 10, b"body"));
    }
}
