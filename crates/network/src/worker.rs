//! A worker (or validator) process: takes signed jobs from the gateways it joined, runs them on
//! its own runtime with model bytes it fetched by sha256 (and refuses if they hash otherwise),
//! and answers with outputs and a receipt it signed, the whole answer signed too. It serves the
//! model bytes it holds to peers (`GET /v1/blobs/{sha256}`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tracing::{info, warn};
use verinet_client::{Client, ClientError};
use verinet_primitives::{
    ModelId, tensors_hash,
    wire::{ErrorBody, ErrorDetail},
};
use verinet_runtime::{Runtime, RuntimeError};
use verinet_llm::{LlmError, LlmHost};
use verinet_verify::{
    CheckJob, EmbedJob, ExecError, GenChunk, GenJob, Generation, Job, LoadBytes, LocalExecutor, NodeRole, check_on, embed_signed,
    generate_signed,
};

use crate::auth;
use crate::wire::{
    CHECK_PATH, CheckRequest, EMBED_PATH, EmbedRequest, GENERATE_PATH, GenLine, GenerateRequest, HEALTH_PATH, RUN_PATH, Registration,
    RunRequest, RunResponse, WorkerHealth,
};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker or validator.
    pub role: NodeRole,
    /// Where model bytes come from, in order: peers or hubs (gateways) serving `/v1/blobs`.
    pub hubs: Vec<String>,
    /// Model bytes kept here, one file per sha256.
    pub cache_dir: PathBuf,
    /// Allowed clock difference on signed messages, ms.
    pub skew_ms: u64,
    /// Jobs it runs at once, as advertised.
    pub capacity: u32,
    /// Largest job body, bytes.
    pub max_body: usize,
}

/// The worker's state.
pub struct Worker {
    key: Arc<PrivateKeySigner>,
    runtime: Arc<Runtime>,
    llm: Arc<LlmHost>,
    config: WorkerConfig,
    trusted: RwLock<BTreeSet<Address>>,
    models: Mutex<BTreeSet<ModelId>>,
    inflight: AtomicU32,
    served: AtomicU64,
    /// Hashes of the jobs taken, with when they leave the skew window (unix ms), and when
    /// they were last pruned.
    seen: Mutex<(HashMap<alloy_primitives::B256, u64>, u64)>,
    /// Test double only (see `forge_receipts_with`): the key its tensor receipts are signed by
    /// instead of its own.
    forger: std::sync::OnceLock<Arc<PrivateKeySigner>>,
}

