//! `POST /oauth/token`: the OAuth2 client-credentials grant (RFC 6749 §4.4).

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{OrganizationKind, Principal, Role, secrets};
use crate::{error::ApiError, extract::Json, state::AppState};

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    grant_type: String,
    /// The client id; may instead come in an HTTP Basic `Authorization` header.
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

fn oauth(status: StatusCode, code: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        status,
        code,
        description: description.into(),
    }
}

fn invalid_client() -> ApiError {
    oauth(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "unknown client or wrong secret",
    )
}

/// Client id and secret from Basic auth, else from the form.
fn credentials(headers: &HeaderMap, form: &TokenRequest) -> Result<(String, String), ApiError> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "malformed Basic credentials",
                )
            })?;
        let (id, secret) = decoded.split_once(':').ok_or_else(|| {
            oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "malformed Basic credentials",
            )
        })?;
        return Ok((id.to_owned(), secret.to_owned()));
    }
    match (&form.client_id, &form.client_secret) {
        (Some(id), Some(secret)) => Ok((id.clone(), secret.clone())),
        _ => Err(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required",
        )),
    }
}

/// Exchange client credentials for an access token.
#[utoipa::path(
    post,
    path = "/oauth/token",
    operation_id = "oauth.token",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A bearer token", body = TokenResponse),
        (status = 400, description = "Malformed request or unsupported grant", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown client or wrong secret", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub async fn token(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    let Form(form) =
        form.map_err(|e| oauth(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    if form.grant_type != "client_credentials" {
        return Err(oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        ));
    }
    let (client_id, secret) = credentials(&headers, &form)?;
    // Validate before limiting, so made-up ids cannot grow the limiter's table; a
    // source address gets one budget for all its attempts, a client id another.
    state.limits.check(&format!("token-from:{}", peer.ip()))?;
    let client_id = Uuid::parse_str(&client_id).map_err(|_| {
        state.refusals.record(None, "unknown_client");
        invalid_client()
    })?;
    state.limits.check(&format!("token:{client_id}"))?;
    let row = sqlx::query(
        "select c.secret_hash, c.roles, c.disabled_at is not null as disabled, o.id as org, o.kind
           from pm.api_client c join pm.organization o on o.id = c.organization_id
          where c.id = $1",
    )
    .bind(client_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| {
        state.refusals.record(Some(client_id), "unknown_client");
        invalid_client()
    })?;
    let stored: String = row.try_get("secret_hash").map_err(anyhow::Error::from)?;
    let disabled: bool = row.try_get("disabled").map_err(anyhow::Error::from)?;
    // argon2 is deliberately slow; keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || secrets::verify(&secret, &stored))
        .await
        .map_err(anyhow::Error::from)?;
    if !ok || disabled {
        let reason = if ok { "disabled" } else { "wrong_secret" };
        state.refusals.record(Some(client_id), reason);
        return Err(invalid_client());
    }
    let roles: Vec<String> = row.try_get("roles").map_err(anyhow::Error::from)?;
    let kind: String = row.try_get("kind").map_err(anyhow::Error::from)?;
    let principal = Principal {
        subject: format!("client:{client_id}"),
        organization_id: row.try_get("org").map_err(anyhow::Error::from)?,
        organization_kind: kind
            .parse::<OrganizationKind>()
            .map_err(anyhow::Error::msg)?,
        roles: roles
            .iter()
            .filter_map(|r| r.parse::<Role>().ok())
            .collect(),
    };
    let access_token = state.tokens.issue(&principal)?;
    metrics::counter!("pmcore_api_tokens_issued_total").increment(1);
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.tokens.ttl.as_secs(),
    }))
}
