//! The OpenAI-compatible completion routes, `POST /v1/chat/completions` and `/v1/completions`
//! (`/v1/embeddings` is in `embeddings.rs`), one request top to bottom as in `infer.rs`:
//!
//! parse -> resolve the model (and check its kind) -> tokenize on the gateway and check the
//! limits -> price -> pay (escrow) -> execute on a worker (another one if it fails before its
//! first token) -> capture or refund -> answer (JSON, or server-sent events) with the
//! executor's receipt in a `verinet` field.
//!
//! The gateway tokenizes, so the prompt ids the receipt binds are fixed before any worker runs
//! and every worker generates from the same ids. A client that leaves a stream before its end
//! pays for the prompt and the completion tokens the gateway handed to its connection, never
//! more (the gateway signs a receipt saying so, [`GenContext::settle_cut`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::{
    body::{Body, Bytes},
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use rand::RngCore;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{Span, debug, info, instrument, warn};
use verinet_flywheel::RequestEvent;
use verinet_llm::{ChatMessage, LlmError, TextCodec};
use verinet_primitives::{
    Address, ModelKind, ModelRef, token_ids_hash,
    openai::{
        ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessageOut, ChunkChoice, CompletionProof,
        CompletionRequest, Content, Delta, GenerationOptions, Prompt, TextChoice, TextCompletion, Usage,
    },
    wire::{CheckInfo, ModelPolicy, PaymentSummary, ResolvedModel, VerificationMode},
};
use verinet_store::ModelVersion;
use verinet_verify::{CheckJob, Completed, ExecError, Executor, GenChunk, GenJob, GenStream, Generation, InFlightGuard, Terms};

use crate::{ApiError, AppState, infer, pay, verification};

/// Why a stream ended before its end, when the client left.
const CLIENT_CLOSED: &str = "the client closed the stream";
/// The finish reason a gateway's receipt for a stream cut short states.
const CUT: &str = "client_closed";

/// Most stop strings (OpenAI's limit).
const MAX_STOP: usize = 4;

/// Which OpenAI shape a generation answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chat,
    Text,
}

impl Shape {
    fn path(self) -> &'static str {
        match self {
            Shape::Chat => "/v1/chat/completions",
            Shape::Text => "/v1/completions",
        }
    }
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", summary = "Chat completion (OpenAI's API; JSON or server-sent events)", request_body = verinet_primitives::openai::ChatCompletionRequest, params(("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment: base64 JSON of an EIP-3009 (exact) or Permit2 (upto) authorization answering this route's 402 (legacy `X-PAYMENT` too)."), ("X-Verinet-App" = Option<String>, Header, description = "App id tagging the request (or `app` in the body).")), security((), ("session" = [])), responses((status = 200, description = "A chat.completion, or with `stream: true` text/event-stream of chat.completion.chunk lines; `verinet` carries the receipt", body = verinet_primitives::openai::ChatCompletion), (status = 402, description = "Payment required: the x402 v2 `PAYMENT-REQUIRED` header (base64 JSON) lists what to sign; pay and retry. Also every payment refusal (docs/payments.md).", body = verinet_primitives::wire::ErrorBody, headers(("PAYMENT-REQUIRED" = String, description = "base64 JSON of x402 PaymentRequired"))), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all, fields(request_id, model))]
pub(crate) async fn chat_completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut ev = RequestEvent { mode: "none".into(), ..RequestEvent::default() };
    let started = Instant::now();
    let result = async {
        let req: ChatCompletionRequest = parse(&st, body)?;
        let messages = chat_messages(&req)?;
        ev.app = req.options.app.clone();
        let model = resolve(&st, &req.model, ModelKind::Llm, "/v1/chat/completions").await?;
        ev.model = Some(model.name.clone());
        let codec = st.llm.codec(*model.id.digest(), hub_bytes(&st, &model)).await.map_err(llm_error)?;
        let text = codec.render_chat(&messages).map_err(llm_error)?;
        let prompt = codec.encode(&text).map_err(llm_error)?;
        generate(&st, &headers, model, req.model, (codec, prompt), req.options, Shape::Chat, &mut ev, started).await
    }
    .await;
    finish_event(&st, ev, started, result)
}

/// `POST /v1/completions`.
#[utoipa::path(post, path = "/v1/completions", tag = "openai", summary = "Text completion (OpenAI's API; JSON or server-sent events)", request_body = verinet_primitives::openai::CompletionRequest, params(("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment: base64 JSON of an EIP-3009 (exact) or Permit2 (upto) authorization answering this route's 402 (legacy `X-PAYMENT` too)."), ("X-Verinet-App" = Option<String>, Header, description = "App id tagging the request (or `app` in the body).")), security((), ("session" = [])), responses((status = 200, description = "A text_completion (or a stream of them)", body = verinet_primitives::openai::TextCompletion), (status = 402, description = "Payment required: the x402 v2 `PAYMENT-REQUIRED` header (base64 JSON) lists what to sign; pay and retry. Also every payment refusal (docs/payments.md).", body = verinet_primitives::wire::ErrorBody, headers(("PAYMENT-REQUIRED" = String, description = "base64 JSON of x402 PaymentRequired"))), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all, fields(request_id, model))]
pub(crate) async fn completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut ev = RequestEvent { mode: "none".into(), ..RequestEvent::default() };
    let started = Instant::now();
    let result = async {
        let req: CompletionRequest = parse(&st, body)?;
        let text = match req.prompt {
            Prompt::Text(t) => t,
            Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Many(v) => {
                return Err(invalid("unsupported_parameter", format!("prompt: one prompt per request is served, got {}", v.len())));
            }
        };
        if text.is_empty() {
            return Err(invalid("empty_prompt", "prompt is empty"));
        }
        ev.app = req.options.app.clone();
        let model = resolve(&st, &req.model, ModelKind::Llm, "/v1/completions").await?;
        ev.model = Some(model.name.clone());
        let codec = st.llm.codec(*model.id.digest(), hub_bytes(&st, &model)).await.map_err(llm_error)?;
        let prompt = codec.encode(&text).map_err(llm_error)?;
        generate(&st, &headers, model, req.model, (codec, prompt), req.options, Shape::Text, &mut ev, started).await
    }
    .await;
    finish_event(&st, ev, started, result)
}

