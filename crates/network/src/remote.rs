//! A worker in another process, as the gateway sees it: [`Execute`] over signed HTTP.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use futures::future::BoxFuture;
use http::StatusCode;
use verinet_primitives::wire::ErrorBody;
use verinet_runtime::{RunOutput, Timings};
use futures::StreamExt;
use tokio::sync::mpsc;
use verinet_verify::{
    CheckJob, EmbedJob, ExecError, Execute, GenChunk, GenJob, GenStream, Job, Ran, Verdict, check_completion, check_embedding,
    check_receipt,
};

use crate::auth::{self, RESPONSE};
use crate::wire::{
    CHECK_PATH, CheckRequest, EMBED_PATH, EmbedRequest, GENERATE_PATH, GenLine, GenerateRequest, JobTerms, RUN_PATH, RunRequest,
    RunResponse,
};

/// Sends jobs to the worker at `endpoint`, signed by the gateway key; accepts only answers
/// signed by `address` whose receipt states exactly the job and the outputs returned.
pub struct RemoteWorker {
    address: Address,
    endpoint: String,
    backend: String,
    gateway: Arc<PrivateKeySigner>,
    http: reqwest::Client,
    skew_ms: u64,
}

impl RemoteWorker {
    /// A worker at `endpoint` (base URL) holding `address`'s key; `timeout` bounds a whole job.
    pub fn new(
        address: Address,
        endpoint: String,
        backend: String,
        gateway: Arc<PrivateKeySigner>,
        http: reqwest::Client,
        skew_ms: u64,
    ) -> Self {
        Self { address, endpoint: endpoint.trim_end_matches('/').to_owned(), backend, gateway, http, skew_ms }
    }

    async fn call(&self, job: Job) -> Result<Ran, ExecError> {
        let Job { model, inputs, terms, load: _ } = job;
        let req = RunRequest {
            request_id: terms.request_id.clone(),
            model,
            inputs,
            input_hash: terms.input_hash,
            mode: terms.mode.clone(),
            price: terms.price.to_string(),
            payer: terms.payer,
            chain_id: terms.chain_id,
        };
        let ran = self.post_for_run(RUN_PATH, &req).await?;
        check_receipt(&ran, &terms, model, self.address).map_err(ExecError::Invalid)?;
        Ok(ran)
    }

    async fn call_embed(&self, job: EmbedJob) -> Result<Ran, ExecError> {
        let EmbedJob { model, ids, terms, load: _ } = job;
        let req = EmbedRequest { model, ids, terms: JobTerms::of(&terms) };
        let ran = self.post_for_run(EMBED_PATH, &req).await?;
        check_embedding(&ran, &terms, model, self.address).map_err(ExecError::Invalid)?;
        Ok(ran)
    }

