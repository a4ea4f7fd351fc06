//! How an executor runs one job and answers for it: outputs plus a receipt it signed itself.
//!
//! [`Execute`] is the seam between the gateway and whoever computes: [`LocalExecutor`] runs in
//! the gateway's process; the network crate's remote worker speaks the same trait over HTTP.
//! Either way the gateway gets a [`Ran`] whose receipt it checks with [`check_receipt`] before
//! trusting a byte of it.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;
use futures::future::BoxFuture;
use verinet_primitives::{
    ModelId, TensorMap, tensors_hash,
    wire::{ReceiptBody, SignedReceipt},
};
use verinet_runtime::{RunOutput, Runtime, RuntimeError};

use verinet_llm::LlmHost;

use crate::language::{EmbedJob, GenJob, GenStream, embed_signed, generate_signed};
use crate::{sign_receipt, verify_receipt};

/// Fetches a model's bytes by content id (the gateway's hub for a local executor).
pub type LoadBytes = Arc<dyn Fn(ModelId) -> BoxFuture<'static, Result<Bytes, RuntimeError>> + Send + Sync>;

/// What the executor's receipt states besides its result: fixed by the gateway before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// The request.
    pub request_id: String,
    /// Canonical hash of the inputs.
    pub input_hash: B256,
    /// Verification mode name.
    pub mode: String,
    /// Price in escrow for this answer (0 when free, or for a validator's check).
    pub price: u128,
    /// Who pays (zero when free).
    pub payer: Address,
    /// EIP-712 chain id of the receipt domain.
    pub chain_id: u64,
}

/// One unit of work.
pub struct Job {
    /// The model, by content.
    pub model: ModelId,
    /// Inputs, already checked against the model's signature.
    pub inputs: TensorMap,
    /// What the receipt will say.
    pub terms: Terms,
    /// Where a local executor gets the bytes (remote workers fetch their own, hash-checked).
    pub load: LoadBytes,
}

/// A result and the executor's signed statement of it.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Outputs and timings.
    pub out: RunOutput,
    /// Signed by the executor.
    pub receipt: SignedReceipt,
}

/// Why an executor produced no usable result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The run itself failed where any executor would (bad model, timeout, overload of a local
    /// runtime): not retried elsewhere.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The executor could not be reached or was busy: another one may serve it.
    #[error("executor unavailable: {0}")]
    Unavailable(String),
    /// The executor answered with something the gateway refuses (bad signature, wrong hash,
    /// an error of its own): another one may serve it; this one is suspect.
    #[error("executor answered badly: {0}")]
    Invalid(String),
    /// A language model refused or failed the job: a bad request (too long, bad input) is not
    /// retried; an engine failure or a full queue may be served elsewhere.
    #[error(transparent)]
    Llm(#[from] verinet_llm::LlmError),
}

impl ExecError {
    /// Whether another executor may serve the job.
    pub fn retriable(&self) -> bool {
        use verinet_llm::LlmError as L;
        match self {
            ExecError::Runtime(_) => false,
            ExecError::Unavailable(_) | ExecError::Invalid(_) => true,
            ExecError::Llm(e) => matches!(e, L::Engine(_) | L::Overloaded(_)),
        }
    }
}

/// Something that runs jobs and signs for them.
pub trait Execute: Send + Sync {
    /// Runs `job` and returns outputs with a receipt the executor signed.
    fn run(&self, job: Job) -> BoxFuture<'_, Result<Ran, ExecError>>;
    /// The runtime backend it uses (`tract`, `onnxruntime`), as it reports it.
    fn backend_name(&self) -> String;
    /// Where it listens, for one on another process; `None` in-process.
    fn endpoint(&self) -> Option<String>;
    /// Starts a completion; text streams as it is generated, the last chunk carries the
    /// receipt. An executor without language models says it is unavailable.
    fn generate(&self, job: GenJob) -> BoxFuture<'_, Result<GenStream, ExecError>> {
        drop(job);
        Box::pin(async { Err(ExecError::Unavailable("this executor serves no language models".into())) })
    }
    /// Embeds token id lists and signs the vectors.
    fn embed(&self, job: EmbedJob) -> BoxFuture<'_, Result<Ran, ExecError>> {
        drop(job);
        Box::pin(async { Err(ExecError::Unavailable("this executor serves no language models".into())) })
    }
}