impl Worker {
    /// Records job `hash`; false when it was seen within the skew window (a replay). Entries
    /// older than the window (twice the skew: a timestamp may be that far from now either
    /// way) are dropped at most once a second, so memory follows the job rate.
    fn first_time(&self, hash: alloy_primitives::B256) -> bool {
        let now = verinet_primitives::unix_ms_u64();
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, pruned) = &mut *guard;
        if now >= *pruned + 1000 {
            seen.retain(|_, until| *until > now);
            *pruned = now;
        }
        match seen.get(&hash) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(hash, now + 2 * self.config.skew_ms);
                true
            }
        }
    }

    /// A worker with `key` running on `runtime` (tensor models) and `llm` (language models);
    /// models already in the cache directory count as held.
    pub fn new(
        key: Arc<PrivateKeySigner>,
        runtime: Arc<Runtime>,
        llm: Arc<LlmHost>,
        config: WorkerConfig,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.cache_dir)?;
        let models = std::fs::read_dir(&config.cache_dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<ModelId>().ok())
            .collect();
        Ok(Arc::new(Self {
            key,
            runtime,
            llm,
            config,
            trusted: RwLock::new(BTreeSet::new()),
            models: Mutex::new(models),
            inflight: AtomicU32::new(0),
            served: AtomicU64::new(0),
            seen: Mutex::default(),
            forger: std::sync::OnceLock::new(),
        }))
    }

    /// Its address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// Makes it a cheating worker (a test double): it runs tensor jobs honestly but signs their
    /// receipts with `key`, while its responses stay signed by its own key.
    #[cfg(feature = "test-utils")]
    pub fn forge_receipts_with(&self, key: Arc<PrivateKeySigner>) {
        let _ = self.forger.set(key);
    }

    /// Its key (it signs heartbeats).
    pub fn key(&self) -> &PrivateKeySigner {
        &self.key
    }

    /// Its config.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Takes jobs signed by `gateway` from now on (learnt from a signed heartbeat answer).
    pub fn trust(&self, gateway: Address) -> bool {
        self.trusted.write().unwrap_or_else(|p| p.into_inner()).insert(gateway)
    }

    /// Whether jobs signed by `gateway` are taken.
    pub fn trusts(&self, gateway: Address) -> bool {
        self.trusted.read().unwrap_or_else(|p| p.into_inner()).contains(&gateway)
    }

    /// What it tells gateways about itself, reachable at `endpoint`.
    pub fn registration(&self, endpoint: &str) -> Registration {
        Registration {
            address: self.address(),
            role: self.config.role,
            endpoint: endpoint.to_owned(),
            backends: vec![self.runtime.backend_name().to_owned()],
            capacity: self.config.capacity,
            load: self.inflight.load(Ordering::Relaxed),
            models: self.models.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// `POST /worker/v1/run` and `GET /worker/v1/health`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(RUN_PATH, post(run).layer(DefaultBodyLimit::max(self.config.max_body)))
            .route(GENERATE_PATH, post(generate).layer(DefaultBodyLimit::max(self.config.max_body)))
            .route(EMBED_PATH, post(embed).layer(DefaultBodyLimit::max(self.config.max_body)))
            .route(CHECK_PATH, post(check).layer(DefaultBodyLimit::max(self.config.max_body)))
            .route(HEALTH_PATH, get(health))
            .route("/v1/blobs/{sha256}", get(blob))
            .with_state(self.clone())
    }

    /// The model's bytes: from the cache if they still hash right, else from the first hub
    /// that serves bytes hashing to `id`. Bytes that hash otherwise are refused, never run.
    async fn fetch(self: Arc<Self>, id: ModelId) -> Result<bytes::Bytes, RuntimeError> {
        let path = self.config.cache_dir.join(id.hex());
        if let Ok(b) = tokio::fs::read(&path).await {
            if ModelId::of_bytes(&b) == id {
                return Ok(b.into());
            }
            warn!(model = %id, "cached bytes no longer match their hash; fetching again");
            let _ = tokio::fs::remove_file(&path).await;
        }
        let mut why = Vec::new();
        for hub in &self.config.hubs {
            match Client::new(hub.clone()).fetch_model(&id).await {
                Ok(b) => {
                    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
                    if let Err(e) = async {
                        tokio::fs::write(&tmp, &b).await?;
                        tokio::fs::rename(&tmp, &path).await
                    }
                    .await
                    {
                        warn!(model = %id, error = %e, "could not cache model bytes");
                    }
                    self.models.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                    info!(model = %id, hub, bytes = b.len(), "fetched model bytes (sha256 checked)");
                    return Ok(b);
                }
                Err(e @ ClientError::HashMismatch { .. }) => {
                    warn!(model = %id, hub, error = %e, "refused model bytes that do not match their sha256");
                    why.push(format!("{hub}: {e}"));
                }
                Err(e) => why.push(format!("{hub}: {e}")),
            }
        }
        if why.is_empty() {
            why.push("no hub configured".into());
        }
        Err(RuntimeError::Load(why.join("; ")))
    }
}

/// Counts a job in flight until dropped (also when the gateway hangs up mid-job).
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicU32) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into(), kind: String::new() } })).into_response()
}

