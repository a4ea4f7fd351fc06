use std::time::Duration;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    routing::{get, post},
};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};

use crate::limits::{BodyBudget, reserve_body};
use crate::{ApiError, AppState, embeddings, flywheel, health::health, infer::infer, models, money, nodes, openai, receipts};

/// The node's HTTP API. Uploads get their own (long) timeout and no buffered-body limit:
/// the hub streams and bounds them itself.
pub fn router(state: AppState) -> Router {
    let cfg = state.config.clone();
    // One budget of body bytes in flight for all the routes that read large bodies.
    let permits = BodyBudget::permits(cfg.max_inflight_body);
    let budget = |route_limit: usize| {
        axum::middleware::from_fn_with_state(BodyBudget::for_route(&permits, cfg.max_inflight_body, route_limit), reserve_body)
    };
    let uploads = Router::new()
        .route("/v1/models", post(models::publish))
        .layer(DefaultBodyLimit::disable())
        .layer(timeout(cfg.upload_timeout));
    let rest = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{name}", get(models::detail))
        .route("/v1/models/{name}/{version}", get(models::version_detail))
        .route("/v1/blobs/{sha256}", get(models::blob))
        .route("/v1/infer", post(infer).layer(DefaultBodyLimit::max(cfg.max_infer_body)).layer(budget(cfg.max_infer_body)))
        .route("/v1/chat/completions", post(openai::chat_completions).layer(DefaultBodyLimit::max(cfg.max_openai_body)).layer(budget(cfg.max_openai_body)))
        .route("/v1/completions", post(openai::completions).layer(DefaultBodyLimit::max(cfg.max_openai_body)).layer(budget(cfg.max_openai_body)))
        .route("/v1/embeddings", post(embeddings::embeddings).layer(DefaultBodyLimit::max(cfg.max_openai_body)).layer(budget(cfg.max_openai_body)))
        .route("/v1/accounts/{address}", get(money::account))
        .route("/v1/faucet", post(money::faucet))
        .route("/v1/apps", post(money::register_app))
        .route("/v1/apps/{id}", get(money::app))
        .route("/v1/sessions", post(money::open_session))
        .route("/v1/payments/{request_id}", get(money::payment))
        .route("/v1/payments/by-nonce/{payer}/{nonce}", get(money::payment_by_nonce))
        .route("/v1/ledger/audit", get(money::ledger_audit))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/heartbeat", post(nodes::heartbeat).layer(DefaultBodyLimit::max(1 << 20)))
        .route("/v1/stake", post(nodes::stake).layer(DefaultBodyLimit::max(64 << 10)))
        .route("/v1/flywheel", get(flywheel::flywheel))
        .route("/metrics", get(flywheel::metrics))
        .route("/dashboard", get(flywheel::dashboard))
        .route("/v1/receipts/{request_id}", get(receipts::receipt))
        .route("/v1/receipts/{request_id}/proof", get(receipts::proof))
        .route("/x402/supported", get(money::x402_supported))
        .route("/x402/verify", post(money::x402_verify))
        .route("/x402/settle", post(money::x402_settle))
        .layer(timeout(cfg.request_timeout));
    uploads
        .merge(rest)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