/// The receipt body an executor at `node` signs for `outputs` of `model` under `terms`.
pub fn receipt_body(terms: &Terms, model: ModelId, outputs: &TensorMap, node: Address) -> ReceiptBody {
    ReceiptBody {
        request_id: terms.request_id.clone(),
        model_hash: B256::from(*model.digest()),
        input_hash: terms.input_hash,
        output_hash: tensors_hash(outputs),
        node,
        mode: terms.mode.clone(),
        price: terms.price.to_string(),
        payer: terms.payer,
        timestamp: verinet_primitives::unix_ms_u64(),
        completion: None,
    }
}

/// Checks that `ran` is what `node` was asked for: signed by it, in the right domain, about this
/// request, model and inputs at these terms, and about exactly these outputs.
pub fn check_receipt(ran: &Ran, terms: &Terms, model: ModelId, node: Address) -> Result<(), String> {
    check_signed(&ran.receipt, &receipt_body(terms, model, &ran.out.outputs, node), terms.chain_id)
}

/// Checks that `r` is signed by the node `want` names and states every field of `want`
/// (the timestamp aside).
pub(crate) fn check_signed(r: &SignedReceipt, want: &ReceiptBody, chain_id: u64) -> Result<(), String> {
    let signer = verify_receipt(r).map_err(|e| format!("receipt: {e}"))?;
    let b = &r.receipt;
    let field = |name: &str, ok: bool| if ok { Ok(()) } else { Err(format!("receipt {name} differs from what was asked")) };
    field("signer", signer == want.node)?;
    field("chain id", r.chain_id == chain_id)?;
    field("request id", b.request_id == want.request_id)?;
    field("model hash", b.model_hash == want.model_hash)?;
    field("input hash", b.input_hash == want.input_hash)?;
    field("output hash (of the outputs returned)", b.output_hash == want.output_hash)?;
    field("node", b.node == want.node)?;
    field("mode", b.mode == want.mode)?;
    field("price", b.price == want.price)?;
    field("payer", b.payer == want.payer)?;
    field("completion terms", b.completion == want.completion)
}

/// An executor in this process: a key, a runtime and the language models it holds.
pub struct LocalExecutor {
    key: Arc<PrivateKeySigner>,
    runtime: Arc<Runtime>,
    llm: Arc<LlmHost>,
}

impl LocalExecutor {
    /// Runs on `runtime` and `llm`, signs with `key`.
    pub fn new(key: Arc<PrivateKeySigner>, runtime: Arc<Runtime>, llm: Arc<LlmHost>) -> Self {
        Self { key, runtime, llm }
    }

    /// Runs `job` on `runtime` and signs the receipt with `key`: what a local executor and a
    /// worker process both do.
    pub async fn run_signed(key: &PrivateKeySigner, runtime: &Runtime, job: Job) -> Result<Ran, ExecError> {
        let Job { model, inputs, terms, load } = job;
        let out = runtime.run(model, move || load(model), inputs).await?;
        let body = receipt_body(&terms, model, &out.outputs, key.address());
        let receipt = sign_receipt(body, key, terms.chain_id).map_err(|e| ExecError::Invalid(format!("signing: {e}")))?;
        Ok(Ran { out, receipt })
    }
}

impl Execute for LocalExecutor {
    fn run(&self, job: Job) -> BoxFuture<'_, Result<Ran, ExecError>> {
        Box::pin(Self::run_signed(&self.key, &self.runtime, job))
    }

    fn backend_name(&self) -> String {
        self.runtime.backend_name().to_owned()
    }

    fn endpoint(&self) -> Option<String> {
        None
    }

    fn generate(&self, job: GenJob) -> BoxFuture<'_, Result<GenStream, ExecError>> {
        Box::pin(generate_signed(self.key.clone(), &self.llm, job))
    }

    fn embed(&self, job: EmbedJob) -> BoxFuture<'_, Result<Ran, ExecError>> {
        Box::pin(embed_signed(&self.key, &self.llm, job))
    }
}
