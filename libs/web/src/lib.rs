//! What every pmcore HTTP API shares, so the api, the audit log and messaging answer
//! alike: RFC 9457 problem+json errors, extractors whose rejections are problems,
//! keyset pages, per-client rate limits, and the callers' tokens and roles.

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod oidc;
pub mod openapi;
pub mod pagination;
pub mod tokens;

/// Largest request body a pmcore API reads.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
