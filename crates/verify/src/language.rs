//! Language-model jobs: a completion (streamed text, then the ids and a receipt) and an
//! embeddings call (vectors and a receipt), as [`Execute`](crate::Execute) runs them.
//!
//! The gateway tokenizes and fixes the terms; the executor generates from exactly those ids
//! and signs what it generated. A completion's receipt binds the prompt ids, the output ids and
//! the generation terms ([`CompletionTerms`]); an embeddings receipt is a tensor receipt over
//! the token ids in and `{"embeddings": f32 [n, dims]}` out.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use alloy_signer_local::PrivateKeySigner;
use tokio::sync::mpsc;
use verinet_llm::{GenEvent, GenRequest, LlmError, LlmHost, Piece, SamplingParams};
use verinet_primitives::{
    ModelId, Tensor, TensorMap, token_ids_hash,
    wire::{CompletionTerms, ReceiptBody, SignedReceipt},
};
use verinet_runtime::{RunOutput, Timings};

use crate::job::{ExecError, LoadBytes, Ran, Terms, check_receipt, check_signed, receipt_body};
use crate::sign_receipt;

/// How to generate: fixed by the gateway, signed back by the executor.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Most tokens.
    pub max_tokens: u32,
    /// 0: greedy.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Sampler seed.
    pub seed: u64,
    /// Stop strings.
    pub stop: Vec<String>,
}

/// One completion.
pub struct GenJob {
    /// The GGUF model.
    pub model: ModelId,
    /// Prompt token ids (`terms.input_hash` is their `token_ids_hash`).
    pub prompt: Vec<u32>,
    /// How to generate.
    pub generation: Generation,
    /// What the receipt will say besides.
    pub terms: Terms,
    /// Where a local executor gets the bytes.
    pub load: LoadBytes,
}

/// What a stream carries: text as it becomes final (with the tokens it completes), then the
/// end.
#[derive(Debug, Clone)]
pub enum GenChunk {
    /// New text and the tokens it completes.
    Text(Piece),
    /// The end: ids and the signed receipt.
    Done(Box<Completed>),
}

/// A finished completion (also the last line of a remote worker's stream).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Completed {
    /// Every token generated.
    pub output_ids: Vec<u32>,
    /// The whole text (what the `Text` chunks added up to; their tokens add up to
    /// `output_ids`).
    pub text: String,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Signed by the executor.
    pub receipt: SignedReceipt,
    /// Time to the first token on the executor, ms.
    pub first_token_ms: f64,
    /// The generation on the executor, ms.
    pub total_ms: f64,
}

/// A completion in progress; dropping it cancels the generation.
pub type GenStream = mpsc::Receiver<Result<GenChunk, ExecError>>;

/// One embeddings call.
pub struct EmbedJob {
    /// The encoder bundle.
    pub model: ModelId,
    /// Token ids of each input (`terms.input_hash` is their `token_lists_hash`).
    pub ids: Vec<Vec<u32>>,
    /// What the receipt will say.
    pub terms: Terms,
    /// Where a local executor gets the bytes.
    pub load: LoadBytes,
}

/// The terms a completion receipt states for `generation` of `prompt_tokens`.
pub fn completion_terms(g: &Generation, prompt_tokens: usize, output_ids: &[u32], finish_reason: &str) -> CompletionTerms {
    CompletionTerms {
        prompt_tokens: prompt_tokens as u32,
        completion_tokens: output_ids.len() as u32,
        temperature: g.temperature.to_string(),
        top_p: g.top_p.to_string(),
        seed: g.seed,
        max_tokens: g.max_tokens,
        stop: g.stop.clone(),
        finish_reason: finish_reason.to_owned(),
    }
}

/// The receipt body an executor at `node` signs for a completion.
pub fn completion_body(
    terms: &Terms,
    model: ModelId,
    g: &Generation,
    prompt_tokens: usize,
    output_ids: &[u32],
    finish_reason: &str,
    node: Address,
) -> ReceiptBody {
    ReceiptBody {
        request_id: terms.request_id.clone(),
        model_hash: B256::from(*model.digest()),
        input_hash: terms.input_hash,
        output_hash: token_ids_hash(output_ids),
        node,
        mode: terms.mode.clone(),
        price: terms.price.to_string(),
        payer: terms.payer,
        timestamp: verinet_primitives::unix_ms_u64(),
        completion: Some(completion_terms(g, prompt_tokens, output_ids, finish_reason)),
    }
}

