//! Test doubles for what cannot exist here on purpose: workers that cheat on language models.
//! Behind the `test-utils` feature; never in a node's default build.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_signer_local::PrivateKeySigner;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::exec::Execute;
use crate::job::{ExecError, Job, Ran, receipt_body};
use crate::language::{CheckJob, EmbedJob, GenChunk, GenJob, GenStream, Verdict, completion_body};
use crate::sign_receipt;

/// How a [`CheatingLlm`] cheats on every completion; each answer is signed by the cheater's
/// own key, so its receipt verifies: only a check of the tokens can catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmCheat {
    /// Serves another model in effect: generates under other sampling terms (temperature 1,
    /// another seed) and claims the requested ones, as a worker running a cheaper
    /// quantization or another checkpoint would give other tokens. On embeddings: answers
    /// with the vectors of a truncated copy in effect (the second half of every vector
    /// zeroed, then renormalized).
    OtherModel,
    /// Appends tokens after a finished answer (an end-of-turn token or a stop string) and
    /// claims `length`, to be paid for more completion tokens.
    AppendTokens,
    /// Signs a receipt that counts one prompt token fewer than it read.
    ShortPrompt,
    /// Serves another quantization of the published model (its own engine, loaded with the
    /// published bytes re-quantized by [`verinet_llm::requantize`]) and claims the published one.
    OtherQuantization(verinet_llm::Quantization),
}

/// A worker backend that cheats on completions as [`LlmCheat`] says and is honest otherwise.
pub struct CheatingLlm {
    inner: Arc<dyn Execute>,
    key: Arc<PrivateKeySigner>,
    cheat: LlmCheat,
    cheated: Arc<AtomicU64>,
    /// The engine of `OtherQuantization`, apart from the node's (whose cache holds the real
    /// model under the same id), and the re-quantized bytes.
    own: Arc<verinet_llm::LlmHost>,
    requantized: Arc<tokio::sync::OnceCell<bytes::Bytes>>,
}

impl CheatingLlm {
    /// Wraps an honest backend; `key` is the worker's own (its lies verify as its receipts).
    pub fn new(inner: Arc<dyn Execute>, key: Arc<PrivateKeySigner>, cheat: LlmCheat) -> Self {
        Self {
            inner,
            key,
            cheat,
            cheated: Arc::default(),
            own: Arc::new(verinet_llm::LlmHost::new(verinet_llm::LlmConfig::default(), 1)),
            requantized: Arc::default(),
        }
    }