/// An answer, and whether its usage event is left to a stream that is still running.
pub(crate) type Answered = (Response, bool);

/// Emits the usage event of a request that ended in the handler (a stream emits its own at
/// its end).
pub(crate) fn finish_event(st: &AppState, mut ev: RequestEvent, started: Instant, result: Result<Answered, ApiError>) -> Result<Response, ApiError> {
    match &result {
        Ok((_, true)) => return result.map(|(r, _)| r),
        Ok(_) => ev.status = 200,
        Err(e) => {
            let (status, code) = e.status_and_code();
            ev.status = status.as_u16();
            ev.error = Some(code.to_owned());
        }
    }
    ev.total_ms = started.elapsed().as_secs_f64() * 1e3;
    crate::traffic::served(st, ev);
    result.map(|(r, _)| r)
}

pub(crate) fn parse<T: DeserializeOwned>(st: &AppState, body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge { limit: st.config.max_openai_body as u64 },
        other => ApiError::InvalidJson(other.body_text()),
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest { code, message: message.into() }
}

pub(crate) fn llm_error(e: LlmError) -> ApiError {
    ApiError::Llm(e)
}

/// The messages as the template takes them: roles checked, text parts joined.
fn chat_messages(req: &ChatCompletionRequest) -> Result<Vec<ChatMessage>, ApiError> {
    if req.messages.is_empty() {
        return Err(invalid("empty_messages", "messages is empty; send at least one message"));
    }
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(invalid(
                        "invalid_role",
                        format!("messages[{i}].role {other:?}: use system, developer, user or assistant"),
                    ));
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(invalid(
                                    "unsupported_content",
                                    format!("messages[{i}].content[{j}]: only text parts are served, got {kind:?}"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            if content.is_empty() && role != "assistant" {
                return Err(invalid("empty_message", format!("messages[{i}] has no content")));
            }
            Ok(ChatMessage { role: role.to_owned(), content })
        })
        .collect()
}

/// The latest version of `name` (or the exact one named), which must be of `kind`.
pub(crate) async fn resolve(st: &AppState, name: &str, kind: ModelKind, route: &'static str) -> Result<Arc<ModelVersion>, ApiError> {
    let model_ref: ModelRef = name.parse().map_err(|e: verinet_primitives::Error| ApiError::InvalidModelRef(e.to_string()))?;
    let model = st.hub.resolve_for_call(&model_ref).await?;
    Span::current().record("model", tracing::field::display(&model.id));
    if model.signature.kind != kind {
        let serves = match kind {
            ModelKind::Llm => "llm",
            ModelKind::Embedding => "embedding",
            ModelKind::Onnx => "onnx",
        };
        return Err(ApiError::WrongModelKind { model: name.to_owned(), kind: model.signature.kind, route, serves });
    }
    Ok(model)
}

/// The model's bytes from this gateway's hub, for its tokenizer.
pub(crate) fn hub_bytes(st: &AppState, model: &ModelVersion) -> impl Future<Output = Result<Bytes, LlmError>> + use<> {
    let (hub, id) = (st.hub.clone(), model.id);
    async move { hub.load_bytes(&id).await.map_err(|e| LlmError::Engine(format!("model bytes: {e}"))) }
}

/// The context window served for `model`: the node's limit, at most the model's own.
fn context_of(st: &AppState, model: &ModelVersion) -> usize {
    let own = model
        .signature
        .language
        .as_ref()
        .and_then(|l| l.get("context_length"))
        .and_then(|c| c.as_u64())
        .map_or(usize::MAX, |c| c as usize);
    st.llm.config().max_context.min(own)
}

/// The request's verification mode and sampling rate (request > model policy > node).
pub(crate) fn verification_of(
    st: &AppState,
    model: &ModelVersion,
    mode: VerificationMode,
    sample_rate: Option<f64>,
) -> Result<(VerificationMode, f64), ApiError> {
    if let Some(p) = sample_rate.filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(invalid("invalid_parameter", format!("sample_rate {p} is not a probability in [0, 1]")));
    }
    let policy = model.policy.as_deref().and_then(|p| serde_json::from_str::<ModelPolicy>(p).ok()).unwrap_or_default();
    Ok((mode, sample_rate.or(policy.sample_rate).unwrap_or(st.verification.sample_rate)))
}

