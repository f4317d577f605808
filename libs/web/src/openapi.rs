//! What every pmcore OpenAPI document declares the same way.

use axum::{Router, extract::DefaultBodyLimit};
use utoipa::{
    Modify,
    openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;

/// Every operation takes `Authorization: Bearer <JWT>` unless it opts out
/// (`security(())`, as the token endpoint does).
#[derive(Debug)]
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The router every pmcore API serves: its operations, their document at
/// `/openapi.json`, a reference at `/docs` (Swagger UI, every asset compiled into the
/// binary: utility networks are often isolated, and a page that loads its script
/// from a CDN is blank there), and problem+json for unknown routes and methods.
pub fn serve<S>(routes: OpenApiRouter<S>, version: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (router, mut api) = routes.split_for_parts();
    api.info.version = version.to_owned();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest("this method is not allowed on this path".into())
        })
        .layer(DefaultBodyLimit::max(crate::BODY_LIMIT_BYTES))
}
