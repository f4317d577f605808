//! The messaging API (port 3004): webhook endpoints, email contacts, templates and the
//! delivery log of the caller's own organization, with the api's conventions (its
//! tokens and roles, problem+json, an OpenAPI document generated from the handlers).

pub mod contacts;
pub mod endpoints;
pub mod messages;
pub mod openapi;
pub mod templates;

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use pmcore_runtime::clock::SharedClock;
use pmcore_web::{
    auth::{Principal, Role},
    error::{ApiError, FieldError},
    limits::Limits,
    tokens::Tokens,
};
use sqlx::PgPool;

use crate::{kinds, sealed::SecretsKey};

/// Who may change an organization's subscriptions and templates.
pub const MANAGERS: [Role; 4] = [
    Role::Admin,
    Role::ProgramManager,
    Role::Operator,
    Role::Aggregator,
];

/// What every handler may use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MessagingState {
    pub pool: PgPool,
    pub tokens: Arc<Tokens>,
    pub limits: Arc<Limits>,
    pub oidc: Option<Arc<pmcore_web::oidc::Oidc>>,
    pub secrets: Arc<SecretsKey>,
    pub clock: SharedClock,
    /// Dev stacks only: webhooks may target loopback and private addresses.
    pub allow_private: bool,
}

impl FromRequestParts<MessagingState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &MessagingState,
    ) -> Result<Self, Self::Rejection> {
        pmcore_web::auth::verify_request(
            parts,
            &state.tokens,
            &state.limits,
            &state.pool,
            state.oidc.as_deref(),
        )
        .await
    }
}

/// Checks a list of notification kinds (empty: all).
fn check_kinds(field: &str, given: &[String], errors: &mut Vec<FieldError>) {
    for (i, name) in given.iter().enumerate() {
        if kinds::find(name).is_none() {
            errors.push(FieldError::new(
                format!("{field}/{i}"),
                format!("unknown kind `{name}`; known: {}", kinds::names()),
            ));
        }
    }
    if given.len() > kinds::KINDS.len() {
        errors.push(FieldError::new(field, "lists a kind twice"));
    }
}

fn check_len(field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) {
    if value.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("longer than {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        errors.push(FieldError::new(field, "contains control characters"));
    }
}

fn validated(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}