    /// Counts the answers it actually falsified in `counter` (`AppendTokens` leaves an answer
    /// that ran to `max_tokens` alone).
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.cheated = counter;
        self
    }

    async fn cheat_on(&self, mut job: GenJob) -> Result<GenStream, ExecError> {
        if let LlmCheat::OtherQuantization(q) = self.cheat {
            let (original, cell) = (job.load.clone(), self.requantized.clone());
            job.load = Arc::new(move |id| {
                let (original, cell) = (original.clone(), cell.clone());
                Box::pin(async move {
                    let bytes = cell
                        .get_or_try_init(|| async {
                            let b = original(id).await?;
                            let q = tokio::task::spawn_blocking(move || verinet_llm::requantize(&b, q))
                                .await
                                .map_err(|e| verinet_runtime::RuntimeError::Load(e.to_string()))?
                                .map_err(|e| verinet_runtime::RuntimeError::Load(e.to_string()))?;
                            Ok::<_, verinet_runtime::RuntimeError>(bytes::Bytes::from(q))
                        })
                        .await?;
                    Ok(bytes.clone())
                })
            });
            self.cheated.fetch_add(1, Ordering::Relaxed);
            return crate::language::generate_signed(self.key.clone(), &self.own, job).await;
        }
        let claimed = job.generation.clone();
        let (terms, model, prompt_len) = (job.terms.clone(), job.model, job.prompt.len());
        if self.cheat == LlmCheat::OtherModel {
            job.generation.temperature = 1.0;
            job.generation.seed = job.generation.seed.wrapping_add(1);
        }
        let mut honest = self.inner.generate(job).await?;
        let (tx, rx) = mpsc::channel(64);
        let (key, cheat, cheated) = (self.key.clone(), self.cheat, self.cheated.clone());
        tokio::spawn(async move {
            while let Some(chunk) = honest.recv().await {
                let chunk = match chunk {
                    Ok(GenChunk::Done(mut c)) => {
                        let mut finish = c.finish_reason.clone();
                        let mut prompt_tokens = prompt_len;
                        let lied = match cheat {
                            LlmCheat::AppendTokens if finish == "stop" && c.output_ids.len() < claimed.max_tokens as usize => {
                                let room = claimed.max_tokens as usize - c.output_ids.len();
                                let extra: Vec<u32> = c.output_ids.iter().copied().cycle().take(room).collect();
                                c.output_ids.extend_from_slice(&extra);
                                // Streamed too, so the stream adds up to the claim.
                                if tx.send(Ok(GenChunk::Text(verinet_llm::Piece { text: String::new(), ids: extra }))).await.is_err() {
                                    return;
                                }
                                finish = "length".into();
                                true
                            }
                            LlmCheat::AppendTokens => false,
                            LlmCheat::ShortPrompt => {
                                prompt_tokens = prompt_len.saturating_sub(1);
                                true
                            }
                            LlmCheat::OtherModel | LlmCheat::OtherQuantization(_) => true,
                        };
                        if lied {
                            cheated.fetch_add(1, Ordering::Relaxed);
                        }
                        let body = completion_body(&terms, model, &claimed, prompt_tokens, &c.output_ids, &finish, key.address());
                        match sign_receipt(body, &key, terms.chain_id) {
                            Ok(r) => {
                                c.receipt = r;
                                c.finish_reason = finish;
                                Ok(GenChunk::Done(c))
                            }
                            Err(e) => Err(ExecError::Invalid(format!("signing: {e}"))),
                        }
                    }
                    other => other,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

impl Execute for CheatingLlm {
    fn run(&self, job: Job) -> BoxFuture<'_, Result<Ran, ExecError>> {
        self.inner.run(job)
    }

    fn backend_name(&self) -> String {
        self.inner.backend_name()
    }

    fn endpoint(&self) -> Option<String> {
        self.inner.endpoint()
    }

    fn generate(&self, job: GenJob) -> BoxFuture<'_, Result<GenStream, ExecError>> {
        Box::pin(self.cheat_on(job))
    }

    fn embed(&self, job: EmbedJob) -> BoxFuture<'_, Result<Ran, ExecError>> {
        Box::pin(async move {
            let (terms, model) = (job.terms.clone(), job.model);
            let mut ran = self.inner.embed(job).await?;
            if self.cheat != LlmCheat::OtherModel {
                return Ok(ran);
            }
            let Some(t) = ran.out.outputs.get("embeddings") else { return Ok(ran) };
            let (shape, dims) = (t.shape().to_vec(), t.shape().get(1).copied().unwrap_or(1).max(1));
            let mut v: Vec<f32> = t.raw().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            for row in v.chunks_mut(dims) {
                row[dims / 2..].iter_mut().for_each(|x| *x = 0.0);
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
                row.iter_mut().for_each(|x| *x /= norm);
            }
            let t = verinet_primitives::Tensor::from_f32(shape, &v).map_err(|e| ExecError::Invalid(e.to_string()))?;
            ran.out.outputs.insert("embeddings".into(), t);
            let body = receipt_body(&terms, model, &ran.out.outputs, self.key.address());
            ran.receipt = sign_receipt(body, &self.key, terms.chain_id).map_err(|e| ExecError::Invalid(format!("signing: {e}")))?;
            self.cheated.fetch_add(1, Ordering::Relaxed);
            Ok(ran)
        })
    }

    fn check(&self, job: CheckJob) -> BoxFuture<'_, Result<Verdict, ExecError>> {
        self.inner.check(job)
    }
}
