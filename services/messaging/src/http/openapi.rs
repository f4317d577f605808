//! The messaging API's OpenAPI document, generated from the handlers.

use pmcore_web::openapi::BearerAuth;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{MessagingState, contacts, endpoints, messages, templates};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pmcore messaging",
        description = "Notifications to participants and integrators: webhook endpoints signed \
                       per the Standard Webhooks specification, email contacts, the wording of \
                       each notification kind, and the delivery log with every attempt. Bearer \
                       tokens from the api's `/oauth/token`; every object belongs to the \
                       caller's organization and is invisible to others; changes need one of \
                       the roles admin, program_manager, operator or aggregator. Errors are RFC \
                       9457 problem documents.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "endpoints", description = "Where webhooks go, and their signing secrets"),
        (name = "contacts", description = "Who gets emails"),
        (name = "templates", description = "The wording of each notification kind's email"),
        (name = "messages", description = "What was sent, each attempt, redelivery"),
    )
)]
struct MessagingDoc;

pub fn routes() -> OpenApiRouter<MessagingState> {
    OpenApiRouter::with_openapi(MessagingDoc::openapi())
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(endpoints::test))
        .routes(routes!(contacts::create, contacts::list))
        .routes(routes!(contacts::delete))
        .routes(routes!(templates::list))
        .routes(routes!(templates::put, templates::reset))
        .routes(routes!(messages::list))
        .routes(routes!(messages::get))
        .routes(routes!(messages::redeliver))
}

/// The document as committed in `services/messaging/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
