//! `GET /v1/flywheel?window=SECS[&end=MS]` and `GET /metrics`: the flywheel report, as JSON and as
//! Prometheus gauges named by layer.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Json,
    extract::{Query, State},
    http::header,
    response::IntoResponse,
};
use serde::Deserialize;
use verinet_flywheel::{ExecutorInfo, Inventory, Report, Window};
use verinet_store::ModelQuery;

use crate::prom::{family, sample};
use crate::{ApiError, AppState};

/// Default window: one hour.
const DEFAULT_WINDOW_SECS: u64 = 3600;
/// Longest window: thirty days.
const MAX_WINDOW_SECS: u64 = 30 * 24 * 3600;

/// Query of `GET /v1/flywheel`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WindowQuery {
    /// Window length in seconds, 1 to 30 days (default one hour).
    window: Option<u64>,
    /// The window ends with this time (unix ms) instead of now.
    end: Option<i64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The report over the `window_secs` up to `end_ms` (exclusive).
pub(crate) async fn report(st: &AppState, window_secs: u64, end_ms: i64) -> Result<Report, ApiError> {
    let w = Window::new(window_secs, end_ms - 1);
    let (tallies, history_since_ms) = st.events.tallies(&w).await?;
    // Hosted models, counted page by page (the list caps a page).
    let mut hosted = 0u64;
    let mut q = ModelQuery { limit: ModelQuery::MAX_LIMIT, ..Default::default() };
    loop {
        let page = st.hub.models().list(&q).await?;
        hosted += page.len() as u64;
        if (page.len() as u32) < q.effective_limit() {
            break;
        }
        q.offset += q.effective_limit();
    }
    let inventory = Inventory {
        hosted_models: hosted,
        executors: st
            .pool
            .all()
            .iter()
            .map(|e| ExecutorInfo {
                address: e.address(),
                role: format!("{:?}", e.role).to_lowercase(),
                reputation: e.stats().reputation(),
                active: st.pool.active(e),
            })
            .collect(),
        operator_cost_per_request: st.payments.operator_cost,
        history_since_ms,
    };
    Ok(Report::compute(&tallies, &inventory, w))
}

fn window(q: &WindowQuery) -> Result<u64, ApiError> {
    match q.window.unwrap_or(DEFAULT_WINDOW_SECS) {
        w @ 1..=MAX_WINDOW_SECS => Ok(w),
        w => Err(ApiError::InvalidParameter(format!("window {w} s: use 1 to {MAX_WINDOW_SECS} seconds"))),
    }
}

/// `GET /v1/flywheel?window=SECS[&end=MS]`.
#[utoipa::path(get, path = "/v1/flywheel", tag = "flywheel", summary = "Usage through every layer over a window, scores and the bottleneck", params(WindowQuery), responses((status = 200, body = verinet_flywheel::Report), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn flywheel(
    State(st): State<AppState>,
    q: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let now = now_ms();
    let end = match q.end {
        None => now + 1,
        Some(e) if e > 0 && e <= now + 60_000 => e,
        Some(e) => return Err(ApiError::InvalidParameter(format!("end {e}: a unix time in ms, not in the future"))),
    };
    Ok(Json(report(&st, window(&q)?, end).await?))
}

