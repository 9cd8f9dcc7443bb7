//! The OpenAPI document of the admin API, generated from its handlers and types (utoipa): served
//! at `/v1/openapi.json` and checked in as `deploy/admin-openapi.json` (a test fails when that
//! copy is stale).

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::{self, ApiError};
use super::auth::Outcome;
use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mxc-relay admin API",
        description = "Operates the running service: its state, dead letters, webhook endpoints, merchants and backfills. Every request carries `Authorization: Bearer <token>` (MXC_ADMIN_TOKEN or admin.token_file).",
    ),
    paths(
        routes::state,
        routes::dead_letters,
        routes::replay,
        routes::endpoint,
        routes::merchant,
        routes::backfill_start,
        routes::backfill_status,
        routes::backfill_cancel,
        openapi,
    ),
    components(schemas(
        api::StateView,
        api::CursorView,
        api::CursorPage,
        api::CursorSort,
        api::CursorSummary,
        api::SinkView,
        api::EndpointView,
        api::Disabled,
        api::OrphanOutbox,
        api::DeadLetterFilter,
        api::ReplayRequest,
        api::DeadLetterView,
        api::ReplayOutcome,
        api::SinkCount,
        api::EndpointOutcome,
        api::MerchantOutcome,
        api::BackfillStart,
        api::BackfillStatus,
        api::ApiError,
    )),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
struct AdminApi;

/// Every path needs the bearer token.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as pretty JSON text (what is checked in). The version is the crate's.
pub fn document() -> String {
    let mut doc = AdminApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the document did not serialize: {e}\"}}"))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json"), (status = 401, body = ApiError)))]
pub(super) async fn openapi() -> Response {
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(Outcome("the OpenAPI document".into()));
    response
}
