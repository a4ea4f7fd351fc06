//! A worker in another process, as the gateway sees it: [`Execute`] over signed HTTP.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use futures::future::BoxFuture;
use http::StatusCode;
use verinet_primitives::wire::ErrorBody;
use verinet_runtime::{RunOutput, Timings};
use verinet_verify::{ExecError, Execute, Job, Ran, check_receipt};

use crate::auth::{self, RESPONSE};
use crate::wire::{RUN_PATH, RunRequest, RunResponse};

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
        let body = serde_json::to_vec(&req).map_err(|e| ExecError::Invalid(format!("encoding the job: {e}")))?;
        let (status, headers, bytes) = auth::post_signed(&self.http, &self.gateway, &self.endpoint, RUN_PATH, body)
            .await
            .map_err(|e| ExecError::Unavailable(format!("{}: {e}", self.endpoint)))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| format!("{} {}: {}", status.as_u16(), b.error.code, b.error.message))
                .unwrap_or_else(|_| format!("{}", status.as_u16()));
            return Err(if status == StatusCode::SERVICE_UNAVAILABLE || status.is_server_error() {
                ExecError::Unavailable(detail)
            } else {
                ExecError::Invalid(detail)
            });
        }
        let signer = auth::verify(&headers, RESPONSE, RUN_PATH, &bytes, self.skew_ms)
            .map_err(|e| ExecError::Invalid(format!("answer not signed by the worker: {e}")))?;
        if signer != self.address {
            return Err(ExecError::Invalid(format!("answer signed by {signer}, not {}", self.address)));
        }
        let r: RunResponse = serde_json::from_slice(&bytes).map_err(|e| ExecError::Invalid(format!("answer: {e}")))?;
        let ms = |x: f64| Duration::from_secs_f64((x / 1e3).max(0.0));
        let ran = Ran {
            out: RunOutput {
                outputs: r.outputs,
                timings: Timings { load: ms(r.load_ms), queue: ms(r.queue_ms), compute: ms(r.compute_ms) },
            },
            receipt: r.receipt,
        };
        check_receipt(&ran, &terms, model, self.address).map_err(ExecError::Invalid)?;
        Ok(ran)
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
}
