//! The execution step of `POST /v1/infer` by verification mode:
//!
//! - `none`: one worker runs it (another one if it fails: unreachable, busy, a bad answer).
//! - `sampled`: one worker runs it; with probability p a validator (another key, possibly
//!   another backend) re-executes it and the outputs are compared with tolerance before any
//!   money is captured. A mismatch is a dispute: the worker is slashed (a share to the
//!   validator), its reputation drops, the payer is refunded and gets the validator's result.
//! - `quorum`: k workers run it (a failed one is replaced); the answer that a majority agrees
//!   on (within tolerance) is returned and every dissenter is disputed and slashed.

use std::sync::Arc;

use tracing::warn;
use verinet_hub::HubError;
use verinet_primitives::{
    Address, ModelId, TensorMap, tensors_hash,
    wire::{CheckInfo, VerificationMode},
};
use verinet_runtime::{RunOutput, RuntimeError};
use verinet_store::{DisputeRecord, ModelVersion};
use verinet_verify::{ExecError, Executor, Job, LoadBytes, NodeRole, Ran, Terms, Tolerance};

use crate::{ApiError, AppState};

/// A result with its executor's signed receipt, who produced it, and how it was checked.
pub(crate) struct Executed {
    pub ran: Ran,
    pub executor: Arc<Executor>,
    pub check: CheckInfo,
}

pub(crate) fn check(status: &str, checked_by: Vec<Address>, disputed: Vec<Address>) -> CheckInfo {
    CheckInfo { status: status.to_owned(), checked_by, disputed }
}

/// How an in-process executor gets model bytes: from this gateway's hub.
pub(crate) fn hub_loader(st: &AppState) -> LoadBytes {
    let hub = st.hub.clone();
    Arc::new(move |id: ModelId| {
        let hub = hub.clone();
        Box::pin(async move { hub.load_bytes(&id).await.map_err(|e: HubError| RuntimeError::Load(e.to_string())) })
    })
}

async fn run_on(st: &AppState, e: &Executor, model: &ModelVersion, inputs: TensorMap, terms: &Terms) -> Result<Ran, ExecError> {
    let job = Job { model: model.id, inputs, terms: terms.clone(), load: hub_loader(st) };
    let r = e.run(job).await;
    if let Err(err) = &r {
        // Unreachable: out of routing until its next heartbeat; a bad answer: a strike.
        st.pool.judge(e, err);
    }
    r
}

/// Runs the job on `first`, and while executors fail in a way another one may not (unreachable,
/// busy, a bad answer), on others of `role` not tried yet, up to the attempt limit. The escrow
/// covers the request, not an attempt: however many are tried, the payer pays at most once.
async fn run_failover(
    st: &AppState,
    first: Arc<Executor>,
    model: &ModelVersion,
    mut inputs: TensorMap,
    terms: &Terms,
    tried: &mut Vec<Address>,
) -> Result<(Arc<Executor>, Ran), ApiError> {
    let mut e = first;
    loop {
        tried.push(e.address());
        // A local executor fails only where any would, so it never needs a second copy.
        let remote = e.is_remote();
        let job_inputs = if remote { inputs.clone() } else { std::mem::take(&mut inputs) };
        let last = match run_on(st, &e, model, job_inputs, terms).await {
            Ok(ran) => return Ok((e, ran)),
            Err(ExecError::Runtime(err)) => return Err(err.into()),
            Err(err) => {
                warn!(request_id = %terms.request_id, executor = %e.address(), error = %err, "executor failed; trying another");
                err.to_string()
            }
        };
        let next = match e.role {
            NodeRole::Worker => st.pool.pick_workers(1, model.id, tried).pop(),
            NodeRole::Validator => st.pool.pick_validator(model.id, tried),
        };
        match next {
            Some(n) if remote && tried.len() < st.network.max_attempts.max(1) => e = n,
            _ => return Err(ApiError::WorkersFailed { attempts: tried.len(), last }),
        }
    }
}