/// Checks the options against the model and the node's limits and fixes the generation.
fn generation(st: &AppState, model: &ModelVersion, prompt_tokens: usize, o: &GenerationOptions) -> Result<Generation, ApiError> {
    if o.n.is_some_and(|n| n != 1) {
        return Err(invalid("unsupported_parameter", "n: one choice per request is served (n = 1)"));
    }
    let temperature = o.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(invalid("invalid_parameter", format!("temperature {temperature} is not in [0, 2]")));
    }
    let top_p = o.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(invalid("invalid_parameter", format!("top_p {top_p} is not in (0, 1]")));
    }
    let stop = o.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(invalid("invalid_parameter", format!("stop: at most {MAX_STOP} strings, got {}", stop.len())));
    }
    if stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(invalid("invalid_parameter", "stop: every string must have 1 to 256 bytes"));
    }
    let context = context_of(st, model);
    let limit = st.llm.config().max_tokens;
    if prompt_tokens >= context {
        return Err(invalid(
            "context_length_exceeded",
            format!("the prompt has {prompt_tokens} tokens; this model's context window is {context} tokens"),
        ));
    }
    let max_tokens = match o.max_completion_tokens.or(o.max_tokens) {
        Some(0) => return Err(invalid("invalid_parameter", "max_tokens must be at least 1")),
        Some(m) if m as usize > limit => {
            return Err(invalid("max_tokens_too_large", format!("max_tokens {m} is over this node's limit of {limit}")));
        }
        Some(m) if prompt_tokens + m as usize > context => {
            return Err(invalid(
                "context_length_exceeded",
                format!(
                    "the prompt has {prompt_tokens} tokens and max_tokens is {m}; this model's context window is {context} tokens"
                ),
            ));
        }
        Some(m) => m as usize,
        None => limit.min(context - prompt_tokens),
    };
    let seed = o.seed.unwrap_or_else(|| rand::thread_rng().next_u64());
    Ok(Generation { max_tokens: max_tokens as u32, temperature, top_p, seed, stop })
}

