//! What every pmcore OpenAPI document declares the same way.

use utoipa::{
    Modify,
    openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
};

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