/// `GET /metrics`: counters and histograms of every request since the start (labelled by model,
/// mode, status, code), then the last hour's report as gauges `verinet_<layer>_<metric>`, every
/// layer's shortfall score and the bottleneck.
#[utoipa::path(get, path = "/metrics", tag = "flywheel", summary = "Prometheus text exposition", responses((status = 200, description = "Counters, histograms and the last hour's gauges", content_type = "text/plain", body = String), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let r = report(&st, DEFAULT_WINDOW_SECS, now_ms() + 1).await?;
    let mut out = String::new();
    st.traffic.counters.render(&mut out);
    let mut gauge = |name: &str, help: &str, v: f64| {
        let name = format!("verinet_{name}");
        family(&mut out, &name, "gauge", &format!("{help} (last hour)"));
        sample(&mut out, &name, &[], v);
    };
    gauge("usage_trusted_decisions", "paid, receipted results", r.usage.trusted_decisions as f64);
    gauge("usage_verified_decisions", "paid results that were also checked", r.usage.verified_decisions as f64);
    gauge("usage_growth_ratio", "trusted decisions against the hour before, minus 1 (0 when unknown)", r.usage.trend.growth.unwrap_or(0.0));
    gauge("compute_requests", "inference requests", r.compute.requests as f64);
    gauge("compute_served", "requests answered with a result", r.compute.served as f64);
    gauge("compute_rejected", "requests turned away for capacity", r.compute.rejected as f64);
    gauge("compute_active_executors", "executors in good standing", r.compute.active_executors as f64);
    gauge("compute_latency_p50_seconds", "median request time", r.compute.latency_p50_ms / 1000.0);
    gauge("compute_latency_p95_seconds", "95th percentile of request time", r.compute.latency_p95_ms / 1000.0);
    gauge("models_hosted", "models hosted", r.models.hosted as f64);
    gauge("models_active", "models served at least once", r.models.active as f64);
    gauge("models_prompt_tokens", "language-model input tokens served", r.models.prompt_tokens as f64);
    gauge("models_completion_tokens", "language-model tokens generated", r.models.completion_tokens as f64);
    gauge("usage_prompt_tokens", "language-model input tokens of trusted decisions", r.usage.tokens.prompt as f64);
    gauge("usage_completion_tokens", "language-model tokens generated in trusted decisions", r.usage.tokens.completion as f64);
    gauge("verification_cost_per_1k_tokens", "verification fees per 1,000 tokens of checked-mode language calls", r.verification.cost_per_1k_tokens);
    gauge("models_top_share_ratio", "share of results on the most used model", r.models.top_share);
    gauge("applications_active", "apps that brought requests", r.applications.active as f64);
    gauge("applications_via_apps_ratio", "share of requests through an app", r.applications.share_via_apps);
    gauge("users_unique", "distinct payers who tried", r.users.unique as f64);
    gauge("users_retention_ratio", "payers of the hour before who came back (0 when unknown)", r.users.retention.unwrap_or(0.0));
    gauge("payments_paid", "requests captured", r.payments.paid as f64);
    gauge("payments_failure_ratio", "refused payments over attempts", r.payments.failure_rate);
    gauge("incentives_operator_margin", "operator earnings minus cost per request, base units", r.incentives.operator_margin);
    gauge("verification_verified_ratio", "share of results checked", r.verification.share_verified);
    gauge("verification_disputes", "refutations", r.verification.disputes as f64);
    gauge("verification_dispute_ratio", "refuted over checked results", r.verification.dispute_rate);
    gauge("trust_trusted_ratio", "paid and receipted share of results", r.trust.trusted_share);
    gauge("trust_reputation_min", "lowest executor reputation", r.trust.reputation_min);
    family(&mut out, "verinet_layer_shortfall_ratio", "gauge", "how far each layer falls below healthy, 0 healthy to 1 nothing gets through (last hour; absent: not judged)");
    for s in &r.scores {
        if let Some(score) = s.score {
            sample(&mut out, "verinet_layer_shortfall_ratio", &[("layer", &s.layer)], score);
        }
    }
    family(&mut out, "verinet_bottleneck", "gauge", "the layer holding demand back (last hour)");
    sample(&mut out, "verinet_bottleneck", &[("layer", &r.bottleneck.layer)], 1.0);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// `GET /dashboard`: one self-contained page (no external network) that charts the report.
#[utoipa::path(get, path = "/dashboard", tag = "flywheel", summary = "The flywheel dashboard (HTML)", responses((status = 200, description = "A self-contained page", content_type = "text/html", body = String)))]
pub(crate) async fn dashboard() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("dashboard.html"))
}
