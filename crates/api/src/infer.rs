//! `POST /v1/infer`: one request, top to bottom.
//!
//! resolve the model -> validate inputs against its signature -> price -> pay -> execute ->
//! account usage -> answer with outputs and timings. Payment is a step of its own so that the
//! x402 flow (402, escrow, capture) slots in without moving anything else.

use std::time::Instant;

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
};
use rand::RngCore;
use serde_json::{Map, Value};
use tracing::{Span, info, instrument};
use verinet_hub::HubError;
use verinet_primitives::{
    ModelRef,
    wire::{InferRequest, InferResponse, OutputEncoding, ResolvedModel, TimingsMs, VerificationMode},
};
use verinet_runtime::RuntimeError;

use crate::{ApiError, AppState, dto};

/// The handler. Each numbered step is one concern.
#[instrument(skip_all, fields(request_id, model))]
pub(crate) async fn infer(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InferResponse>, ApiError> {
    let started = Instant::now();
    let request_id = new_request_id();
    Span::current().record("request_id", request_id.as_str());

    // 1. Parse. Size is bounded by the route's body limit.
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge { limit: st.config.max_infer_body as u64 },
        other => ApiError::InvalidJson(other.body_text()),
    })?;
    let req: InferRequest = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if req.verification != VerificationMode::None {
        return Err(ApiError::Unsupported(format!(
            "verification mode {:?} is not available on this node yet; use \"none\"",
            req.verification
        )));
    }

    // 2. Resolve the model by name, name@version or sha256.
    let model_ref: ModelRef = req.model.parse().map_err(|e: verinet_primitives::Error| ApiError::InvalidModelRef(e.to_string()))?;
    let model = st.hub.resolve(&model_ref).await?;
    Span::current().record("model", tracing::field::display(&model.id));

    // 3. Validate inputs against the stored signature before anything costs money or CPU.
    model
        .signature
        .check_inputs(&req.inputs, st.runtime.config().max_input_elements)
        .map_err(|e| ApiError::Runtime(RuntimeError::Input(e)))?;

    // 4. Price and 5. pay. Requests are free until the payments issue: the quote is reported,
    //    nothing is charged, and nothing can be captured without a result.
    let price = dto::price_of(&model).total;

    // 6. Execute on the runtime's blocking pool (queue, compile-on-miss, timeout).
    let hub = st.hub.clone();
    let id = model.id;
    let load = || async move { hub.load_bytes(&id).await.map_err(load_error) };
    let result = st.runtime.run(model.id, load, req.inputs).await;

    // 7. Account usage whatever happened in execution (buffered, never on the durable path).
    st.hub.record_call(&model, result.is_ok());
    let out = result?;

    // 8. Answer.
    let outputs: Map<String, Value> = out
        .outputs
        .iter()
        .map(|(name, t)| {
            let v = match req.output_encoding {
                OutputEncoding::Data => serde_json::to_value(t).unwrap_or(Value::Null),
                OutputEncoding::B64 => t.to_b64_json(),
            };
            (name.clone(), v)
        })
        .collect();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let timings_ms = TimingsMs {
        load: ms(out.timings.load),
        queue: ms(out.timings.queue),
        compute: ms(out.timings.compute),
        total: ms(started.elapsed()),
    };
    info!(compute_ms = timings_ms.compute, total_ms = timings_ms.total, "inference served");
    Ok(Json(InferResponse {
        request_id,
        model: ResolvedModel { name: model.name, version: model.version, sha256: model.id },
        outputs,
        price,
        verification: req.verification,
        timings_ms,
    }))
}

fn load_error(e: HubError) -> RuntimeError {
    RuntimeError::Load(e.to_string())
}

/// 128 random bits as hex: unique without coordination between gateways.
fn new_request_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}
