//! One error type for the API, rendered once as RFC 9457 problem+json. Database
//! errors are mapped in one place: unique → 409, foreign key and check → 422.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:pmcore:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level errors of a validation problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// OAuth2 error code (RFC 6749), on the token endpoint only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON pointer into the request (`/limits/min_notice_minutes`)
    /// or a query parameter name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// OAuth2 token endpoint errors (RFC 6749 §5.2).
    #[error("{description}")]
    OAuth {
        status: StatusCode,
        code: &'static str,
        description: String,
    },
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        // The outbox refuses an event no broker would take; the change rolls back and
        // the caller hears why rather than an incident id.
        match error.downcast::<pmcore_kafka::outbox::TooLarge>() {
            Ok(too_large) => ApiError::invalid("", too_large.to_string()),
            Err(error) => ApiError::Internal(error),
        }
    }
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn status_and_slug(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Validation failed",
            ),
            Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            OAuth { status, .. } => (*status, "oauth", "OAuth2 error"),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.status_and_slug();
        let detail = match &self {
            // Never leak internals: log them with an id the caller can quote.
            ApiError::Internal(error) | ApiError::Unavailable(error) => {
                let incident = uuid::Uuid::now_v7();
                tracing::error!(%incident, error = %format!("{error:#}"), "request failed");
                Some(format!("incident {incident}"))
            }
            ApiError::Validation(_) => Some(self.to_string()),
            other => Some(other.to_string()),
        };
        let retry_after = match &self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let (errors, error) = match self {
            ApiError::Validation(errors) => (errors, None),
            ApiError::OAuth { code, .. } => (Vec::new(), Some(code.to_owned())),
            _ => (Vec::new(), None),
        };
        let body = Problem {
            kind: format!("urn:pmcore:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            error,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => ApiError::NotFound("resource"),
            sqlx::Error::Database(db) => {
                let constraint = db.constraint().unwrap_or("unknown").to_owned();
                match db.code().as_deref() {
                    Some("23505") => ApiError::Conflict(conflict_message(&constraint)),
                    Some("23503") => ApiError::invalid(
                        constraint_field(&constraint),
                        "refers to something that does not exist",
                    ),
                    Some("22021") | Some("22P05") => ApiError::invalid(
                        "",
                        "text may not contain NUL or characters the database cannot store",
                    ),
                    Some("22008") | Some("22007") => ApiError::invalid(
                        "",
                        "a date or time is outside what the database stores (4713 BC to 294276 AD)",
                    ),
                    // statement_timeout: the database gave up on this request.
                    Some("57014") => ApiError::Unavailable(error.into()),
                    Some("23514") | Some("22003") | Some("22P02") => ApiError::invalid(
                        constraint_field(&constraint),
                        format!("violates {constraint}"),
                    ),
                    _ => ApiError::Internal(error.into()),
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable(error.into())
            }
            _ => ApiError::Internal(error.into()),
        }
    }
}

fn conflict_message(constraint: &str) -> String {
    match constraint {
        "organization_name_key" => "an organization with this name exists".to_owned(),
        "der_external_id_key" => {
            "this organization already has a DER with this external id".to_owned()
        }
        "enrollment_live_key" => "the DER already has a live enrollment in this program".to_owned(),
        other => format!("conflicts with an existing record ({other})"),
    }
}

/// The request field a constraint guards, for the problem's `errors`.
fn constraint_field(constraint: &str) -> String {
    let field = match constraint {
        "der_gateway_fkey" => "/gateway_id",
        "enrollment_program_fkey" => "/program_id",
        "enrollment_der_fkey" => "/der_id",
        "der_nameplate_check" => "/nameplate_kw",
        "der_location_check" => "/location",
        _ => "",
    };
    field.to_owned()
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(crate::BODY_LIMIT_BYTES)
            }
            JsonRejection::JsonDataError(e) => ApiError::Validation(vec![FieldError::new(
                "",
                // serde's message names the field and what was wrong with it.
                e.body_text()
                    .trim_start_matches(
                        "Failed to deserialize the JSON body into the target type: ",
                    )
                    .to_owned(),
            )]),
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // Axum's text repeats the raw segment; it may hold any bytes, so leave it out.
        tracing::debug!(%rejection, "bad path parameter");
        ApiError::BadRequest("a path parameter is malformed: ids are UUIDs".into())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("bad query string: {}", rejection.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
