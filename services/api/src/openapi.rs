//! The OpenAPI document, generated from the handlers so it cannot drift from them.

use pmcore_web::openapi::BearerAuth;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    accuracy, auth, baselines, ders, dispatch, enrollments, files, gateways, organizations,
    programs, settlements, state::AppState, telemetry,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pmcore API",
        description = "Programs, the DER warehouse, gateways, enrollments and dispatch events of a \
                       distributed-energy program platform. Every endpoint but `/oauth/token` needs \
                       `Authorization: Bearer <token>`; errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "OAuth2 client credentials"),
        (name = "organizations", description = "Organizations and their API clients (admin)"),
        (name = "programs", description = "Utility programs and their lifecycle"),
        (name = "gateways", description = "Edge gateways, their secrets and presence"),
        (name = "ders", description = "The DER warehouse"),
        (name = "enrollments", description = "DERs in programs: requests, eligibility, decisions"),
        (name = "dispatch-events", description = "Scheduling, cancellation, opt-outs, and each running event's commands and live response"),
        (name = "files", description = "CSV uploads (DER registry, enrollments, meter data) into the inbound bucket, their imports and per-row error reports"),
        (name = "telemetry", description = "Readings, aggregates and anomalies"),
        (name = "settlements", description = "Measured performance of completed events, baselines, settlements and their reports"),
    )
)]
struct ApiDoc;

/// Every documented route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::endpoint::token))
        .routes(routes!(organizations::create, organizations::list))
        .routes(routes!(organizations::get))
        .routes(routes!(organizations::create_client))
        .routes(routes!(organizations::disable_client))
        .routes(routes!(programs::create, programs::list))
        .routes(routes!(programs::get, programs::update))
        .routes(routes!(programs::open))
        .routes(routes!(programs::activate))
        .routes(routes!(programs::close))
        .routes(routes!(gateways::register, gateways::list))
        .routes(routes!(gateways::get))
        .routes(routes!(gateways::rotate_secret))
        .routes(routes!(ders::create, ders::list))
        .routes(routes!(ders::bulk_create))
        .routes(routes!(ders::get, ders::update))
        .routes(routes!(ders::decommission))
        .routes(routes!(enrollments::request, enrollments::list))
        .routes(routes!(enrollments::get))
        .routes(routes!(enrollments::approve))
        .routes(routes!(enrollments::reject))
        .routes(routes!(enrollments::withdraw))
        .routes(routes!(dispatch::schedule, dispatch::list))
        .routes(routes!(dispatch::get))
        .routes(routes!(dispatch::cancel))
        .routes(routes!(dispatch::opt_out))
        .routes(routes!(dispatch::execution::commands))
        .routes(routes!(dispatch::execution::status))
        .routes(routes!(settlements::performance))
        .routes(routes!(settlements::recompute))
        .routes(routes!(settlements::list))
        .routes(routes!(settlements::get))
        .routes(routes!(settlements::statement))
        .routes(routes!(baselines::preview))
        .routes(routes!(accuracy::report))
        .routes(routes!(files::upload, files::list))
        .routes(routes!(files::get))
        .routes(routes!(telemetry::der_series))
        .routes(routes!(telemetry::aggregate))
        .routes(routes!(telemetry::anomalies))
}

/// The document as committed in `services/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