/// Checks a finished completion from `node`: its receipt is signed by it, about this request,
/// model, prompt and terms, and about exactly the ids returned.
pub fn check_completion(c: &Completed, terms: &Terms, model: ModelId, g: &Generation, prompt_tokens: usize, node: Address) -> Result<(), String> {
    if !matches!(c.finish_reason.as_str(), "stop" | "length") {
        return Err(format!("finish reason {:?} is neither stop nor length", c.finish_reason));
    }
    let want = completion_body(terms, model, g, prompt_tokens, &c.output_ids, &c.finish_reason, node);
    check_signed(&c.receipt, &want, terms.chain_id)
}

/// Checks an embeddings answer: a tensor receipt over the vectors returned.
pub fn check_embedding(ran: &Ran, terms: &Terms, model: ModelId, node: Address) -> Result<(), String> {
    check_receipt(ran, terms, model, node)
}

fn llm_load(load: &LoadBytes, model: ModelId) -> impl Future<Output = Result<bytes::Bytes, LlmError>> + use<> {
    let f = load(model);
    async move { f.await.map_err(|e| LlmError::Engine(format!("model bytes: {e}"))) }
}

/// Runs a completion on `llm` and streams it; the last chunk carries the receipt signed with
/// `key`. What a local executor and a worker process both do.
pub async fn generate_signed(key: Arc<PrivateKeySigner>, llm: &LlmHost, job: GenJob) -> Result<GenStream, ExecError> {
    let GenJob { model, prompt, generation, terms, load } = job;
    let generator = llm.generator(*model.digest(), llm_load(&load, model)).await?;
    let mut events = generator.submit(GenRequest {
        prompt: prompt.clone(),
        max_tokens: generation.max_tokens as usize,
        sampling: SamplingParams { temperature: generation.temperature, top_p: generation.top_p, seed: generation.seed },
        stop: generation.stop.clone(),
    })?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                // The reader went away: dropping `events` cancels the generation.
                () = tx.closed() => return,
                ev = events.recv() => ev,
            };
            let chunk = match ev {
                Some(GenEvent::Text(t)) => Ok(GenChunk::Text(t)),
                Some(GenEvent::Done(g)) => {
                    let finish = match g.finish {
                        verinet_llm::Finish::Stop => "stop",
                        verinet_llm::Finish::Length => "length",
                    };
                    let body = completion_body(&terms, model, &generation, prompt.len(), &g.output_ids, finish, key.address());
                    sign_receipt(body, &key, terms.chain_id)
                        .map(|receipt| {
                            GenChunk::Done(Box::new(Completed {
                                output_ids: g.output_ids,
                                text: g.text,
                                finish_reason: finish.to_owned(),
                                receipt,
                                first_token_ms: g.first_token_ms,
                                total_ms: g.total_ms,
                            }))
                        })
                        .map_err(|e| ExecError::Invalid(format!("signing: {e}")))
                }
                Some(GenEvent::Failed(e)) => Err(ExecError::Llm(LlmError::Engine(e))),
                None => Err(ExecError::Unavailable("the generation ended without an answer".into())),
            };
            let last = !matches!(chunk, Ok(GenChunk::Text(_)));
            if tx.send(chunk).await.is_err() || last {
                return;
            }
        }
    });
    Ok(rx)
}

/// A finished completion for a validator to check with one teacher-forced pass.
pub struct CheckJob {
    /// The GGUF model the completion claims.
    pub model: ModelId,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// The output token ids claimed.
    pub output: Vec<u32>,
    /// The terms it was generated under (as the receipt signs them).
    pub generation: Generation,
    /// `stop` or `length`, as claimed.
    pub finish: String,
    /// Where a local validator gets the bytes.
    pub load: LoadBytes,
}

/// What a validator's check of a completion found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Whether every token, and the ending, is what the model gives (within the documented
    /// near-tie tolerance).
    pub accepted: bool,
    /// Output positions checked.
    pub checked: u32,
    /// Positions accepted as near ties.
    pub near_ties: u32,
    /// The first position at fault, when refuted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuted_at: Option<u32>,
    /// What was wrong, for the dispute record.
    #[serde(default)]
    pub detail: String,
}

/// The near-tie tolerance validators check completions with. Wider than the check's own
/// default (1.0, from 28,424 honest tokens: largest gap needed 0.43, docs/llm.md "Checking a
/// completion"): on a node, an honest sampled completion (SmolLM2, T 0.8, seed 103, "Say hi to
/// Hal.") needed 0.63, because a single-token decoding step and the teacher-forced pass differ
/// by up to 3.5 in some logits (8-bit activations round the two paths' slightly different
/// hidden states to different steps). Checks become exact only when attention is
/// batch-invariant too (the matrix products already are); until then this trades some
/// detection power (a forger may swap in a near runner-up) for no false alarms.
pub const CHECK_TOLERANCE: verinet_llm::CheckTolerance = verinet_llm::CheckTolerance { logit_gap: 1.5 };

