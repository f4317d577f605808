//! The audit API's OpenAPI document, generated from the handlers.

use pmcore_web::openapi::BearerAuth;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AuditState, checkpoints, entries, exports, proofs, verify};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pmcore audit log",
        description = "The audit trail of every domain event as a transparency log: entries \
                       (filtered, in log order), signed checkpoints (C2SP tlog-checkpoint as \
                       Ed25519 signed notes), RFC 6962 inclusion and consistency proofs, and \
                       verification. Bearer tokens from the api's `/oauth/token`; roles `auditor` \
                       or `admin`; an aggregator's auditor sees its own organization's entries. \
                       Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "entries", description = "What happened, who did it, when"),
        (name = "checkpoints", description = "Signed tree heads and the key that verifies them"),
        (name = "proofs", description = "Inclusion and consistency proofs"),
        (name = "verification", description = "The whole log checked"),
    )
)]
struct AuditDoc;

pub fn routes() -> OpenApiRouter<AuditState> {
    OpenApiRouter::with_openapi(AuditDoc::openapi())
        .routes(routes!(entries::list))
        .routes(routes!(entries::get))
        .routes(routes!(proofs::inclusion))
        .routes(routes!(proofs::consistency))
        .routes(routes!(checkpoints::get, checkpoints::sign_now))
        .routes(routes!(checkpoints::list))
        .routes(routes!(checkpoints::key))
        .routes(routes!(verify::verify))
        .routes(routes!(exports::create))
        .routes(routes!(exports::get))
}

/// The document as committed in `services/audit-log/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
