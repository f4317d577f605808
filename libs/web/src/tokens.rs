//! JWTs the api issues for its clients (HS256). Other pmcore services verify them
//! with the same key.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{OrganizationKind, Principal, Role};
use crate::error::ApiError;

pub const ISSUER: &str = "pmcore";
pub const AUDIENCE: &str = "pmcore-api";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    org: Uuid,
    org_kind: OrganizationKind,
    roles: Vec<Role>,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: Uuid,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, principal: &Principal) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: principal.subject.clone(),
            org: principal.organization_id,
            org_kind: principal.organization_kind,
            roles: principal.roles.clone(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::now_v7(),
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let reason = match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                _ => "the token is not valid",
            };
            ApiError::Unauthenticated(reason.to_owned())
        })?;
        let c = data.claims;
        Ok(Principal {
            subject: c.sub,
            organization_id: c.org,
            organization_kind: c.org_kind,
            roles: c.roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            subject: "client:x".into(),
            organization_id: Uuid::now_v7(),
            organization_kind: OrganizationKind::Aggregator,
            roles: vec![Role::Aggregator],
        }
    }

    #[test]
    fn a_token_round_trips_and_a_foreign_one_is_refused() {
        let tokens = Tokens::new(b"k1-k1-k1-k1-k1-k1-k1-k1-k1-k1-k1", Duration::from_secs(60));
        let token = tokens.issue(&principal()).expect("issued");
        let back = tokens.verify(&token).expect("verified");
        assert_eq!(back.roles, vec![Role::Aggregator]);
        let other = Tokens::new(b"k2-k2-k2-k2-k2-k2-k2-k2-k2-k2-k2", Duration::from_secs(60));
        assert!(matches!(
            other.verify(&token),
            Err(ApiError::Unauthenticated(_))
        ));
        assert!(matches!(
            tokens.verify("garbage"),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = Tokens::new(b"k1-k1-k1-k1-k1-k1-k1-k1-k1-k1-k1", Duration::from_secs(0));
        let mut expired = Tokens::new(b"k1-k1-k1-k1-k1-k1-k1-k1-k1-k1-k1", Duration::from_secs(0));
        expired.validation.leeway = 0;
        let token = tokens.issue(&principal()).expect("issued");
        std::thread::sleep(Duration::from_millis(1100));
        match expired.verify(&token) {
            Err(ApiError::Unauthenticated(reason)) => assert!(reason.contains("expired")),
            other => panic!("expected expiry, got {other:?}"),
        }
    }
}
