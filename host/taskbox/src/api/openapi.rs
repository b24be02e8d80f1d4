//! The OpenAPI 3 document of the API, generated from the handlers' annotations.

use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{error, events, jobs, metrics, modules, schedules, system};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskbox",
        description = "Run untrusted background jobs as sandboxed WebAssembly components."
    ),
    paths(
        modules::upload, modules::list, modules::show, modules::remove, modules::settings,
        modules::set_settings,
        jobs::enqueue, jobs::enqueue_batch, jobs::show, jobs::logs, jobs::cancel, jobs::retry,
        jobs::list, jobs::count, jobs::states, jobs::bulk, jobs::dead_letters, jobs::purge_dead,
        system::queues, system::set_queue, system::pause_queue, system::resume_queue, system::workers, system::healthz, system::readyz,
        metrics::tenant,
        events::stream,
        schedules::create, schedules::list, schedules::show, schedules::remove,
        schedules::pause, schedules::resume, schedules::run_now,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// Declares the bearer-token scheme the paths refer to.
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

/// The document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}
