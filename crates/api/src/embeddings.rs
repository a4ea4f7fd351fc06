//! `POST /v1/embeddings` (OpenAI's shape), top to bottom: parse -> resolve (an `embedding`
//! model) -> tokenize on the gateway and check the limits -> price -> pay -> embed on a worker
//! (another one if it fails) -> capture or refund -> answer with the executor's receipt.

use std::sync::Arc;
use std::time::Instant;

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use tracing::{Span, instrument, warn};
use verinet_flywheel::RequestEvent;
use verinet_llm::LlmError;
use verinet_primitives::{
    ModelKind, token_lists_hash,
    openai::{EmbeddingData, EmbeddingInput, EmbeddingProof, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage},
    wire::{ResolvedModel, VerificationMode},
};
use verinet_store::ModelVersion;
use verinet_verify::{EmbedJob, ExecError, Executor, Ran, Terms};

use crate::openai::{exec_error, finish_event, hub_bytes, invalid, llm_error, parse, resolve, take_payment};
use crate::{ApiError, AppState, infer, pay, verification};

/// Most inputs of one embeddings call (OpenAI's limit).
const MAX_EMBED_INPUTS: usize = 2048;
/// Most tokens of one embeddings call, all inputs together (bounds the batch's memory).
const MAX_EMBED_TOKENS: usize = 65_536;

/// `POST /v1/embeddings`.
#[instrument(skip_all, fields(request_id, model))]
pub(crate) async fn embeddings(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut ev = RequestEvent { mode: "none".into(), ..RequestEvent::default() };
    let started = Instant::now();
    let result = embed(&st, &headers, body, &mut ev, started).await.map(|r| (r, false));
    finish_event(&st, ev, started, result)
}

