use std::time::Duration;

use axum::{Router, extract::DefaultBodyLimit, http::StatusCode, routing::MethodRouter};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, router::UtoipaMethodRouter, routes};

use crate::limits::{BodyBudget, reserve_body};
use crate::openapi::{self, ApiDoc};
use crate::{ApiConfig, ApiError, AppState, embeddings, flywheel, health, infer, models, money, nodes, openai, receipts};

/// The node's HTTP API. Uploads get their own (long) timeout and no buffered-body limit:
/// the hub streams and bounds them itself.
pub fn router(state: AppState) -> Router {
    let (router, _spec) = api_routes(&state.config).split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every route, each from a handler annotated with its OpenAPI operation (`routes!`), so the
/// document at `/openapi.json` lists exactly what the router serves. No route is added with
/// plain `.route(...)` (a test holds this).
pub(crate) fn api_routes(cfg: &ApiConfig) -> OpenApiRouter<AppState> {
    // One budget of body bytes in flight for all the routes that read large bodies.
    let permits = BodyBudget::permits(cfg.max_inflight_body);
    let bounded = |route_limit: usize| {
        let budget = axum::middleware::from_fn_with_state(BodyBudget::for_route(&permits, cfg.max_inflight_body, route_limit), reserve_body);
        move |r: MethodRouter<AppState>| r.layer(DefaultBodyLimit::max(route_limit)).layer(budget)
    };
    let small = |limit: usize| move |r: MethodRouter<AppState>| r.layer(DefaultBodyLimit::max(limit));
    let uploads = OpenApiRouter::new()
        .routes(routes!(models::publish))
        .layer(DefaultBodyLimit::disable())
        .layer(timeout(cfg.upload_timeout));
    let rest = OpenApiRouter::new()
        .routes(routes!(openapi::index))
        .routes(routes!(health::health))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(models::list))
        .routes(routes!(models::detail))
        .routes(routes!(models::version_detail))
        .routes(routes!(models::blob))
        .routes(with(routes!(infer::infer), bounded(cfg.max_infer_body)))
        .routes(with(routes!(openai::chat_completions), bounded(cfg.max_openai_body)))
        .routes(with(routes!(openai::completions), bounded(cfg.max_openai_body)))
        .routes(with(routes!(embeddings::embeddings), bounded(cfg.max_openai_body)))
        .routes(routes!(money::account))
        .routes(routes!(money::faucet))
        .routes(routes!(money::register_app, money::list_apps))
        .routes(routes!(money::transfer))
        .routes(routes!(money::app))
        .routes(routes!(money::open_session))
        .routes(routes!(money::payment))
        .routes(routes!(money::payment_by_nonce))
        .routes(routes!(money::ledger_audit))
        .routes(routes!(nodes::list))
        .routes(with(routes!(nodes::heartbeat), small(1 << 20)))
        .routes(with(routes!(nodes::stake), small(64 << 10)))
        .routes(routes!(flywheel::flywheel))
        .routes(routes!(flywheel::metrics))
        .routes(routes!(flywheel::dashboard))
        .routes(routes!(receipts::receipt))
        .routes(routes!(receipts::proof))
        .routes(routes!(money::x402_supported))
        .routes(routes!(money::x402_verify))
        .routes(routes!(money::x402_settle))
        .layer(timeout(cfg.request_timeout));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(uploads).merge(rest)
}

/// A route with layers of its own (body limits) on its method router.
fn with(
    (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
    layers: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    (schemas, paths, layers(method_router))
}

fn timeout(d: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, d)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
