//! The execution step of `POST /v1/infer` by verification mode:
//!
//! - `none`: one worker runs it.
//! - `sampled`: one worker runs it; with probability p a validator (another key, possibly
//!   another backend) re-executes it and the outputs are compared with tolerance before any
//!   money is captured. A mismatch is a dispute: the worker is slashed (a share to the
//!   validator), its reputation drops, the payer is refunded and gets the validator's result.
//! - `quorum`: k workers run it; the answer that a majority agrees on (within tolerance) is
//!   returned and every dissenter is disputed and slashed.

use std::sync::Arc;

use tracing::warn;
use verinet_hub::HubError;
use verinet_primitives::{
    Address, TensorMap, tensors_hash,
    wire::{CheckInfo, VerificationMode},
};
use verinet_runtime::{RunOutput, RuntimeError};
use verinet_store::{DisputeRecord, ModelVersion};
use verinet_verify::{Executor, Mismatch, Tolerance};

use crate::{ApiError, AppState};

/// A result, who produced it, and how it was checked.
pub(crate) struct Executed {
    pub out: RunOutput,
    pub executor: Arc<Executor>,
    pub check: CheckInfo,
}

fn check(status: &str, checked_by: Vec<Address>, disputed: Vec<Address>) -> CheckInfo {
    CheckInfo { status: status.to_owned(), checked_by, disputed }
}

async fn run_on(st: &AppState, e: &Arc<Executor>, model: &ModelVersion, inputs: TensorMap) -> Result<RunOutput, RuntimeError> {
    let hub = st.hub.clone();
    let id = model.id;
    let load = || async move { hub.load_bytes(&id).await.map_err(|e: HubError| RuntimeError::Load(e.to_string())) };
    let out = e.runtime.run(model.id, load, inputs).await;
    if out.is_ok() {
        e.served();
    }
    out
}

/// Picks the executors a request in `mode` needs before it is priced (the primary one is the
/// operator paid by the capture).
pub(crate) fn route(st: &AppState, mode: VerificationMode) -> Result<Vec<Arc<Executor>>, ApiError> {
    let want = match mode {
        VerificationMode::None | VerificationMode::Sampled => 1,
        VerificationMode::Quorum => st.verification.quorum_k,
    };
    let picked = st.pool.pick_workers(want);
    if picked.len() < want {
        return Err(ApiError::NoWorkers { wanted: want, available: picked.len() });
    }
    Ok(picked)
}

/// How one request is verified: its mode, and the sampling rate and tolerance after the
/// request > model > node precedence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub mode: VerificationMode,
    pub sample_rate: f64,
    pub tolerance: Tolerance,
}

