//! Tokens from an external OIDC provider: verified against the provider's JWKS
//! (fetched over HTTPS, cached, refreshed when an unknown key id appears), then mapped
//! to a pmcore organization and roles through two claims. The api, the audit log and
//! messaging accept the same provider's tokens.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::{
    auth::{OrganizationKind, Principal, Role, UTILITY_ROLES},
    error::ApiError,
};

/// Fetch the key set at most this often when tokens name unknown keys.
const MIN_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct OidcConfig {
    /// Issuer (`iss`) of an external OIDC provider whose tokens the api accepts.
    #[arg(
        long = "oidc-issuer",
        env = "PMCORE_AUTH_OIDC_ISSUER",
        requires = "jwks_url"
    )]
    pub issuer: Option<String>,

    /// Audience (`aud`) those tokens must carry.
    #[arg(
        long = "oidc-audience",
        env = "PMCORE_AUTH_OIDC_AUDIENCE",
        default_value = "pmcore-api"
    )]
    pub audience: String,

    /// The provider's JWKS URL.
    #[arg(
        long = "oidc-jwks-url",
        env = "PMCORE_AUTH_OIDC_JWKS_URL",
        id = "jwks_url"
    )]
    pub jwks_url: Option<String>,

    /// Claim holding the caller's pmcore organization id.
    #[arg(
        long = "oidc-organization-claim",
        env = "PMCORE_AUTH_OIDC_ORGANIZATION_CLAIM",
        default_value = "pmcore_org"
    )]
    pub organization_claim: String,

    /// Claim holding the caller's pmcore roles (an array of role names).
    #[arg(
        long = "oidc-roles-claim",
        env = "PMCORE_AUTH_OIDC_ROLES_CLAIM",
        default_value = "pmcore_roles"
    )]
    pub roles_claim: String,
}

impl OidcConfig {
    pub fn disabled() -> Self {
        Self {
            issuer: None,
            audience: "pmcore-api".to_owned(),
            jwks_url: None,
            organization_claim: "pmcore_org".to_owned(),
            roles_claim: "pmcore_roles".to_owned(),
        }
    }
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

pub struct Oidc {
    config: OidcConfig,
    issuer: String,
    jwks_url: String,
    http: reqwest::Client,
    pool: PgPool,
    cache: RwLock<Cache>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

fn unauthenticated(reason: &str) -> ApiError {
    ApiError::Unauthenticated(reason.to_owned())
}

impl Oidc {
    /// `None` when no provider is configured.
    pub fn new(config: &OidcConfig, pool: PgPool) -> anyhow::Result<Option<Self>> {
        let (Some(issuer), Some(jwks_url)) = (config.issuer.clone(), config.jwks_url.clone())
        else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Some(Self {
            config: config.clone(),
            issuer,
            jwks_url,
            http,
            pool,
            cache: RwLock::new(Cache::default()),
        }))
    }

    async fn refresh(&self) -> Result<(), ApiError> {
        let mut cache = self.cache.write().await;
        if cache.fetched.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        cache.fetched = Some(Instant::now());
        let set: JwkSet = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ApiError::Unavailable(anyhow::anyhow!("fetching the OIDC key set: {e}")))?
            .json()
            .await
            .map_err(|e| ApiError::Unavailable(anyhow::anyhow!("reading the OIDC key set: {e}")))?;
        cache.keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|k| (kid, k))
            })
            .collect();
        tracing::info!(keys = cache.keys.len(), "OIDC key set refreshed");
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, ApiError> {
        if let Some(key) = self.cache.read().await.keys.get(kid) {
            return Ok(key.clone());
        }
        self.refresh().await?;
        self.cache
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| {
                unauthenticated("the token is signed with a key the provider does not publish")
            })
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = decode_header(token).map_err(|_| unauthenticated("the token is not valid"))?;
        let kid = header
            .kid
            .ok_or_else(|| unauthenticated("the token names no key (kid)"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.config.audience]);
        // A token without them would be valid forever, or for anyone.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    unauthenticated("the token has expired")
                }
                _ => unauthenticated("the token is not valid"),
            })?
            .claims;
        let organization_id = claims[&self.config.organization_claim]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| unauthenticated("the token carries no pmcore organization"))?;
        let kind: Option<String> =
            sqlx::query_scalar("select kind from pm.organization where id = $1")
                .bind(organization_id)
                .fetch_optional(&self.pool)
                .await?;
        let kind: OrganizationKind = kind
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| unauthenticated("the token's organization is unknown here"))?;
        // One role policy for both kinds of token: utility roles only for the
        // utility's people, as for API clients.
        let roles: Vec<Role> = claims[&self.config.roles_claim]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str()?.parse::<Role>().ok())
                    .filter(|r| kind == OrganizationKind::Utility || !UTILITY_ROLES.contains(r))
                    .collect()
            })
            .unwrap_or_default();
        let subject = claims["sub"].as_str().unwrap_or("unknown");
        Ok(Principal {
            subject: format!("oidc:{subject}"),
            organization_id,
            organization_kind: kind,
            roles,
        })
    }
}
