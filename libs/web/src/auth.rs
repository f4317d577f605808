//! Who is calling: roles decide which operations, the organization decides which
//! objects. Every pmcore API verifies the api's own tokens ([`Tokens`]) the same way.

use std::{fmt, str::FromStr};

use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    ProgramManager,
    Operator,
    Aggregator,
    Auditor,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::ProgramManager,
        Role::Operator,
        Role::Aggregator,
        Role::Auditor,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ProgramManager => "program_manager",
            Role::Operator => "operator",
            Role::Aggregator => "aggregator",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationKind {
    Utility,
    Aggregator,
    Customer,
}

impl OrganizationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrganizationKind::Utility => "utility",
            OrganizationKind::Aggregator => "aggregator",
            OrganizationKind::Customer => "customer",
        }
    }
}

impl FromStr for OrganizationKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "utility" => Ok(Self::Utility),
            "aggregator" => Ok(Self::Aggregator),
            "customer" => Ok(Self::Customer),
            other => Err(format!("unknown organization kind `{other}`")),
        }
    }
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `client:<id>` or an external subject.
    pub subject: String,
    pub organization_id: Uuid,
    pub organization_kind: OrganizationKind,
    pub roles: Vec<Role>,
}

/// Roles only the utility's own staff may hold, whatever kind of token carries them.
/// An auditor may belong to any organization: what it reads is scoped to its own.
pub const UTILITY_ROLES: [Role; 3] = [Role::Admin, Role::ProgramManager, Role::Operator];

impl Principal {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// Fails with 403 unless the principal holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.has_any(roles) {
            Ok(())
        } else {
            let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "this operation needs one of the roles: {}",
                wanted.join(", ")
            )))
        }
    }

    /// The organization whose objects this principal may see, or `None` for the
    /// utility's staff, who see every organization's objects.
    pub fn scope(&self) -> Option<Uuid> {
        match self.organization_kind {
            OrganizationKind::Utility => None,
            _ => Some(self.organization_id),
        }
    }

    /// Whether the principal may see an object owned by `organization_id`.
    pub fn can_see(&self, organization_id: Uuid) -> bool {
        self.scope().is_none_or(|own| own == organization_id)
    }

    /// The `ce_principal` of the events this principal causes.
    pub fn audit_name(&self) -> String {
        self.subject.clone()
    }

    /// Headers for the events of a change this principal makes through `source`.
    pub fn event_meta(&self, source: &str) -> pmcore_kafka::outbox::EventMeta {
        pmcore_kafka::outbox::EventMeta {
            source: source.to_owned(),
            principal: Some(self.audit_name()),
            traceparent: None,
        }
    }
}

/// The bearer token of a request, or why there is none.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthenticated("missing `Authorization: Bearer <token>`".into())
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthenticated("expected `Authorization: Bearer <token>`".into()))
}

/// The caller's address, or `unknown` when served without connection info (tests
/// calling the router directly).
pub fn peer(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// A bearer token's principal: our own tokens are HS256; anything else can only come
/// from the OIDC provider, when one is configured.
pub async fn authenticate(
    token: &str,
    tokens: &crate::tokens::Tokens,
    oidc: Option<&crate::oidc::Oidc>,
) -> Result<Principal, ApiError> {
    let ours = jsonwebtoken::decode_header(token)
        .map(|h| h.alg == jsonwebtoken::Algorithm::HS256)
        .unwrap_or(true);
    match (oidc, ours) {
        (Some(oidc), false) => oidc.verify(token).await,
        _ => tokens.verify(token),
    }
}

/// Authenticates a request to a service that verifies the api's tokens but does not
/// issue them (the audit log, messaging): a valid token (the api's, or the OIDC provider's) of a client that is not
/// disabled, within its rate limit. Refusals are limited per source address, so
/// guessing tokens is throttled like any other client.
pub async fn verify_request(
    parts: &Parts,
    tokens: &crate::tokens::Tokens,
    limits: &crate::limits::Limits,
    pool: &sqlx::PgPool,
    oidc: Option<&crate::oidc::Oidc>,
) -> Result<Principal, ApiError> {
    let verified = match bearer(parts) {
        Ok(token) => authenticate(token, tokens, oidc).await,
        Err(refusal) => Err(refusal),
    };
    let principal = match verified {
        Ok(p) => p,
        Err(refusal) => {
            limits.check(&format!("anonymous:{}", peer(parts)))?;
            return Err(refusal);
        }
    };
    // A client disabled at the api is refused here too.
    if let Some(id) = principal
        .subject
        .strip_prefix("client:")
        .and_then(|s| s.parse::<Uuid>().ok())
    {
        let disabled: Option<bool> =
            sqlx::query_scalar("select disabled_at is not null from pm.api_client where id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        if disabled == Some(true) {
            return Err(ApiError::Unauthenticated("this client is disabled".into()));
        }
    }
    limits.check(&principal.subject)?;
    Ok(principal)
}
