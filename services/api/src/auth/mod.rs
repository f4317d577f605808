//! Authentication (OAuth2 client credentials → signed JWT) and authorisation:
//! roles decide which operations, the organization decides which objects.

mod bootstrap;
pub mod endpoint;
pub mod refusals;
pub mod secrets;

use axum::{extract::FromRequestParts, http::request::Parts};
pub use bootstrap::ensure_bootstrap_client;
pub use pmcore_web::{
    auth::{OrganizationKind, Principal, Role, UTILITY_ROLES, peer},
    oidc, tokens,
};

use crate::{error::ApiError, state::AppState};

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let authenticated = authenticate(parts, state).await.and_then(|p| {
            if state.disabled.contains(&p.subject) {
                Err(ApiError::Unauthenticated("this client is disabled".into()))
            } else {
                Ok(p)
            }
        });
        match authenticated {
            Ok(principal) => {
                state.limits.check(&principal.subject)?;
                Ok(principal)
            }
            // Refusals cost a signature check each: they are limited per source
            // address, so guessing tokens is throttled like any other client.
            Err(refusal) => {
                state.limits.check(&format!("anonymous:{}", peer(parts)))?;
                Err(refusal)
            }
        }
    }
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = pmcore_web::auth::bearer(parts)?;
    pmcore_web::auth::authenticate(token, &state.tokens, state.oidc.as_deref()).await
}
