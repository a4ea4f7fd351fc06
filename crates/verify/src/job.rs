//! What a job is, what comes back, and how an answer's receipt is checked: the vocabulary that
//! every executor (tensor or language, local or remote) shares.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use bytes::Bytes;
use futures::future::BoxFuture;
use verinet_primitives::{
    ModelId, TensorMap, tensors_hash,
    wire::{ReceiptBody, SignedReceipt},
};
use verinet_runtime::{RunOutput, RuntimeError};

use crate::verify_receipt;

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
