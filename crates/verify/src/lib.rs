//! Verification and trust for verinet.
//!
//! - [`sign_receipt`], [`verify_receipt`], [`receipt_hash`]: the EIP-712 receipt a node signs
//!   for every result (types in `verinet_primitives::wire`), checkable offline by any Ethereum
//!   library.
//! - [`Tolerance`], [`Mismatch`]: output comparison for re-execution (exact for integers,
//!   absolute + relative for floats).
//! - `merkle`: OpenZeppelin StandardMerkleTree-compatible batches of receipts and their
//!   inclusion proofs.
//! - [`ReceiptLog`]: receipts buffered off the request path, sealed into signed batches every N
//!   receipts or T seconds, with [`InclusionProof`]s on demand.
//! - [`Pool`], [`Executor`], [`Stats`]: workers and validators, in-process or remote, with a
//!   reputation and a heartbeat; who runs and who checks a request.
//! - [`Execute`], [`Job`], [`Ran`]: running one job and answering with a self-signed receipt;
//!   [`check_receipt`] is what a gateway checks before trusting an answer.
//! - [`GenJob`], [`GenStream`], [`EmbedJob`]: language-model jobs (a streamed completion with
//!   a `CompletionReceipt`, embeddings with a tensor receipt); [`check_completion`].
//! - [`VerifyError`].

mod batches;
mod error;
mod exec;
mod job;
mod language;
mod pool;
pub mod merkle;
mod receipt;
mod tolerance;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use batches::{BatchConfig, BatchInfo, InclusionProof, ReceiptInfo, ReceiptLog, ReceiptStatus, batch_hash};
pub use error::VerifyError;
pub use exec::{Execute, LocalExecutor};
pub use job::{ExecError, Job, LoadBytes, Ran, Terms, check_receipt, receipt_body};
pub use language::{
    CheckJob, Completed, EMBED_COSINE_TOLERANCE, EmbedJob, GenChunk, GenJob, GenStream, Generation, Verdict, check_completion,
    check_embedding, check_on, compare_embeddings, completion_body, completion_terms, embed_signed, generate_signed,
};
pub use pool::{Executor, InFlightGuard, NodeRole, Pool, Presence, Stats};
pub use receipt::{receipt_domain, receipt_hash, sign_receipt, verify_receipt};
pub use tolerance::{Mismatch, Tolerance};
