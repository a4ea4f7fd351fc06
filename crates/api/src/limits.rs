//! A budget of request-body bytes in flight across the node.
//!
//! Each route bounds one body (`DefaultBodyLimit`); this bounds them together, so a burst of
//! large bodies cannot take the node's memory: a request reserves its `Content-Length` (the
//! route's limit when it has none, as a chunked body may grow to it) before its body is read,
//! and holds it until its handler returns. One that does not fit gets 503 `busy` with
//! Retry-After; nothing was read or charged.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::header::CONTENT_LENGTH,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use crate::ApiError;

/// Permits are KiB, so a u32 count covers budgets up to 4 TiB.
const UNIT: usize = 1024;

/// The node's body budget and one route's body limit.
#[derive(Clone)]
pub(crate) struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
    route_limit: usize,
}

impl BodyBudget {
    /// The permits of a budget of `total` bytes (shared by every route's [`BodyBudget`]).
    pub(crate) fn permits(total: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new((total / UNIT).max(1)))
    }

    /// The budget `permits` of `total` bytes, for a route whose bodies may be `route_limit`.
    pub(crate) fn for_route(permits: &Arc<Semaphore>, total: usize, route_limit: usize) -> Self {
        Self { permits: permits.clone(), total, route_limit }
    }
}

/// Reserves the request's body bytes for as long as its handler runs.
pub(crate) async fn reserve_body(State(b): State<BodyBudget>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    // A declared length over the route limit reserves only the limit: the body is refused (413)
    // when it reaches it.
    let bytes = declared.unwrap_or(b.route_limit).min(b.route_limit).min(b.total);
    let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
    let Ok(_held) = b.permits.clone().try_acquire_many_owned(units) else {
        return ApiError::BodiesBusy { limit: b.total as u64 }.into_response();
    };
    next.run(req).await
}
