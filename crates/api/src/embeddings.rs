//! `POST /v1/embeddings` (OpenAI's shape), top to bottom: parse -> resolve (an `embedding`
//! model) -> tokenize on the gateway and check the limits -> price -> pay -> embed on a worker
//! (another one if it fails; on `quorum_k` at once for `quorum`) -> check (`sampled`: a
//! validator re-embeds; `quorum`: the majority within
//! [`verinet_verify::EMBED_COSINE_TOLERANCE`] wins) ->
//! capture or refund -> answer with the executor's receipt.

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
    wire::{PaymentSummary, ResolvedModel, VerificationMode},
};
use verinet_store::ModelVersion;
use verinet_primitives::{Address, wire::CheckInfo};
use verinet_verify::{EmbedJob, Executor, Ran, Terms, compare_embeddings};

use crate::openai::{exec_error, finish_event, hub_bytes, invalid, llm_error, parse, resolve, take_payment, verification_of};
use crate::{ApiError, AppState, infer, pay, verification};

/// Most inputs of one embeddings call (OpenAI's limit).
const MAX_EMBED_INPUTS: usize = 2048;
/// Most tokens of one embeddings call, all inputs together (bounds the batch's memory).
const MAX_EMBED_TOKENS: usize = 65_536;

/// `POST /v1/embeddings`.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", summary = "Embeddings (OpenAI's API)", request_body = verinet_primitives::openai::EmbeddingRequest, params(("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment: base64 JSON of an EIP-3009 (exact) or Permit2 (upto) authorization answering this route's 402 (legacy `X-PAYMENT` too)."), ("X-Verinet-App" = Option<String>, Header, description = "App id tagging the request (or `app` in the body).")), security((), ("session" = [])), responses((status = 200, body = verinet_primitives::openai::EmbeddingResponse), (status = 402, description = "Payment required: the x402 v2 `PAYMENT-REQUIRED` header (base64 JSON) lists what to sign; pay and retry. Also every payment refusal (docs/payments.md).", body = verinet_primitives::wire::ErrorBody, headers(("PAYMENT-REQUIRED" = String, description = "base64 JSON of x402 PaymentRequired"))), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
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
    let (mode, sample_rate) = verification_of(st, &model, req.verification, req.sample_rate)?;
    ev.mode = mode.as_str().to_owned();
    let executors = verification::route(st, mode, model.id)?;
    let paid = take_payment(st, headers, &model, req.app.as_deref(), &request_id, input_hash, executors[0].address(), (total as u64, 0), pay::Offer { path: "/v1/embeddings", upto: true }, mode, ev).await?;
    let terms = pay::language_terms(st, &request_id, input_hash, paid.as_ref(), mode);
    let shape = Shape { request_id, asked: req.model, base64, inputs: texts.len(), tokens: total as u32, mode, started };
    // Run, check and settle in a task of their own (as /v1/infer does); a captured answer is
    // kept with its capture.
    let task = {
        let (st, model, paid, shape) = (st.clone(), model.clone(), paid.clone(), shape.clone());
        async move {
            let result = match mode {
                VerificationMode::Quorum => embed_quorum(&st, executors, &model, ids, &terms).await,
                _ => embed_sampled(&st, executors[0].clone(), &model, ids, &terms, mode, sample_rate).await,
            };
            st.hub.record_call(&model, result.is_ok());
            let settled = match (&paid, &result) {
                (None, _) => Ok(None),
                // Refuted: the validator's vectors are the answer, and nobody is paid for them.
                (Some(p), Ok((_, _, check))) if check.status == "disputed" => {
                    infer::refund(&st, p, "a validator refuted the embeddings").await;
                    Ok(None)
                }
                (Some(p), Ok((e, ran, check))) => {
                    let tx_id = verinet_ledger::new_tx_id();
                    let payment = pay::summary(Some(p), Some(&tx_id));
                    let answer = shape
                        .render(&model, ran, check, payment.clone())
                        .and_then(|b| serde_json::to_string(&b).map_err(|e| ApiError::Internal(e.to_string())));
                    infer::capture_kept(&st, p, ran, e.address(), tx_id, answer).await.map(|a| Some((a, payment)))
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
    let (executor, ran, check) = result?;
    let captured = settled?;
    ev.executor = Some(executor.address());
    ev.check = Some(check.status.clone());
    ev.disputed = check.disputed.clone();
    Ok(match captured {
        Some((answer, payment)) => {
            if let Some(p) = &paid {
                pay::record_charge(ev, &p.escrow.quote);
            }
            let mut resp = ([(axum::http::header::CONTENT_TYPE, "application/json")], answer).into_response();
            pay::settle_header(st, payment.as_ref(), &mut resp);
            resp
        }
        None => {
            st.receipts.record(&ran.receipt);
            Json(shape.render(&model, &ran, &check, None)?).into_response()
        }
    })
}

/// What the answer to one embeddings request looks like, fixed before it runs.
#[derive(Clone)]
struct Shape {
    request_id: String,
    /// The model as the request named it.
    asked: String,
    base64: bool,
    inputs: usize,
    tokens: u32,
    mode: VerificationMode,
    started: Instant,
}

impl Shape {
    /// The answer to send for `ran` (checked as `check`), with its payment.
    fn render(&self, model: &ModelVersion, ran: &Ran, check: &CheckInfo, payment: Option<PaymentSummary>) -> Result<EmbeddingResponse, ApiError> {
        let vectors = ran.out.outputs.get("embeddings").ok_or_else(|| ApiError::Internal("the answer has no embeddings".into()))?;
        let dims = vectors.shape().get(1).copied().unwrap_or(0);
        let raw = vectors.raw();
        if raw.len() < self.inputs * dims * 4 {
            return Err(ApiError::Internal(format!("the answer has {} bytes of vectors for {} inputs", raw.len(), self.inputs)));
        }
        let data = (0..self.inputs)
            .map(|i| {
                let bytes = &raw[i * dims * 4..(i + 1) * dims * 4];
                let embedding = if self.base64 {
                    serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    serde_json::to_value(floats).unwrap_or_default()
                };
                EmbeddingData { object: "embedding".into(), index: i as u32, embedding }
            })
            .collect();
        Ok(EmbeddingResponse {
            object: "list".into(),
            data,
            model: self.asked.clone(),
            usage: EmbeddingUsage { prompt_tokens: self.tokens, total_tokens: self.tokens },
            verinet: EmbeddingProof {
                request_id: self.request_id.clone(),
                model: ResolvedModel { name: model.name.clone(), version: model.version.clone(), sha256: model.id },
                price: payment.as_ref().map_or_else(|| "0".into(), |p| p.amount.clone()),
                payment,
                receipt: ran.receipt.clone(),
                check: (self.mode != VerificationMode::None).then(|| check.clone()),
                total_ms: self.started.elapsed().as_secs_f64() * 1e3,
            },
        })
    }
}

type Checked = (Arc<Executor>, Ran, CheckInfo);

/// Embeds on `first` (with failover) and, for `sampled` with probability `p`, re-embeds on a
/// validator other than the worker: vectors apart by more than the cosine tolerance refute
/// the worker (slashed, dispute recorded), and the validator's vectors are the answer.
async fn embed_sampled(
    st: &AppState,
    first: Arc<Executor>,
    model: &ModelVersion,
    ids: Vec<Vec<u32>>,
    terms: &Terms,
    mode: VerificationMode,
    p: f64,
) -> Result<Checked, ApiError> {
    let unchecked = || verification::check("unchecked", vec![], vec![]);
    if mode != VerificationMode::Sampled || !st.pool.sample(p) {
        let (e, ran) = embed_failover(st, first, model, ids, terms).await?;
        return Ok((e, ran, unchecked()));
    }
    let (worker, ran) = embed_failover(st, first, model, ids.clone(), terms).await?;
    let Some(validator) = st.pool.pick_checker(model.id, &worker) else {
        warn!(request_id = %terms.request_id, "sampled for re-execution but no validator is in good standing");
        return Ok((worker, ran, unchecked()));
    };
    let check_terms = Terms { price: 0, payer: Address::ZERO, ..terms.clone() };
    let job = EmbedJob { model: model.id, ids, terms: check_terms, load: verification::hub_loader(st) };
    let truth = {
        let _busy = validator.in_flight();
        validator.backend().embed(job).await
    };
    let truth = match truth {
        Ok(t) => t,
        Err(e) => {
            warn!(request_id = %terms.request_id, validator = %validator.address(), error = %e, "the re-execution did not run; unchecked");
            return Ok((worker, ran, unchecked()));
        }
    };
    match compare_embeddings(&ran, &truth) {
        Ok(()) => {
            worker.checked(true);
            Ok((worker, ran, verification::check("passed", vec![validator.address()], vec![])))
        }
        Err(m) => {
            let (got, want) = (format!("{:#x}", ran.receipt.receipt.output_hash), format!("{:#x}", truth.receipt.receipt.output_hash));
            verification::dispute(st, &worker, &validator, got, want, &m, "sampled", &terms.request_id).await;
            let check = verification::check("disputed", vec![validator.address()], vec![worker.address()]);
            Ok((validator, truth, check))
        }
    }
}

/// Embeds on every member at once; the largest group whose vectors agree within the cosine
/// tolerance wins if it is a majority (members whose run failed do not vote), and the others
/// are slashed. The payer pays once.
async fn embed_quorum(st: &AppState, members: Vec<Arc<Executor>>, model: &ModelVersion, ids: Vec<Vec<u32>>, terms: &Terms) -> Result<Checked, ApiError> {
    let k = members.len();
    let runs = members.iter().map(|e| {
        let job = EmbedJob { model: model.id, ids: ids.clone(), terms: terms.clone(), load: verification::hub_loader(st) };
        async move {
            let _busy = e.in_flight();
            e.backend().embed(job).await
        }
    });
    let outcomes = futures::future::join_all(runs).await;
    let mut results: Vec<(Arc<Executor>, Ran)> = Vec::new();
    for (e, r) in members.into_iter().zip(outcomes) {
        match r {
            Ok(ran) => results.push((e, ran)),
            Err(err) => {
                st.pool.judge(&e, &err);
                warn!(request_id = %terms.request_id, executor = %e.address(), error = %err, "quorum member failed; it does not vote");
            }
        }
    }
    let best = verification::majority(&results, k, |a, b| compare_embeddings(a, b).is_ok())?;
    let (winner, truth) = results[best].clone();
    let (mut passed, mut disputed) = (Vec::new(), Vec::new());
    for (e, ran) in &results {
        match compare_embeddings(ran, &truth) {
            Ok(()) => {
                e.checked(true);
                passed.push(e.address());
            }
            Err(m) => {
                let (got, want) = (format!("{:#x}", ran.receipt.receipt.output_hash), format!("{:#x}", truth.receipt.receipt.output_hash));
                verification::dispute(st, e, &winner, got, want, &m, "quorum", &terms.request_id).await;
                disputed.push(e.address());
            }
        }
    }
    winner.served();
    Ok((winner, truth, verification::check("quorum", passed, disputed)))
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
        st.pool.judge(&e, &err);
        warn!(request_id = %terms.request_id, executor = %e.address(), error = %err, "executor failed; trying another");
        match st.pool.pick_workers(1, model.id, &tried).pop() {
            Some(n) if tried.len() < st.network.max_attempts.max(1) => e = n,
            _ => return Err(ApiError::WorkersFailed { attempts: tried.len(), last: err.to_string() }),
        }
    }
}