/// Runs the request on `executors` as the policy's mode requires and judges the results.
pub(crate) async fn execute(
    st: &AppState,
    executors: Vec<Arc<Executor>>,
    model: &ModelVersion,
    inputs: TensorMap,
    policy: Policy,
    request_id: &str,
) -> Result<Executed, ApiError> {
    let Policy { mode, sample_rate, tolerance } = policy;
    let Some(worker) = executors.first().cloned() else {
        return Err(ApiError::NoWorkers { wanted: 1, available: 0 });
    };
    match mode {
        VerificationMode::None => {
            let out = run_on(st, &worker, model, inputs).await?;
            Ok(Executed { out, executor: worker, check: check("unchecked", vec![], vec![]) })
        }
        VerificationMode::Sampled => {
            // Draw first, so the inputs are copied only for a request that is re-executed.
            let validator = if st.pool.sample(sample_rate) {
                let v = st.pool.pick_validator(worker.address());
                if v.is_none() {
                    warn!(request_id, "sampled for re-execution but no validator is in good standing");
                }
                v
            } else {
                None
            };
            let Some(validator) = validator else {
                let out = run_on(st, &worker, model, inputs).await?;
                return Ok(Executed { out, executor: worker, check: check("unchecked", vec![], vec![]) });
            };
            let out = run_on(st, &worker, model, inputs.clone()).await?;
            let truth = run_on(st, &validator, model, inputs).await?;
            match tolerance.compare(&out.outputs, &truth.outputs) {
                Ok(()) => {
                    worker.checked(true);
                    Ok(Executed { out, executor: worker, check: check("passed", vec![validator.address()], vec![]) })
                }
                Err(m) => {
                    dispute(st, &worker, &validator, &out, &truth, &m, "sampled", request_id).await;
                    let by = vec![validator.address()];
                    Ok(Executed { out: truth, executor: validator, check: check("disputed", by, vec![worker.address()]) })
                }
            }
        }
        VerificationMode::Quorum => {
            let runs = executors.iter().map(|e| run_on(st, e, model, inputs.clone()));
            let results: Vec<(Arc<Executor>, RunOutput)> = futures::future::join_all(runs)
                .await
                .into_iter()
                .zip(executors.iter().cloned())
                .filter_map(|(r, e)| r.ok().map(|out| (e, out)))
                .collect();
            // The largest group of results that agree with one of them within tolerance.
            let agree = |a: &RunOutput, b: &RunOutput| tolerance.compare(&a.outputs, &b.outputs).is_ok();
            let best = (0..results.len())
                .max_by_key(|&i| results.iter().filter(|(_, o)| agree(o, &results[i].1)).count())
                .ok_or(ApiError::NoQuorum { agreeing: 0, of: executors.len() })?;
            let agreeing = results.iter().filter(|(_, o)| agree(o, &results[best].1)).count();
            if agreeing * 2 <= executors.len() {
                return Err(ApiError::NoQuorum { agreeing, of: executors.len() });
            }
            let (winner, truth) = results[best].clone();
            let mut passed = Vec::new();
            let mut disputed = Vec::new();
            for (e, out) in &results {
                match tolerance.compare(&out.outputs, &truth.outputs) {
                    Ok(()) => {
                        e.checked(true);
                        passed.push(e.address());
                    }
                    Err(m) => {
                        dispute(st, e, &winner, out, &truth, &m, "quorum", request_id).await;
                        disputed.push(e.address());
                    }
                }
            }
            // The majority's answer is verified: the dissenters are slashed, the payer pays once.
            Ok(Executed { out: truth, executor: winner, check: check("quorum", passed, disputed) })
        }
    }
}

/// Records a proven mismatch and slashes the cheater; failures to slash are logged, never
/// shown to the payer (their answer is right either way).
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn dispute(
    st: &AppState,
    cheater: &Arc<Executor>,
    checker: &Arc<Executor>,
    got: &RunOutput,
    truth: &RunOutput,
    m: &Mismatch,
    mode: &str,
    request_id: &str,
) {
    cheater.checked(false);
    let v = &st.verification;
    let slashed = match st
        .ledger
        .slash(cheater.address(), v.slash_amount, checker.address(), v.validator_share_bps, st.payments.protocol, request_id)
        .await
    {
        Ok(n) => {
            cheater.set_stake(cheater.stake().saturating_sub(n));
            n
        }
        Err(e) => {
            warn!(request_id, cheater = %cheater.address(), error = %e, "slashing failed");
            0
        }
    };
    let record = DisputeRecord {
        request_id: request_id.to_owned(),
        worker: cheater.address(),
        validator: checker.address(),
        mode: mode.to_owned(),
        worker_output: format!("{:#x}", tensors_hash(&got.outputs)),
        validator_output: format!("{:#x}", tensors_hash(&truth.outputs)),
        detail: m.to_string(),
        slashed,
        created_at_ms: verinet_primitives::unix_ms(),
    };
    if let Err(e) = st.receipts.store().insert_dispute(&record).await {
        warn!(request_id, error = %e, "recording the dispute failed");
    }
    warn!(request_id, cheater = %cheater.address(), checker = %checker.address(), slashed, %m, "dispute: result refuted");
}

