//! The OpenAPI 3.1 document of the node's API, generated from the handlers' `#[utoipa::path]`
//! annotations and the bodies' types, served at `/openapi.json` with a readable page at
//! `/docs`. The router is built from the same annotated handlers ([`crate::router`]), so a
//! route cannot exist without its entry in the document.

use std::sync::LazyLock;

use axum::{
    http::header,
    response::IntoResponse,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts; paths and schemas come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "verinet",
        description = "A verifiable, pay-per-inference AI network: publish models, run them (tensors on /v1/infer; chat, completions and embeddings on OpenAI's API), pay per call with x402 or a spending session, and check every result's signed receipt. Amounts are base units of an 18-decimal token, as decimal strings.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Security),
    tags(
        (name = "inference", description = "Tensor models"),
        (name = "openai", description = "Language and embedding models on OpenAI's API"),
        (name = "hub", description = "Publish and find models"),
        (name = "money", description = "Accounts, apps, sessions and payments"),
        (name = "x402", description = "x402 facilitator endpoints"),
        (name = "receipts", description = "Signed receipts and their Merkle proofs"),
        (name = "network", description = "Workers and validators"),
        (name = "flywheel", description = "Usage through every layer"),
        (name = "node", description = "This node and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// A spending session's bearer token (`POST /v1/sessions`).
struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A spending session's token (POST /v1/sessions): calls are paid from its budget instead of per-call x402."))
                    .build(),
            ),
        );
    }
}

/// The `multipart/form-data` body of `POST /v1/models`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "describes a multipart body; never built")]
pub(crate) struct PublishForm {
    /// JSON metadata, signed by the owner.
    metadata: verinet_primitives::wire::PublishRequest,
    /// The model's bytes: ONNX, GGUF, or an encoder bundle.
    #[schema(value_type = String, format = Binary)]
    model: Vec<u8>,
}

/// The document, built once from the router's routes.
pub(crate) static SPEC: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&openapi()).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
});

/// The document as a value (tests and clients).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = crate::routes::api_routes(&crate::ApiConfig::default()).split_for_parts().1;
    name_operations(&mut api);
    api
}

/// Operation ids must be unique in a document, and a handler's name (`list`, `show`) is
/// unique only in its module: each becomes `<tag>_<handler>` (`network_list`, `hub_list`).
pub(crate) fn name_operations(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
        for op in ops.into_iter().flatten() {
            let tag = op.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
            if let Some(id) = op.operation_id.as_mut().filter(|_| !tag.is_empty()) {
                *id = format!("{tag}_{id}");
            }
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "node", summary = "This document (OpenAPI 3.1)", responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], SPEC.as_str())
}

/// `GET /docs`: a self-contained page that renders `/openapi.json` (no external scripts).
#[utoipa::path(get, path = "/docs", tag = "node", summary = "This document, readable (HTML)", responses((status = 200, description = "A self-contained page", content_type = "text/html", body = String)))]
pub(crate) async fn docs() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("docs.html"))
}

/// `GET /`: a browser is sent to the dashboard; anything else gets where things are.
#[utoipa::path(get, path = "/", tag = "node", summary = "Where things are (a browser is sent to /dashboard)", responses((status = 200, description = "Links to the docs, the document, the dashboard and health", content_type = "application/json", body = Object), (status = 303, description = "To /dashboard, when the client accepts HTML")))]
pub(crate) async fn index(headers: axum::http::HeaderMap) -> axum::response::Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")));
    if wants_html {
        return axum::response::Redirect::to("/dashboard").into_response();
    }
    axum::Json(serde_json::json!({
        "name": "verinet",
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "/docs",
        "openapi": "/openapi.json",
        "dashboard": "/dashboard",
        "health": "/health",
    }))
    .into_response()
}