/// Picks the executors a request in `mode` needs before it is priced (the first one is the
/// operator quoted; whoever serves in the end is paid).
pub(crate) fn route(st: &AppState, mode: VerificationMode, model: ModelId) -> Result<Vec<Arc<Executor>>, ApiError> {
    let want = match mode {
        VerificationMode::None | VerificationMode::Sampled => 1,
        VerificationMode::Quorum => st.verification.quorum_k,
    };
    let picked = st.pool.pick_workers(want, model, &[]);
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
/// `terms` are what the answer's receipt states (a validator's check is signed at price 0).
pub(crate) async fn execute(
    st: &AppState,
    executors: Vec<Arc<Executor>>,
    model: &ModelVersion,
    inputs: TensorMap,
    policy: Policy,
    terms: &Terms,
) -> Result<Executed, ApiError> {
    let Policy { mode, sample_rate, tolerance } = policy;
    let request_id = terms.request_id.as_str();
    let Some(worker) = executors.first().cloned() else {
        return Err(ApiError::NoWorkers { wanted: 1, available: 0 });
    };
    let mut tried = Vec::new();
    match mode {
        VerificationMode::None => {
            let (worker, ran) = run_failover(st, worker, model, inputs, terms, &mut tried).await?;
            Ok(Executed { ran, executor: worker, check: check("unchecked", vec![], vec![]) })
        }
        VerificationMode::Sampled => {
            // Draw first, so the inputs are copied only for a request that is re-executed.
            if !st.pool.sample(sample_rate) {
                let (worker, ran) = run_failover(st, worker, model, inputs, terms, &mut tried).await?;
                return Ok(Executed { ran, executor: worker, check: check("unchecked", vec![], vec![]) });
            }
            let (worker, ran) = run_failover(st, worker, model, inputs.clone(), terms, &mut tried).await?;
            let Some(validator) = st.pool.pick_checker(model.id, &worker) else {
                warn!(request_id, "sampled for re-execution but no validator is in good standing");
                return Ok(Executed { ran, executor: worker, check: check("unchecked", vec![], vec![]) });
            };
            let check_terms = Terms { price: 0, payer: Address::ZERO, ..terms.clone() };
            let mut checked = vec![worker.address()];
            let (validator, truth) = run_failover(st, validator, model, inputs, &check_terms, &mut checked).await?;
            match tolerance.compare(&ran.out.outputs, &truth.out.outputs) {
                Ok(()) => {
                    worker.checked(true);
                    Ok(Executed { ran, executor: worker, check: check("passed", vec![validator.address()], vec![]) })
                }
                Err(m) => {
                    let (got, want) = (hash_of(&ran.out), hash_of(&truth.out));
                    dispute(st, &worker, &validator, got, want, &m.to_string(), "sampled", request_id).await;
                    let by = vec![validator.address()];
                    Ok(Executed { ran: truth, executor: validator, check: check("disputed", by, vec![worker.address()]) })
                }
            }
        }
        VerificationMode::Quorum => {
            let results = quorum_runs(st, executors.clone(), model, &inputs, terms).await;
            // The largest group of results that agree with one of them within tolerance.
            let best = majority(&results, executors.len(), |a, b| tolerance.compare(&a.out.outputs, &b.out.outputs).is_ok())?;
            let (winner, truth) = results[best].clone();
            let mut passed = Vec::new();
            let mut disputed = Vec::new();
            for (e, ran) in &results {
                match tolerance.compare(&ran.out.outputs, &truth.out.outputs) {
                    Ok(()) => {
                        e.checked(true);
                        passed.push(e.address());
                    }
                    Err(m) => {
                        let (got, want) = (hash_of(&ran.out), hash_of(&truth.out));
                        dispute(st, e, &winner, got, want, &m.to_string(), "quorum", request_id).await;
                        disputed.push(e.address());
                    }
                }
            }
            // The majority's answer is verified: the dissenters are slashed, the payer pays once.
            Ok(Executed { ran: truth, executor: winner, check: check("quorum", passed, disputed) })
        }
    }
}

/// The index of a result in the largest group that `agree`s with it, when that group is a
/// majority of the `k` members asked (members whose run failed do not vote); else `no_quorum`.
pub(crate) fn majority<R>(results: &[(Arc<Executor>, R)], k: usize, agree: impl Fn(&R, &R) -> bool) -> Result<usize, ApiError> {
    let group = |i: usize| results.iter().filter(|(_, r)| agree(r, &results[i].1)).count();
    let best = (0..results.len()).max_by_key(|&i| group(i)).ok_or(ApiError::NoQuorum { agreeing: 0, of: k })?;
    let agreeing = group(best);
    if agreeing * 2 <= k {
        return Err(ApiError::NoQuorum { agreeing, of: k });
    }
    Ok(best)
}

/// Runs the quorum's members at once; a member that fails where another might not (unreachable,
/// busy, a bad answer) is replaced by a worker not tried yet, for up to `max_attempts` rounds,
/// so one dead worker does not sink the quorum. Members whose run failed do not vote.
async fn quorum_runs(
    st: &AppState,
    members: Vec<Arc<Executor>>,
    model: &ModelVersion,
    inputs: &TensorMap,
    terms: &Terms,
) -> Vec<(Arc<Executor>, Ran)> {
    let mut tried: Vec<Address> = members.iter().map(|e| e.address()).collect();
    let mut results = Vec::with_capacity(members.len());
    let mut round = members;
    for attempt in 1.. {
        let runs = round.iter().map(|e| run_on(st, e, model, inputs.clone(), terms));
        let outcomes = futures::future::join_all(runs).await;
        let mut replace = 0;
        for (e, r) in round.into_iter().zip(outcomes) {
            match r {
                Ok(ran) => results.push((e, ran)),
                Err(ExecError::Runtime(_)) => {}
                Err(err) => {
                    warn!(request_id = %terms.request_id, executor = %e.address(), error = %err, "quorum member failed; replacing it");
                    replace += 1;
                }
            }
        }
        if replace == 0 || attempt >= st.network.max_attempts.max(1) {
            break;
        }
        round = st.pool.pick_workers(replace, model.id, &tried);
        if round.is_empty() {
            break;
        }
        tried.extend(round.iter().map(|e| e.address()));
    }
    results
}

fn hash_of(out: &RunOutput) -> String {
    format!("{:#x}", tensors_hash(&out.outputs))
}

/// Records a proven mismatch and slashes the cheater; failures to slash are logged, never
/// shown to the payer (their answer is right either way). `got` and `truth` describe the two
/// results (output hashes, or what a check found).
#[allow(clippy::too_many_arguments, reason = "a struct would only rename them")]
pub(crate) async fn dispute(
    st: &AppState,
    cheater: &Arc<Executor>,
    checker: &Arc<Executor>,
    got: String,
    truth: String,
    m: &str,
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
        worker_output: got,
        validator_output: truth,
        detail: m.to_owned(),
        slashed,
        created_at_ms: verinet_primitives::unix_ms(),
    };
    if let Err(e) = st.receipts.store().insert_dispute(&record).await {
        warn!(request_id, error = %e, "recording the dispute failed");
    }
    warn!(request_id, cheater = %cheater.address(), checker = %checker.address(), slashed, %m, "dispute: result refuted");
}

