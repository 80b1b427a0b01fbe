//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes;

/// An `application/problem+json` error (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, such as invalid_field, unknown_group, forbidden, not_found,
    /// already_confirmed or unauthorized.
    pub code: String,
    /// The offending field, for 422 answers.
    pub field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "Real-time group notifications: send, list, confirm and audit."),
    paths(
        routes::auth::issue_token,
        routes::auth::refresh_token,
        routes::groups::list_groups,
        routes::notifications::create,
        routes::notifications::list,
        routes::notifications::get_one,
        routes::notifications::confirm,
        routes::notifications::confirm_batch,
        routes::notifications::mark_read,
        routes::notifications::mark_many_read,
        routes::notifications::unread_count,
        routes::notifications::history,
        routes::health::healthz,
        routes::health::readyz,
    ),
    components(schemas(Problem, herald_core::Notification, herald_core::Priority, herald_core::Status)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Serves the OpenAPI document.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