/// The job in `body`, if a gateway this worker joined signed it for `path`.
fn signed_job<T: serde::de::DeserializeOwned>(w: &Worker, headers: &HeaderMap, path: &str, body: &[u8]) -> Result<T, Box<Response>> {
    let (gateway, hash) = auth::verify_to(headers, "POST", path, w.address(), body, w.config.skew_ms).map_err(|e| {
        Box::new(match e {
            auth::AuthError::WrongRecipient { .. } => error(StatusCode::FORBIDDEN, "wrong_worker", e.to_string()),
            e => error(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
        })
    })?;
    if !w.trusts(gateway) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "untrusted_gateway",
            format!("{gateway} is not a gateway this worker joined"),
        )));
    }
    let job = serde_json::from_slice(body).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid_job", e.to_string())))?;
    if !w.first_time(hash) {
        return Err(Box::new(error(StatusCode::CONFLICT, "replayed_job", format!("job {hash:#x} was taken already"))));
    }
    Ok(job)
}

/// Where this worker's jobs get model bytes: its cache, else the hubs (hash-checked).
fn loader(w: &Arc<Worker>) -> LoadBytes {
    let w = w.clone();
    Arc::new(move |id| Box::pin(w.clone().fetch(id)))
}

/// Status and code of a language-model failure.
fn llm_error(e: &ExecError) -> (StatusCode, &'static str) {
    match e {
        ExecError::Llm(LlmError::Input(_) | LlmError::ContextExceeded { .. }) => (StatusCode::BAD_REQUEST, "invalid_input"),
        ExecError::Llm(LlmError::InvalidModel(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_model"),
        ExecError::Llm(LlmError::Overloaded(_)) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "execution_failed"),
    }
}

/// `POST /worker/v1/generate`: the completion streamed as JSON lines, the receipt on the last.
/// The lines are not signed one by one: the last one's receipt (EIP-712, by this worker)
/// binds the output ids, and the gateway checks the text against them. A gateway that hangs
/// up cancels the generation.
async fn generate(State(w): State<Arc<Worker>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: GenerateRequest = match signed_job(&w, &headers, GENERATE_PATH, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let terms = match req.terms.terms(verinet_primitives::token_ids_hash(&req.prompt)) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_job", e),
    };
    let generation =
        Generation { max_tokens: req.max_tokens, temperature: req.temperature, top_p: req.top_p, seed: req.seed, stop: req.stop };
    let job = GenJob { model: req.model, prompt: req.prompt, generation, terms, load: loader(&w) };
    let in_flight = InFlightOwned::new(w.clone());
    let stream = match generate_signed(w.key.clone(), &w.llm, job).await {
        Ok(s) => s,
        Err(e) => {
            let (status, code) = llm_error(&e);
            return error(status, code, e.to_string());
        }
    };
    let lines = futures::stream::unfold((stream, Some(in_flight)), |(mut rx, guard)| async move {
        let guard = guard?;
        let (line, more) = match rx.recv().await {
            Some(Ok(GenChunk::Text(p))) => (GenLine::Text(p), true),
            Some(Ok(GenChunk::Done(c))) => {
                guard.0.served.fetch_add(1, Ordering::Relaxed);
                (GenLine::Done(c), false)
            }
            Some(Err(e)) => {
                let (_, code) = llm_error(&e);
                (GenLine::Error(ErrorDetail { code: code.into(), message: e.to_string(), kind: String::new() }), false)
            }
            None => return None,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(bytes), (rx, more.then_some(guard))))
    });
    ([(http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(lines)).into_response()
}

/// `POST /worker/v1/embed`: vectors and a receipt, the whole answer signed.
async fn embed(State(w): State<Arc<Worker>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: EmbedRequest = match signed_job(&w, &headers, EMBED_PATH, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let terms = match req.terms.terms(verinet_primitives::token_lists_hash(&req.ids)) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_job", e),
    };
    let _in_flight = InFlight::new(&w.inflight);
    let job = EmbedJob { model: req.model, ids: req.ids, terms, load: loader(&w) };
    let ran = match embed_signed(&w.key, &w.llm, job).await {
        Ok(r) => r,
        Err(e) => {
            let (status, code) = llm_error(&e);
            return error(status, code, e.to_string());
        }
    };
    w.served.fetch_add(1, Ordering::Relaxed);
    answer(&w, EMBED_PATH, ran)
}

/// `POST /worker/v1/check`: a validator's teacher-forced check of a completion, the verdict
/// signed.
async fn check(State(w): State<Arc<Worker>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: CheckRequest = match signed_job(&w, &headers, CHECK_PATH, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let _in_flight = InFlight::new(&w.inflight);
    let generation =
        Generation { max_tokens: req.max_tokens, temperature: req.temperature, top_p: req.top_p, seed: req.seed, stop: req.stop };
    let job = CheckJob { model: req.model, prompt: req.prompt, output: req.output, generation, finish: req.finish, load: loader(&w) };
    match check_on(&w.llm, job).await {
        Ok(verdict) => match serde_json::to_vec(&verdict) {
            Ok(b) => auth::signed_answer(&w.key, CHECK_PATH, b),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "execution_failed", e.to_string()),
        },
        Err(e) => {
            let (status, code) = llm_error(&e);
            error(status, code, e.to_string())
        }
    }
}

fn answer(w: &Worker, path: &str, ran: verinet_verify::Ran) -> Response {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let t = ran.out.timings;
    let answer = RunResponse {
        outputs: ran.out.outputs,
        receipt: ran.receipt,
        load_ms: ms(t.load),
        queue_ms: ms(t.queue),
        compute_ms: ms(t.compute),
    };
    match serde_json::to_vec(&answer) {
        Ok(b) => auth::signed_answer(&w.key, path, b),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "execution_failed", e.to_string()),
    }
}

/// [`InFlight`] that owns its worker (it lives as long as a streamed answer).
struct InFlightOwned(Arc<Worker>);

impl InFlightOwned {
    fn new(w: Arc<Worker>) -> Self {
        w.inflight.fetch_add(1, Ordering::Relaxed);
        Self(w)
    }
}

impl Drop for InFlightOwned {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run(State(w): State<Arc<Worker>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: RunRequest = match signed_job(&w, &headers, RUN_PATH, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let terms = match req.terms() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_job", e),
    };
    if tensors_hash(&req.inputs) != req.input_hash {
        return error(StatusCode::BAD_REQUEST, "invalid_job", "input_hash is not the hash of the inputs sent");
    }
    let _in_flight = InFlight::new(&w.inflight);
    let job = Job { model: req.model, inputs: req.inputs, terms, load: loader(&w) };
    let ran = LocalExecutor::run_signed(w.forger.get().unwrap_or(&w.key), &w.runtime, job).await;
    let ran = match ran {
        Ok(r) => r,
        Err(ExecError::Runtime(e)) => {
            let (status, code) = match &e {
                RuntimeError::Load(_) => (StatusCode::BAD_GATEWAY, "model_unavailable"),
                RuntimeError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                RuntimeError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                RuntimeError::Input(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
                RuntimeError::InvalidModel(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_model"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "execution_failed"),
            };
            return error(status, code, e.to_string());
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "execution_failed", e.to_string()),
    };
    w.served.fetch_add(1, Ordering::Relaxed);
    answer(&w, RUN_PATH, ran)
}

/// `GET /v1/blobs/{sha256}`: a worker is a peer for model bytes it holds (the fetcher checks
/// the hash again, so serving from a peer needs no trust).
async fn blob(State(w): State<Arc<Worker>>, axum::extract::Path(sha): axum::extract::Path<String>) -> Response {
    let Ok(id) = sha.parse::<ModelId>().or_else(|_| format!("sha256:{sha}").parse::<ModelId>()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_model_ref", format!("{sha:?} is not a sha256"));
    };
    match tokio::fs::read(w.config.cache_dir.join(id.hex())).await {
        Ok(b) if ModelId::of_bytes(&b) == id => {
            ([(http::header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("this node does not hold {id}")),
    }
}

async fn health(State(w): State<Arc<Worker>>) -> Json<WorkerHealth> {
    Json(WorkerHealth {
        address: w.address(),
        role: w.config.role,
        backend: w.runtime.backend_name().to_owned(),
        load: w.inflight.load(Ordering::Relaxed),
        served: w.served.load(Ordering::Relaxed),
        gateways: w.trusted.read().unwrap_or_else(|p| p.into_inner()).iter().copied().collect(),
        models: w.models.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    })
}
