//! How an executor runs one job and answers for it: outputs plus a receipt it signed itself.
//!
//! [`Execute`] is the seam between the gateway and whoever computes: [`LocalExecutor`] runs in
//! the gateway's process; the network crate's remote worker speaks the same trait over HTTP.
//! Either way the gateway gets a [`Ran`] whose receipt it checks with [`check_receipt`] before
//! trusting a byte of it.

use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use futures::future::BoxFuture;
use verinet_llm::LlmHost;
use verinet_runtime::Runtime;

use crate::job::{ExecError, Job, Ran, receipt_body};
use crate::language::{CheckJob, EmbedJob, GenJob, GenStream, Verdict, check_on, embed_signed, generate_signed};
use crate::sign_receipt;
#[cfg(doc)]
use crate::job::check_receipt;

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
    /// Checks a finished completion with one teacher-forced pass (a validator's job).
    fn check(&self, job: CheckJob) -> BoxFuture<'_, Result<Verdict, ExecError>> {
        drop(job);
        Box::pin(async { Err(ExecError::Unavailable("this executor serves no language models".into())) })
    }
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

    fn check(&self, job: CheckJob) -> BoxFuture<'_, Result<Verdict, ExecError>> {
        Box::pin(check_on(&self.llm, job))
    }
}