    async fn call_generate(&self, job: GenJob) -> Result<GenStream, ExecError> {
        let GenJob { model, prompt, generation, terms, load: _ } = job;
        let g = generation.clone();
        let req = GenerateRequest {
            model,
            prompt,
            max_tokens: g.max_tokens,
            temperature: g.temperature,
            top_p: g.top_p,
            seed: g.seed,
            stop: g.stop.clone(),
            terms: JobTerms::of(&terms),
        };
        let prompt_tokens = req.prompt.len();
        let body = serde_json::to_vec(&req).map_err(|e| ExecError::Invalid(format!("encoding the job: {e}")))?;
        let resp = auth::send_signed(&self.http, &self.gateway, &self.endpoint, GENERATE_PATH, self.address, body)
            .await
            .map_err(|e| ExecError::Unavailable(format!("{}: {e}", self.endpoint)))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(refusal(status, &bytes));
        }
        let (tx, rx) = mpsc::channel(64);
        let node = self.address;
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let mut text = String::new();
            let mut ids: Vec<u32> = Vec::new();
            loop {
                let next = tokio::select! {
                    // The reader went away: dropping the response hangs up, the worker cancels.
                    () = tx.closed() => return,
                    n = body.next() => n,
                };
                let chunk = match next {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(ExecError::Unavailable(format!("the worker's stream broke: {e}")))).await;
                        return;
                    }
                    None => {
                        let _ = tx.send(Err(ExecError::Unavailable("the worker's stream ended without a receipt".into()))).await;
                        return;
                    }
                };
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let item = match serde_json::from_slice::<GenLine>(&line) {
                        Ok(GenLine::Text(p)) => {
                            text.push_str(&p.text);
                            ids.extend_from_slice(&p.ids);
                            if ids.len() > generation.max_tokens as usize {
                                Err(ExecError::Invalid(format!("the worker streamed more than max_tokens ({}) tokens", generation.max_tokens)))
                            } else {
                                Ok(GenChunk::Text(p))
                            }
                        }
                        Ok(GenLine::Done(c)) => {
                            check_completion(&c, &terms, model, &generation, prompt_tokens, node)
                                .and_then(|()| {
                                    if c.text != text {
                                        Err("the streamed text differs from the final text".into())
                                    } else if c.output_ids != ids {
                                        Err("the streamed tokens differ from the final tokens".into())
                                    } else {
                                        Ok(())
                                    }
                                })
                                .map(|()| GenChunk::Done(c))
                                .map_err(ExecError::Invalid)
                        }
                        Ok(GenLine::Error(e)) => Err(ExecError::Unavailable(format!("{}: {}", e.code, e.message))),
                        Err(e) => Err(ExecError::Invalid(format!("the worker's stream: {e}"))),
                    };
                    let last = !matches!(item, Ok(GenChunk::Text(_)));
                    if tx.send(item).await.is_err() || last {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Posts a signed job whose answer is a signed [`RunResponse`].
    async fn call_check(&self, job: CheckJob) -> Result<Verdict, ExecError> {
        let CheckJob { model, prompt, output, generation: g, finish, load: _ } = job;
        let req = CheckRequest {
            model,
            prompt,
            output,
            max_tokens: g.max_tokens,
            temperature: g.temperature,
            top_p: g.top_p,
            seed: g.seed,
            stop: g.stop,
            finish,
        };
        self.post_signed_json(CHECK_PATH, &req).await
    }

    /// POSTs a gateway-signed job and reads an answer this worker signed.
    async fn post_signed_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(&self, path: &str, req: &T) -> Result<R, ExecError> {
        let body = serde_json::to_vec(req).map_err(|e| ExecError::Invalid(format!("encoding the job: {e}")))?;
        let (status, headers, bytes) = auth::post_signed(&self.http, &self.gateway, &self.endpoint, path, Some(self.address), body)
            .await
            .map_err(|e| ExecError::Unavailable(format!("{}: {e}", self.endpoint)))?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        let signer = auth::verify(&headers, RESPONSE, path, &bytes, self.skew_ms)
            .map_err(|e| ExecError::Invalid(format!("answer not signed by the worker: {e}")))?;
        if signer != self.address {
            return Err(ExecError::Invalid(format!("answer signed by {signer}, not {}", self.address)));
        }
        serde_json::from_slice(&bytes).map_err(|e| ExecError::Invalid(format!("answer: {e}")))
    }

    async fn post_for_run<T: serde::Serialize>(&self, path: &str, req: &T) -> Result<Ran, ExecError> {
        let r: RunResponse = self.post_signed_json(path, req).await?;
        let ms = |x: f64| Duration::from_secs_f64((x / 1e3).max(0.0));
        let ran = Ran {
            out: RunOutput {
                outputs: r.outputs,
                timings: Timings { load: ms(r.load_ms), queue: ms(r.queue_ms), compute: ms(r.compute_ms) },
            },
            receipt: r.receipt,
        };
        Ok(ran)
    }
}

/// A worker's refusal: unavailable (another may serve; it is out of routing until its next
/// heartbeat) when it says why in an error body, invalid (a strike: this one is suspect) when
/// the body is not an error body at all, except a request no worker would take (too long a
/// prompt), which is the caller's. A refusal with a reason is not a strike: an honest worker
/// that restarted refuses a gateway's jobs (`untrusted_gateway`) until its next heartbeat.
fn refusal(status: StatusCode, bytes: &[u8]) -> ExecError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).ok();
    let detail = body
        .as_ref()
        .map(|b| format!("{} {}: {}", status.as_u16(), b.error.code, b.error.message))
        .unwrap_or_else(|| format!("{}", status.as_u16()));
    if status == StatusCode::BAD_REQUEST && body.as_ref().is_some_and(|b| b.error.code == "invalid_input") {
        return ExecError::Llm(verinet_llm::LlmError::Input(detail));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status.is_server_error() || body.is_some() {
        ExecError::Unavailable(detail)
    } else {
        ExecError::Invalid(detail)
    }
}

impl Execute for RemoteWorker {
    fn run(&self, job: Job) -> BoxFuture<'_, Result<Ran, ExecError>> {
        Box::pin(self.call(job))
    }

    fn backend_name(&self) -> String {
        self.backend.clone()
    }

    fn endpoint(&self) -> Option<String> {
        Some(self.endpoint.clone())
    }

    fn generate(&self, job: GenJob) -> BoxFuture<'_, Result<GenStream, ExecError>> {
        Box::pin(self.call_generate(job))
    }

    fn embed(&self, job: EmbedJob) -> BoxFuture<'_, Result<Ran, ExecError>> {
        Box::pin(self.call_embed(job))
    }

    fn check(&self, job: CheckJob) -> BoxFuture<'_, Result<Verdict, ExecError>> {
        Box::pin(self.call_check(job))
    }
}