/// Everything after tokenizing: check, price, pay, run, settle, answer.
#[allow(clippy::too_many_arguments)]
async fn generate(
    st: &AppState,
    headers: &HeaderMap,
    model: Arc<ModelVersion>,
    asked: String,
    (codec, prompt): (Arc<TextCodec>, Vec<u32>),
    options: GenerationOptions,
    shape: Shape,
    ev: &mut RequestEvent,
    started: Instant,
) -> Result<Answered, ApiError> {
    let request_id = infer::new_request_id();
    Span::current().record("request_id", request_id.as_str());
    let generation = generation(st, &model, prompt.len(), &options)?;
    ev.prompt_tokens = prompt.len() as u64;
    let (mode, sample_rate) = verification_of(st, &model, options.verification, options.sample_rate)?;
    ev.mode = mode.as_str().to_owned();

    // Priced by the token: the escrow holds the price of the prompt and max_tokens; the
    // capture takes what the completion used and returns the rest.
    let executors = verification::route(st, mode, model.id)?;
    let input_hash = token_ids_hash(&prompt);
    let tokens = (prompt.len() as u64, u64::from(generation.max_tokens));
    let offer = pay::Offer { path: shape.path(), upto: true };
    let paid =
        take_payment(st, headers, &model, options.app.as_deref(), &request_id, input_hash, executors[0].address(), tokens, offer, mode, ev).await?;
    let terms = pay::language_terms(st, &request_id, input_hash, paid.as_ref(), mode);

    let ctx = GenContext {
        st: st.clone(),
        model,
        asked,
        request_id,
        codec,
        prompt,
        generation,
        terms,
        paid,
        shape,
        mode,
        sample_rate,
        created: verinet_primitives::unix_ms_u64() / 1000,
        started,
    };
    if options.stream {
        let include_usage = options.stream_options.is_some_and(|o| o.include_usage);
        // Started (and failed over) before the first byte is sent, so a failure is an
        // ordinary HTTP error and nothing was charged.
        let started_run = match ctx.begin(executors).await {
            Ok(s) => s,
            Err(e) => {
                ctx.refund("no worker served the request").await;
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let ev = std::mem::take(ev);
        // Counts the events handed to the connection: what a client that leaves is charged for.
        let handed = Arc::new(AtomicUsize::new(0));
        // The stream emits its own usage event when it ends.
        tokio::spawn(ctx.stream(started_run, Events { tx, handed: handed.clone() }, include_usage, ev));
        let body = Body::from_stream(futures::stream::unfold((rx, handed), |(mut rx, handed)| async move {
            let b = rx.recv().await?;
            handed.fetch_add(1, Ordering::Release);
            Some((Ok::<_, std::convert::Infallible>(b), (rx, handed)))
        }));
        let mut resp = Response::new(body);
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok((resp, true));
    }
    // Not streamed: generation and settlement in a task of their own, so a client that hangs
    // up cannot leave the escrow half-settled.
    let (result, ev_out) = tokio::spawn(async move {
        let mut ev = RequestEvent::default();
        let r = ctx.run_to_end(executors, &mut ev).await;
        (r, ev)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("generation task: {e}")))?;
    merge_event(ev, ev_out);
    result.map(|r| (r, false))
}

fn merge_event(ev: &mut RequestEvent, from: RequestEvent) {
    ev.completion_tokens = from.completion_tokens;
    ev.executor = from.executor.or(ev.executor);
    ev.check = from.check.or(ev.check.take());
    ev.charged = from.charged;
    for (k, v) in from.earnings {
        *ev.earnings.entry(k).or_default() += v;
    }
}

/// Quotes `(prompt, completion)` tokens at most and escrows that (nothing when free).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn take_payment(
    st: &AppState,
    headers: &HeaderMap,
    model: &ModelVersion,
    app_id: Option<&str>,
    request_id: &str,
    input_hash: alloy_primitives::B256,
    operator: Address,
    (prompt, completion): (u64, u64),
    offer: pay::Offer,
    mode: VerificationMode,
    ev: &mut RequestEvent,
) -> Result<Option<pay::Paid>, ApiError> {
    let app = match app_id {
        Some(id) => Some(st.ledger.store().app(id).await?.ok_or_else(|| ApiError::UnknownApp(id.to_owned()))?),
        None => None,
    };
    let quote = pay::token_quote(st, model, mode, app.as_ref(), operator, prompt, completion);
    ev.price = quote.total;
    ev.payment_attempted = pay::attached(headers);
    let paid = pay::take(st, headers, &quote, offer, model, app_id, request_id, &format!("{input_hash:#x}"), &mut ev.payer).await?;
    Ok(paid)
}

/// A generation between its payment and its answer.
struct GenContext {
    st: AppState,
    model: Arc<ModelVersion>,
    asked: String,
    request_id: String,
    /// The model's tokenizer (what a cut stream's tokens are checked against).
    codec: Arc<TextCodec>,
    prompt: Vec<u32>,
    generation: Generation,
    terms: Terms,
    paid: Option<pay::Paid>,
    shape: Shape,
    mode: VerificationMode,
    sample_rate: f64,
    created: u64,
    started: Instant,
}

/// How a completion was settled: its capture (none when free or refuted), its check, and the
/// answer kept with the capture.
struct Settled {
    capture: Option<Capture>,
    check: CheckInfo,
    answer: Option<String>,
}

/// A captured payment: the transaction, and what it charged.
struct Capture {
    tx: String,
    charged: u128,
}

/// The server-sent events of a stream on their way to the connection, and how many the
/// response body has handed to it.
struct Events {
    tx: mpsc::Sender<Bytes>,
    handed: Arc<AtomicUsize>,
}

/// A generation that produced its first chunk on `executor`.
struct Running {
    executor: Arc<Executor>,
    _in_flight: InFlightGuard,
    first: GenChunk,
    rest: GenStream,
    first_token_ms: f64,
    /// A quorum's verdict, reached before the first chunk (otherwise checked at settlement).
    check: Option<CheckInfo>,
}

impl GenContext {
    /// The job every executor of this request runs.
    fn job(&self) -> GenJob {
        GenJob {
            model: self.model.id,
            prompt: self.prompt.clone(),
            generation: self.generation.clone(),
            terms: self.terms.clone(),
            load: verification::hub_loader(&self.st),
        }
    }

    /// Starts the generation as the mode requires: on the first executor (with failover), or
    /// on the whole quorum.
    async fn begin(&self, executors: Vec<Arc<Executor>>) -> Result<Running, ApiError> {
        match self.mode {
            VerificationMode::Quorum => self.start_quorum(executors).await,
            _ => self.start(executors[0].clone()).await,
        }
    }

    /// `quorum`: every member generates the whole completion under the same terms; the
    /// largest group with the same output ids wins if it is a majority of the members (a
    /// member whose run or receipt failed does not vote). A dissenter is checked by one
    /// teacher-forced pass (on a validator, else on a majority member): refuted, it is slashed;
    /// accepted (a near tie decided the other way on its CPU), it is counted with the majority
    /// and not punished. The winner's completion is then streamed or answered whole.
    async fn start_quorum(&self, members: Vec<Arc<Executor>>) -> Result<Running, ApiError> {
        let k = members.len();
        let runs = members.iter().map(|e| async move {
            let _busy = e.in_flight();
            let mut rx = e.backend().generate(self.job()).await?;
            let mut ids = Vec::new();
            loop {
                match rx.recv().await {
                    Some(Ok(GenChunk::Text(p))) => ids.extend(p.ids),
                    Some(Ok(GenChunk::Done(c))) if c.output_ids == ids => return Ok(*c),
                    Some(Ok(GenChunk::Done(_))) => return Err(ExecError::Invalid("the streamed tokens differ from the final tokens".into())),
                    Some(Err(err)) => return Err(err),
                    None => return Err(ExecError::Unavailable("the stream ended without a receipt".into())),
                }
            }
        });
        let outcomes = futures::future::join_all(runs).await;
        let mut votes: Vec<(Arc<Executor>, Completed)> = Vec::new();
        for (e, r) in members.into_iter().zip(outcomes) {
            let checked = r.map_err(|err| err.to_string()).and_then(|c| {
                verinet_verify::check_completion(&c, &self.terms, self.model.id, &self.generation, self.prompt.len(), e.address()).map(|()| c)
            });
            match checked {
                Ok(c) => votes.push((e, c)),
                Err(why) => {
                    e.checked(false);
                    warn!(request_id = %self.request_id, executor = %e.address(), %why, "quorum member failed; it does not vote");
                }
            }
        }
        let best = verification::majority(&votes, k, |a, b| a.output_ids == b.output_ids)?;
        let (winner, done) = votes[best].clone();
        let (mut passed, mut disputed) = (Vec::new(), Vec::new());
        for (e, c) in &votes {
            if c.output_ids == done.output_ids {
                e.checked(true);
                passed.push(e.address());
                continue;
            }
            match self.check_dissent(e, c, &winner, &votes).await {
                Some((true, _)) => {
                    e.checked(true);
                    passed.push(e.address());
                }
                Some((false, (checker, detail))) => {
                    let (got, want) = (format!("{:#x}", c.receipt.receipt.output_hash), format!("{:#x}", done.receipt.receipt.output_hash));
                    verification::dispute(&self.st, e, &checker, got, want, &detail, "quorum", &self.request_id).await;
                    disputed.push(e.address());
                }
                None => warn!(request_id = %self.request_id, executor = %e.address(), "a dissenting quorum member could not be checked"),
            }
        }
        let first_token_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let (tx, rest) = mpsc::channel(2);
        let _ = tx.try_send(Ok(GenChunk::Done(Box::new(done.clone()))));
        let first = GenChunk::Text(verinet_llm::Piece { text: done.text.clone(), ids: done.output_ids.clone() });
        let check = verification::check("quorum", passed, disputed);
        Ok(Running { _in_flight: winner.in_flight(), executor: winner, first, rest, first_token_ms, check: Some(check) })
    }

    /// Has `checker` check completion `c` of this request with one teacher-forced pass.
    async fn check_on(&self, checker: &Arc<Executor>, c: &Completed) -> Result<verinet_verify::Verdict, ExecError> {
        let job = CheckJob {
            model: self.model.id,
            prompt: self.prompt.clone(),
            output: c.output_ids.clone(),
            generation: self.generation.clone(),
            finish: c.finish_reason.clone(),
            load: verification::hub_loader(&self.st),
        };
        let _busy = checker.in_flight();
        checker.backend().check(job).await
    }

    /// Checks a quorum dissenter's completion with one teacher-forced pass on a validator
    /// outside the quorum, else on the winner: whether it holds, who checked, what was found.
    async fn check_dissent(
        &self,
        dissenter: &Arc<Executor>,
        c: &Completed,
        winner: &Arc<Executor>,
        votes: &[(Arc<Executor>, Completed)],
    ) -> Option<(bool, (Arc<Executor>, String))> {
        let members: Vec<Address> = votes.iter().map(|(e, _)| e.address()).collect();
        let checker = self.st.pool.pick_validator(self.model.id, &members).unwrap_or_else(|| winner.clone());
        match self.check_on(&checker, c).await {
            Ok(v) => {
                let detail = format!("teacher-forced check: refuted at output position {}: {}", v.refuted_at.map_or(-1, i64::from), v.detail);
                Some((v.accepted, (checker, detail)))
            }
            Err(e) => {
                warn!(request_id = %self.request_id, executor = %dissenter.address(), checker = %checker.address(), error = %e, "checking a quorum dissenter failed");
                None
            }
        }
    }

    /// Starts on `first` and, while workers fail before their first token in a way another may
    /// not, on others (up to the attempt limit).
    async fn start(&self, first: Arc<Executor>) -> Result<Running, ApiError> {
        let st = &self.st;
        let mut tried = Vec::new();
        let mut e = first;
        loop {
            tried.push(e.address());
            let guard = e.in_flight();
            let job = self.job();
            let attempt = async {
                let mut rx = e.backend().generate(job).await?;
                match rx.recv().await {
                    Some(Ok(chunk)) => Ok((chunk, rx)),
                    Some(Err(err)) => Err(err),
                    None => Err(ExecError::Unavailable("the stream ended before its first token".into())),
                }
            };
            let err = match attempt.await {
                Ok((first, rest)) => {
                    let first_token_ms = self.started.elapsed().as_secs_f64() * 1e3;
                    return Ok(Running { executor: e, _in_flight: guard, first, rest, first_token_ms, check: None });
                }
                Err(err) if !err.retriable() => return Err(exec_error(err)),
                Err(err) => err,
            };
            st.pool.judge(&e, &err);
            warn!(request_id = %self.request_id, executor = %e.address(), error = %err, "executor failed before its first token; trying another");
            let next = st.pool.pick_workers(1, self.model.id, &tried).pop();
            match next {
                Some(n) if tried.len() < st.network.max_attempts.max(1) => e = n,
                _ => return Err(ApiError::WorkersFailed { attempts: tried.len(), last: err.to_string() }),
            }
        }
    }

    /// Not streamed: start, read to the end, settle, answer.
    async fn run_to_end(self, executors: Vec<Arc<Executor>>, ev: &mut RequestEvent) -> Result<Response, ApiError> {
        let running = match self.begin(executors).await {
            Ok(r) => r,
            Err(e) => {
                self.refund("no worker served the request").await;
                return Err(e);
            }
        };
        let Running { executor, _in_flight, first, mut rest, first_token_ms, check } = running;
        let mut chunk = first;
        let done = loop {
            match chunk {
                GenChunk::Done(c) => break *c,
                GenChunk::Text(_) => {}
            }
            chunk = match rest.recv().await {
                Some(Ok(c)) => c,
                Some(Err(err)) => {
                    self.refund(&err.to_string()).await;
                    return Err(ApiError::WorkersFailed { attempts: 1, last: err.to_string() });
                }
                None => {
                    self.refund("the stream ended without a receipt").await;
                    return Err(ApiError::WorkersFailed { attempts: 1, last: "the stream ended without a receipt".into() });
                }
            };
        };
        let Settled { capture, check, answer } = self.settle(&done, &executor, ev, check, first_token_ms).await?;
        let usage = usage(self.prompt.len(), &done);
        // A captured completion answers with the body kept with its capture (a retry gets
        // the same); a free or refuted one is rendered now.
        let body = match answer {
            Some(a) => a,
            None => self.completion_body(&done, self.proof(&done, capture.as_ref(), check, first_token_ms))?.to_string(),
        };
        debug!(prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens, "completion served");
        let mut resp = ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        self.payment_header(capture.as_ref(), &mut resp);
        Ok(resp)
    }

    /// Streamed: sends the events, settles at the end. A client that leaves cancels the
    /// generation (dropping the stream) and pays for the prompt and the tokens it was sent
    /// ([`Self::settle_cut`]); a worker that fails midway is not paid and the payer is refunded.
    async fn stream(self, running: Running, events: Events, include_usage: bool, mut ev: RequestEvent) {
        let Running { executor, _in_flight, first, mut rest, first_token_ms, check } = running;
        let Events { tx, handed } = events;
        ev.executor = Some(executor.address());
        let id = match self.shape {
            Shape::Chat => format!("chatcmpl-{}", self.request_id),
            Shape::Text => format!("cmpl-{}", self.request_id),
        };
        let mut sent_role = false;
        // Every token streamed so far and its text; after each event queued, how much of both
        // it completes (the SSE `id:` of a text event is its token count).
        let (mut ids, mut text) = (Vec::<u32>::new(), String::new());
        let mut marks: Vec<(usize, usize)> = Vec::new();
        let mut chunk = first;
        let outcome: Result<Completed, String> = loop {
            match chunk {
                GenChunk::Done(c) => break Ok(*c),
                GenChunk::Text(p) => {
                    ids.extend_from_slice(&p.ids);
                    if ids.len() > self.generation.max_tokens as usize {
                        break Err(format!("the worker streamed more than max_tokens ({})", self.generation.max_tokens));
                    }
                    if !p.text.is_empty() {
                        text.push_str(&p.text);
                        let data = self.delta_event(&id, &mut sent_role, Some(p.text), None, None, None);
                        let data = Bytes::from([format!("id: {}\n", ids.len()).as_bytes(), &data].concat());
                        marks.push((ids.len(), text.len()));
                        if tx.send(data).await.is_err() {
                            break Err(CLIENT_CLOSED.into());
                        }
                    }
                }
            }
            chunk = tokio::select! {
                () = tx.closed() => break Err(CLIENT_CLOSED.into()),
                c = rest.recv() => match c {
                    Some(Ok(c)) => c,
                    Some(Err(err)) => break Err(err.to_string()),
                    None => break Err("the stream ended without a receipt".into()),
                },
            };
        };
        // Cancels the generation (local or remote) if it is still running.
        drop(rest);
        match outcome {
            Ok(done) if done.output_ids != ids => {
                executor.checked(false);
                self.refund("the streamed tokens differ from the final tokens").await;
                let e = ApiError::WorkersFailed { attempts: 1, last: "the worker's streamed tokens differ from its receipt".into() };
                let _ = tx.send(error_event(&e)).await;
                self.emit(ev, 502, Some("workers_failed"));
            }
            Ok(done) => {
                let Settled { capture, check, .. } = match self.settle(&done, &executor, &mut ev, check, first_token_ms).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(error_event(&e)).await;
                        self.emit(ev, 500, Some("internal"));
                        return;
                    }
                };
                let proof = self.proof(&done, capture.as_ref(), check, first_token_ms);
                let usage = usage(self.prompt.len(), &done);
                let (finish_proof, usage_proof) = if include_usage { (None, Some(proof)) } else { (Some(proof), None) };
                let _ = tx.send(self.delta_event(&id, &mut sent_role, None, Some(done.finish_reason.clone()), None, finish_proof)).await;
                if include_usage {
                    let _ = tx.send(self.usage_event(&id, usage, usage_proof)).await;
                }
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                self.emit(ev, 200, None);
            }
            Err(why) if tx.is_closed() => {
                // What the response body handed to the connection: the events it took.
                let (n, bytes) = handed.load(Ordering::Acquire).checked_sub(1).map_or((0, 0), |last| marks[last]);
                let (cut, honest) = self.supported(&ids[..n], &text.as_bytes()[..bytes]);
                if !honest {
                    executor.checked(false);
                    warn!(request_id = %self.request_id, executor = %executor.address(), "streamed tokens that its text does not spell; charging what it does");
                }
                match self.settle_cut(&ids[..cut], &executor, &mut ev, first_token_ms).await {
                    Ok(()) => info!(request_id = %self.request_id, completion_tokens = cut, reason = %why, "stream cut short; charged for the tokens sent"),
                    Err(e) => warn!(request_id = %self.request_id, error = %e, "stream cut short; not charged"),
                }
                self.emit(ev, 499, Some("client_closed"));
            }
            Err(why) => {
                self.refund(&why).await;
                let e = ApiError::WorkersFailed { attempts: 1, last: why.clone() };
                let _ = tx.send(error_event(&e)).await;
                info!(request_id = %self.request_id, reason = %why, "stream ended early; refunded");
                self.emit(ev, 502, Some("workers_failed"));
            }
        }
    }

    /// How many of `ids` the text `sent` spells out in full (a worker may not claim tokens
    /// whose text it did not send), and whether that is all of them.
    fn supported(&self, ids: &[u32], sent: &[u8]) -> (usize, bool) {
        let mut at = 0;
        for (i, &t) in ids.iter().enumerate() {
            let b = if self.codec.is_stop(t) { &[][..] } else { self.codec.token_bytes(t) };
            if sent.get(at..at + b.len()) != Some(b) {
                return (i, false);
            }
            at += b.len();
        }
        (ids.len(), true)
    }

    /// Settles a stream the client left: charges the prompt and the `ids` it was sent, under
    /// a receipt this gateway signs (finish reason `client_closed`; no worker signed a cut
    /// completion, and none is checked), and refunds the rest of the escrow.
    async fn settle_cut(&self, ids: &[u32], executor: &Arc<Executor>, ev: &mut RequestEvent, first_token_ms: f64) -> Result<(), ApiError> {
        let key = &self.st.node_key;
        let body = verinet_verify::completion_body(&self.terms, self.model.id, &self.generation, self.prompt.len(), ids, CUT, key.address());
        let receipt = match verinet_verify::sign_receipt(body, key, self.terms.chain_id) {
            Ok(r) => r,
            Err(e) => {
                self.refund("the gateway could not sign the cut stream's receipt").await;
                return Err(ApiError::Internal(format!("signing a cut stream's receipt: {e}")));
            }
        };
        ev.completion_tokens = ids.len() as u64;
        self.st.hub.record_call(&self.model, true);
        // What the client was sent, kept as a completion for a retry to find.
        let cut = Completed {
            output_ids: ids.to_vec(),
            text: self.codec.decode(ids),
            finish_reason: CUT.into(),
            receipt: receipt.clone(),
            first_token_ms,
            total_ms: self.started.elapsed().as_secs_f64() * 1e3,
        };
        let check = verification::check("unchecked", vec![], vec![]);
        let render = |c: &Capture| Ok(self.completion_body(&cut, self.proof(&cut, Some(c), check, first_token_ms))?.to_string());
        let captured = self.capture(ids.len(), &receipt, executor, " (the client closed the stream)", ev, render).await;
        self.queue_unless_stored(&receipt, &captured);
        captured.map(|_| ())
    }

    /// Queues `receipt` for sealing unless `captured` committed it with the capture.
    fn queue_unless_stored<T>(&self, receipt: &verinet_primitives::wire::SignedReceipt, captured: &Result<Option<T>, ApiError>) {
        if !matches!(captured, Ok(Some(_))) {
            self.st.receipts.record(receipt);
        }
    }

    /// Captures from the escrow the price of the prompt and `completion` tokens under
    /// `receipt` (the rest goes back to the payer) and records the charge; none when free. The
    /// answer `render` makes of the capture commits with it (and the receipt), so a retry of
    /// the same payment gets it back.
    async fn capture(
        &self,
        completion: usize,
        receipt: &verinet_primitives::wire::SignedReceipt,
        executor: &Arc<Executor>,
        why: &str,
        ev: &mut RequestEvent,
        render: impl FnOnce(&Capture) -> Result<String, ApiError>,
    ) -> Result<Option<(Capture, String)>, ApiError> {
        let Some(p) = &self.paid else { return Ok(None) };
        let (prompt, completion) = (self.prompt.len() as u64, completion as u64);
        let used = pay::used_quote(&self.st, &self.model, self.mode, &p.escrow.quote, prompt, completion);
        let memo = format!("{prompt} prompt and {completion} completion tokens{why}");
        let hash = format!("{:#x}", receipt.receipt.output_hash);
        let tx_id = verinet_ledger::new_tx_id();
        let answer = match render(&Capture { tx: tx_id.clone(), charged: used.total }) {
            Ok(a) => a,
            Err(e) => {
                infer::refund(&self.st, p, "the answer could not be encoded").await;
                return Err(e);
            }
        };
        let keep = verinet_ledger::Keep { tx_id, answer: answer.clone(), receipt: self.st.receipts.record_of(receipt) };
        let (tx, used) = infer::capture_used(&self.st, p, used, &hash, executor.address(), &memo, Some(keep)).await?;
        pay::record_charge(ev, &used);
        Ok(Some((Capture { tx, charged: used.total }, answer)))
    }

    fn emit(&self, mut ev: RequestEvent, status: u16, error: Option<&str>) {
        ev.status = status;
        ev.error = error.map(str::to_owned);
        ev.total_ms = self.started.elapsed().as_secs_f64() * 1e3;
        crate::traffic::served(&self.st, ev);
    }

    /// One SSE `data:` event with new text or the finish reason.
    fn delta_event(
        &self,
        id: &str,
        sent_role: &mut bool,
        text: Option<String>,
        finish: Option<String>,
        usage: Option<Usage>,
        proof: Option<CompletionProof>,
    ) -> Bytes {
        let value = match self.shape {
            Shape::Chat => {
                let role = (!std::mem::replace(sent_role, true)).then(|| "assistant".to_owned());
                serde_json::to_value(ChatCompletionChunk {
                    id: id.to_owned(),
                    object: "chat.completion.chunk".into(),
                    created: self.created,
                    model: self.asked.clone(),
                    choices: vec![ChunkChoice { index: 0, delta: Delta { role, content: text }, finish_reason: finish, logprobs: None }],
                    usage,
                    system_fingerprint: self.model.id.to_string(),
                    verinet: proof,
                })
            }
            Shape::Text => serde_json::to_value(TextCompletion {
                id: id.to_owned(),
                object: "text_completion".into(),
                created: self.created,
                model: self.asked.clone(),
                choices: vec![TextChoice { index: 0, text: text.unwrap_or_default(), finish_reason: finish, logprobs: None }],
                usage,
                system_fingerprint: self.model.id.to_string(),
                verinet: proof,
            }),
        };
        sse(&value.unwrap_or_default())
    }

    /// The usage chunk (`include_usage`): no choices.
    fn usage_event(&self, id: &str, usage: Usage, proof: Option<CompletionProof>) -> Bytes {
        let value = match self.shape {
            Shape::Chat => serde_json::to_value(ChatCompletionChunk {
                id: id.to_owned(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.asked.clone(),
                choices: vec![],
                usage: Some(usage),
                system_fingerprint: self.model.id.to_string(),
                verinet: proof,
            }),
            Shape::Text => serde_json::to_value(TextCompletion {
                id: id.to_owned(),
                object: "text_completion".into(),
                created: self.created,
                model: self.asked.clone(),
                choices: vec![],
                usage: Some(usage),
                system_fingerprint: self.model.id.to_string(),
                verinet: proof,
            }),
        };
        sse(&value.unwrap_or_default())
    }

    /// Records the receipt and usage, checks the completion (`sampled`, unless a quorum has
    /// `decided`), and captures from the escrow the price of the tokens used (the rest goes
    /// back to the payer). A completion a validator refuted is not charged: the escrow goes
    /// back whole.
    async fn settle(
        &self,
        done: &Completed,
        executor: &Arc<Executor>,
        ev: &mut RequestEvent,
        decided: Option<CheckInfo>,
        first_token_ms: f64,
    ) -> Result<Settled, ApiError> {
        // The receipt must state this request, these terms and exactly these ids (a remote
        // worker's was checked on arrival; an in-process one is checked here): a worker that
        // signs other counts is not paid and loses reputation.
        if let Err(why) = verinet_verify::check_completion(done, &self.terms, self.model.id, &self.generation, self.prompt.len(), executor.address()) {
            executor.checked(false);
            warn!(request_id = %self.request_id, executor = %executor.address(), %why, "the completion's receipt does not match it");
            self.refund(&why).await;
            return Err(ApiError::WorkersFailed { attempts: 1, last: format!("the worker's receipt does not match its answer: {why}") });
        }
        ev.completion_tokens = done.output_ids.len() as u64;
        ev.executor = Some(executor.address());
        let check = match decided {
            Some(c) => c,
            None => self.verify(done, executor).await,
        };
        ev.disputed = check.disputed.clone();
        ev.check = Some(check.status.clone());
        if check.status == "disputed" {
            self.st.receipts.record(&done.receipt);
            self.refund("a validator refuted the completion").await;
            return Ok(Settled { capture: None, check, answer: None });
        }
        self.st.hub.record_call(&self.model, true);
        let render = |c: &Capture| Ok(self.completion_body(done, self.proof(done, Some(c), check.clone(), first_token_ms))?.to_string());
        let captured = self.capture(done.output_ids.len(), &done.receipt, executor, "", ev, render).await;
        self.queue_unless_stored(&done.receipt, &captured);
        let captured = captured?;
        let (capture, answer) = captured.map_or((None, None), |(c, a)| (Some(c), Some(a)));
        Ok(Settled { capture, check, answer })
    }

    /// The whole (not streamed) answer to a completion: a chat or text completion object
    /// with its proof.
    fn completion_body(&self, done: &Completed, proof: CompletionProof) -> Result<serde_json::Value, ApiError> {
        let usage = usage(self.prompt.len(), done);
        match self.shape {
            Shape::Chat => serde_json::to_value(ChatCompletion {
                id: format!("chatcmpl-{}", self.request_id),
                object: "chat.completion".into(),
                created: self.created,
                model: self.asked.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: ChatMessageOut { role: "assistant".into(), content: done.text.clone() },
                    finish_reason: done.finish_reason.clone(),
                    logprobs: None,
                }],
                usage,
                system_fingerprint: self.model.id.to_string(),
                verinet: proof,
            }),
            Shape::Text => serde_json::to_value(TextCompletion {
                id: format!("cmpl-{}", self.request_id),
                object: "text_completion".into(),
                created: self.created,
                model: self.asked.clone(),
                choices: vec![TextChoice { index: 0, text: done.text.clone(), finish_reason: Some(done.finish_reason.clone()), logprobs: None }],
                usage: Some(usage),
                system_fingerprint: self.model.id.to_string(),
                verinet: Some(proof),
            }),
        }
        .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// `sampled`: with the request's probability, a validator other than the worker checks the
    /// completion with one teacher-forced pass; a refuted worker is slashed and the dispute
    /// recorded. Without a validator in good standing, or when its check fails to run, the
    /// completion stays unchecked (and is logged).
    async fn verify(&self, done: &Completed, worker: &Arc<Executor>) -> CheckInfo {
        let unchecked = || verification::check("unchecked", vec![], vec![]);
        if self.mode != VerificationMode::Sampled || !self.st.pool.sample(self.sample_rate) {
            return unchecked();
        }
        let Some(validator) = self.st.pool.pick_checker(self.model.id, worker) else {
            warn!(request_id = %self.request_id, "sampled for a check but no validator is in good standing");
            return unchecked();
        };
        match self.check_on(&validator, done).await {
            Ok(v) if v.accepted => {
                worker.checked(true);
                verification::check("passed", vec![validator.address()], vec![])
            }
            Ok(v) => {
                let got = format!("{:#x}", done.receipt.receipt.output_hash);
                let found = format!("teacher-forced check: refuted at output position {}", v.refuted_at.map_or(-1, i64::from));
                verification::dispute(&self.st, worker, &validator, got, found, &v.detail, "sampled", &self.request_id).await;
                verification::check("disputed", vec![validator.address()], vec![worker.address()])
            }
            Err(e) => {
                warn!(request_id = %self.request_id, validator = %validator.address(), error = %e, "the check did not run; unchecked");
                unchecked()
            }
        }
    }

    async fn refund(&self, why: &str) {
        if let Some(p) = &self.paid {
            infer::refund(&self.st, p, why).await;
        }
        self.st.hub.record_call(&self.model, false);
    }

    fn summary(&self, capture: Option<&Capture>) -> Option<PaymentSummary> {
        pay::summary_charged(self.paid.as_ref(), capture.map(|c| &c.tx), capture.map_or(0, |c| c.charged))
    }

    fn proof(&self, done: &Completed, capture: Option<&Capture>, check: CheckInfo, first_token_ms: f64) -> CompletionProof {
        let payment = self.summary(capture);
        CompletionProof {
            request_id: self.request_id.clone(),
            model: ResolvedModel { name: self.model.name.clone(), version: self.model.version.clone(), sha256: self.model.id },
            prompt_ids: self.prompt.clone(),
            output_ids: done.output_ids.clone(),
            seed: self.generation.seed,
            price: payment.as_ref().map_or_else(|| "0".into(), |p| p.amount.clone()),
            payment,
            receipt: done.receipt.clone(),
            check: (self.mode != VerificationMode::None).then_some(check),
            first_token_ms,
            total_ms: self.started.elapsed().as_secs_f64() * 1e3,
        }
    }

    fn payment_header(&self, capture: Option<&Capture>, resp: &mut Response) {
        pay::settle_header(&self.st, self.summary(capture).as_ref(), resp);
    }
}

fn usage(prompt_tokens: usize, done: &Completed) -> Usage {
    let (p, c) = (prompt_tokens as u32, done.output_ids.len() as u32);
    Usage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c }
}

fn sse(value: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// An error inside a stream that already answered 200 (OpenAI's clients raise it).
fn error_event(e: &ApiError) -> Bytes {
    let (status, code) = e.status_and_code();
    sse(&serde_json::json!({"error": {"message": e.to_string(), "type": if status.is_server_error() { "server_error" } else { "invalid_request_error" }, "code": code}}))
}

pub(crate) fn exec_error(e: ExecError) -> ApiError {
    match e {
        ExecError::Llm(l) => ApiError::Llm(l),
        ExecError::Runtime(r) => ApiError::Runtime(r),
        other => ApiError::WorkersFailed { attempts: 1, last: other.to_string() },
    }
}