/// How far apart two honest embeddings of the same inputs may be: every vector's cosine
/// with its counterpart at least `1 - EMBED_COSINE_TOLERANCE`. Honest differences are last-bit
/// noise (a padded batch against single texts differs by ~1e-7, docs/llm.md); another model,
/// another quantization or a truncated copy moves vectors by orders of magnitude more.
pub const EMBED_COSINE_TOLERANCE: f64 = 1e-4;

/// Compares two embeddings answers (`{"embeddings": f32 [n, dims]}`) vector by vector within
/// [`EMBED_COSINE_TOLERANCE`]; says where they differ.
pub fn compare_embeddings(a: &Ran, b: &Ran) -> Result<(), String> {
    let (Some(x), Some(y)) = (a.out.outputs.get("embeddings"), b.out.outputs.get("embeddings")) else {
        return Err("an answer has no embeddings".into());
    };
    if x.shape() != y.shape() || x.shape().len() != 2 || x.dtype() != y.dtype() || x.raw().len() != y.raw().len() {
        return Err(format!("shapes differ: {:?} against {:?}", x.shape(), y.shape()));
    }
    let dims = x.shape()[1].max(1);
    let floats = |t: &Tensor| t.raw().chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect::<Vec<f64>>();
    let (fx, fy) = (floats(x), floats(y));
    for (i, (u, v)) in fx.chunks(dims).zip(fy.chunks(dims)).enumerate() {
        let dot: f64 = u.iter().zip(v).map(|(p, q)| p * q).sum();
        let norm = |w: &[f64]| w.iter().map(|p| p * p).sum::<f64>().sqrt();
        let cosine = dot / (norm(u) * norm(v)).max(f64::MIN_POSITIVE);
        if cosine.is_nan() || cosine < 1.0 - EMBED_COSINE_TOLERANCE {
            return Err(format!("vector {i}: cosine {cosine:.6} with the re-execution, below 1 - {EMBED_COSINE_TOLERANCE}"));
        }
    }
    Ok(())
}

/// Checks a completion on `llm` by one teacher-forced forward pass (on the blocking pool):
/// what a local validator and a worker process both do.
pub async fn check_on(llm: &LlmHost, job: CheckJob) -> Result<Verdict, ExecError> {
    let CheckJob { model, prompt, output, generation, finish, load } = job;
    let finish = match finish.as_str() {
        "stop" => verinet_llm::Finish::Stop,
        "length" => verinet_llm::Finish::Length,
        other => {
            return Ok(Verdict { accepted: false, checked: 0, near_ties: 0, refuted_at: None, detail: format!("finish reason {other:?}") });
        }
    };
    let lm = llm.generator(*model.digest(), llm_load(&load, model)).await?.model().clone();
    let request = GenRequest {
        prompt,
        max_tokens: generation.max_tokens as usize,
        sampling: SamplingParams { temperature: generation.temperature, top_p: generation.top_p, seed: generation.seed },
        stop: generation.stop,
    };
    let check = tokio::task::spawn_blocking(move || {
        verinet_llm::check_completion(&lm, &request, &output, finish, &CHECK_TOLERANCE)
    })
    .await
    .map_err(|e| ExecError::Unavailable(format!("the check task: {e}")))??;
    Ok(Verdict {
        accepted: check.accepted(),
        checked: check.checked as u32,
        near_ties: check.near_ties.len() as u32,
        refuted_at: check.refuted.map(|r| r.position() as u32),
        detail: check.refuted.map(|r| format!("{r:?}")).unwrap_or_default(),
    })
}

/// Embeds on `llm` and signs the receipt with `key`.
pub async fn embed_signed(key: &PrivateKeySigner, llm: &LlmHost, job: EmbedJob) -> Result<Ran, ExecError> {
    let EmbedJob { model, ids, terms, load } = job;
    let started = std::time::Instant::now();
    let embedder = llm.embedder(*model.digest(), llm_load(&load, model)).await?;
    let loaded = started.elapsed();
    let n = ids.len();
    let vectors = llm.embed(embedder, ids).await?;
    let dims = vectors.first().map_or(0, Vec::len);
    let flat: Vec<f32> = vectors.into_iter().flatten().collect();
    let tensor = Tensor::from_f32(vec![n, dims], &flat).map_err(|e| ExecError::Invalid(format!("embeddings tensor: {e}")))?;
    let outputs: TensorMap = [("embeddings".to_owned(), tensor)].into_iter().collect();
    let body = receipt_body(&terms, model, &outputs, key.address());
    let receipt = sign_receipt(body, key, terms.chain_id).map_err(|e| ExecError::Invalid(format!("signing: {e}")))?;
    let timings = Timings { load: loaded, queue: Default::default(), compute: started.elapsed() - loaded };
    Ok(Ran { out: RunOutput { outputs, timings }, receipt })
}