async fn embed(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    ev: &mut RequestEvent,
    started: Instant,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse(st, body)?;
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(v) => v,
    };
    if texts.is_empty() {
        return Err(invalid("empty_input", "input is empty; send a string or an array of strings"));
    }
    if texts.len() > MAX_EMBED_INPUTS {
        return Err(invalid("too_many_inputs", format!("input has {} strings; at most {MAX_EMBED_INPUTS} per request", texts.len())));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(invalid("empty_input", format!("input[{i}] is an empty string")));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(invalid("invalid_parameter", format!("encoding_format {other:?}: use float or base64"))),
    };
    ev.app = req.app.clone();
    let model = resolve(st, &req.model, ModelKind::Embedding, "/v1/embeddings").await?;
    ev.model = Some(model.name.clone());
    let dims = model.signature.language.as_ref().and_then(|l| l.get("dimensions")).and_then(|d| d.as_u64());
    if let (Some(want), Some(have)) = (req.dimensions, dims)
        && u64::from(want) != have
    {
        return Err(invalid("invalid_parameter", format!("dimensions {want}: this model gives {have}-dimensional vectors")));
    }
    let tokenizer = st.llm.encoder_tokenizer(*model.id.digest(), hub_bytes(st, &model)).await.map_err(llm_error)?;
    let ids = tokenizer.tokenize(&texts).map_err(|e| match e {
        LlmError::Input(m) if m.contains("tokens; this model takes at most") => invalid("context_length_exceeded", m),
        other => llm_error(other),
    })?;
    let total: usize = ids.iter().map(Vec::len).sum();
    if total > MAX_EMBED_TOKENS {
        return Err(invalid("too_many_tokens", format!("the inputs have {total} tokens together; at most {MAX_EMBED_TOKENS} per request")));
    }
    ev.prompt_tokens = total as u64;

    let request_id = infer::new_request_id();
    Span::current().record("request_id", request_id.as_str());
    let input_hash = token_lists_hash(&ids);
    let executors = verification::route(st, VerificationMode::None, model.id)?;
    let paid = take_payment(st, headers, &model, req.app.as_deref(), &request_id, input_hash, executors[0].address(), (total as u64, 0), pay::Offer { path: "/v1/embeddings", upto: true }, VerificationMode::None, ev).await?;
    let terms = pay::language_terms(st, &request_id, input_hash, paid.as_ref(), VerificationMode::None);
    // Run and settle in a task of their own (as /v1/infer does).
    let task = {
        let (st, model, paid, first) = (st.clone(), model.clone(), paid.clone(), executors[0].clone());
        async move {
            let result = embed_failover(&st, first, &model, ids, &terms).await;
            st.hub.record_call(&model, result.is_ok());
            let settled = match (&paid, &result) {
                (None, _) => Ok(None),
                (Some(p), Ok((e, ran))) => {
                    infer::capture(&st, p, &format!("{:#x}", ran.receipt.receipt.output_hash), e.address()).await.map(Some)
                }
                (Some(p), Err(err)) => {
                    infer::refund(&st, p, &err.to_string()).await;
                    Ok(None)
                }
            };
            (result, settled)
        }
    };
    let (result, settled) = tokio::spawn(task).await.map_err(|e| ApiError::Internal(format!("embedding task: {e}")))?;
    let (executor, ran) = result?;
    let capture = settled?;
    ev.executor = Some(executor.address());
    ev.check = Some("unchecked".into());
    if let (Some(p), Some(_)) = (&paid, &capture) {
        pay::record_charge(ev, &p.escrow.quote);
    }
    st.receipts.record(&ran.receipt);

    let vectors = ran.out.outputs.get("embeddings").ok_or_else(|| ApiError::Internal("the answer has no embeddings".into()))?;
    let dims = vectors.shape().get(1).copied().unwrap_or(0);
    let raw = vectors.raw();
    let data = (0..texts.len())
        .map(|i| {
            let bytes = &raw[i * dims * 4..(i + 1) * dims * 4];
            let embedding = if base64 {
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                serde_json::to_value(floats).unwrap_or_default()
            };
            EmbeddingData { object: "embedding".into(), index: i as u32, embedding }
        })
        .collect();
    let payment = pay::summary(paid.as_ref(), capture.as_ref());
    let tokens = total as u32;
    let body = EmbeddingResponse {
        object: "list".into(),
        data,
        model: req.model,
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
        verinet: EmbeddingProof {
            request_id,
            model: ResolvedModel { name: model.name, version: model.version, sha256: model.id },
            price: payment.as_ref().map_or_else(|| "0".into(), |p| p.amount.clone()),
            payment: payment.clone(),
            receipt: ran.receipt,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
        },
    };
    let mut resp = Json(body).into_response();
    pay::settle_header(st, payment.as_ref(), &mut resp);
    Ok(resp)
}

/// Embeds on `first`, and on other workers while they fail in a way another may not.
async fn embed_failover(
    st: &AppState,
    first: Arc<Executor>,
    model: &ModelVersion,
    ids: Vec<Vec<u32>>,
    terms: &Terms,
) -> Result<(Arc<Executor>, Ran), ApiError> {
    let mut tried = Vec::new();
    let mut e = first;
    loop {
        tried.push(e.address());
        let _guard = e.in_flight();
        let job = EmbedJob { model: model.id, ids: ids.clone(), terms: terms.clone(), load: verification::hub_loader(st) };
        let err = match e.backend().embed(job).await {
            Ok(ran) => {
                e.served();
                return Ok((e, ran));
            }
            Err(err) if !err.retriable() => return Err(exec_error(err)),
            Err(err) => err,
        };
        if matches!(err, ExecError::Unavailable(_)) {
            e.mark_down();
        }
        warn!(request_id = %terms.request_id, executor = %e.address(), error = %err, "executor failed; trying another");
        match st.pool.pick_workers(1, model.id, &tried).pop() {
            Some(n) if tried.len() < st.network.max_attempts.max(1) => e = n,
            _ => return Err(ApiError::WorkersFailed { attempts: tried.len(), last: err.to_string() }),
        }
    }
}
