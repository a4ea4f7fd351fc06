//! The executors a gateway routes to (workers) and checks with (validators), their reputation,
//! and the choice of who runs and who checks a request.
//!
//! An executor runs in the gateway's process ([`Executor::new`]: its own key and runtime) or in
//! another process behind [`Execute`] (the network crate's remote worker, which joins by
//! heartbeat). The gateway picks and judges both the same way.

use std::collections::BTreeSet;
use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use verinet_primitives::ModelId;
use verinet_llm::LlmHost;
use verinet_runtime::Runtime;

use crate::exec::{Execute, LocalExecutor};
use crate::job::{ExecError, Job, Ran};

/// What an executor does for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Executes requests.
    Worker,
    /// Re-executes a sample of them.
    Validator,
}

/// One executor: an identity (its key signs its receipts) and how to reach it.
pub struct Executor {
    address: Address,
    /// Its role.
    pub role: NodeRole,
    backend: RwLock<Arc<dyn Execute>>,
    stats: Mutex<Stats>,
    /// Bonded stake as last seen in the ledger (set at start, lowered by slashes), so routing
    /// needs no database read.
    stake: Mutex<u128>,
    presence: Mutex<Presence>,
    inflight: AtomicU32,
    /// Out of routing until this time (unix ms) after too many strikes.
    benched_until_ms: AtomicU64,
}

/// What a remote executor last told the gateway about itself (its heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// When it was last heard from, unix ms; `None` for an in-process executor (always live).
    pub last_seen_ms: Option<u64>,
    /// Jobs it runs at once (0: unknown).
    pub capacity: u32,
    /// Jobs in flight by its own count.
    pub load: u32,
    /// Models whose bytes it holds (warm caches are preferred).
    pub models: BTreeSet<ModelId>,
}

/// Runs `job` on `e`, counting it in flight meanwhile.
async fn run_counted(e: &Executor, job: Job) -> Result<Ran, ExecError> {
    struct InFlight<'a>(&'a AtomicU32);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    e.inflight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&e.inflight);
    let backend = e.backend.read().unwrap_or_else(|p| p.into_inner()).clone();
    let ran = backend.run(job).await?;
    e.served();
    Ok(ran)
}

/// A job in flight on an executor (routing weighs by it); counted until dropped.
pub struct InFlightGuard(Arc<Executor>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Verification outcomes of one executor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    /// Results served.
    pub served: u64,
    /// Results re-executed (or quorum-compared) and found right.
    pub passed: u64,
    /// Results found wrong (each one a dispute and a slash).
    pub failed: u64,
    /// Answers the gateway refused outright: a receipt not signed by it or not matching what it
    /// returned, a response not signed by it, a malformed body (see [`Pool::judge`]).
    #[serde(default)]
    pub strikes: u64,
}

impl Stats {
    /// Reputation in (0, 1]: `(passed + 1) / (passed + 4 * failed + 2)`.
    ///
    /// A new node starts at 0.5; every passed check pulls it towards 1, every proven cheat
    /// weighs four times as much the other way, so one proven cheat with no record
    /// (1/6 ≈ 0.17) drops a node below the default routing threshold of 0.3, while an honest
    /// node with a long record survives an isolated false alarm.
    pub fn reputation(&self) -> f64 {
        (self.passed as f64 + 1.0) / (self.passed as f64 + 4.0 * self.failed as f64 + 2.0)
    }
}

impl Executor {
    /// An executor in this process with a fresh record.
    pub fn new(key: Arc<PrivateKeySigner>, runtime: Arc<Runtime>, llm: Arc<LlmHost>, role: NodeRole) -> Self {
        let address = key.address();
        Self::with_backend(address, role, Arc::new(LocalExecutor::new(key, runtime, llm)), Presence::default())
    }

    /// The backend it runs on (to start a language job on it; see [`Executor::run`] for the
    /// in-flight count of tensor jobs).
    pub fn backend(&self) -> Arc<dyn Execute> {
        self.backend.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts a job in flight on it until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    /// An executor behind `backend` (another process) with a fresh record.
    pub fn with_backend(address: Address, role: NodeRole, backend: Arc<dyn Execute>, presence: Presence) -> Self {
        Self {
            address,
            role,
            backend: RwLock::new(backend),
            stats: Mutex::new(Stats::default()),
            stake: Mutex::new(0),
            presence: Mutex::new(presence),
            inflight: AtomicU32::new(0),
            benched_until_ms: AtomicU64::new(0),
        }
    }

    /// Runs a job and returns the result with the executor's own signed receipt.
    pub async fn run(&self, job: Job) -> Result<Ran, ExecError> {
        run_counted(self, job).await
    }

    /// Its runtime backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.read().unwrap_or_else(|p| p.into_inner()).backend_name()
    }

    /// Its endpoint, if it runs in another process.
    pub fn endpoint(&self) -> Option<String> {
        self.backend.read().unwrap_or_else(|p| p.into_inner()).endpoint()
    }

    /// What it last reported.
    pub fn presence(&self) -> Presence {
        self.with_presence(Presence::clone)
    }

    /// Reads what it last reported without copying it (routing reads it on every request).
    fn with_presence<R>(&self, f: impl FnOnce(&Presence) -> R) -> R {
        f(&self.presence.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs in another process (it joined by heartbeat).
    pub fn is_remote(&self) -> bool {
        self.with_presence(|p| p.last_seen_ms.is_some())
    }

    /// A heartbeat: fresh presence (and possibly a new endpoint).
    pub fn heartbeat(&self, presence: Presence, backend: Option<Arc<dyn Execute>>) {
        *self.presence.lock().unwrap_or_else(|e| e.into_inner()) = presence;
        if let Some(b) = backend {
            *self.backend.write().unwrap_or_else(|p| p.into_inner()) = b;
        }
    }

    /// Takes it out of routing until its next heartbeat (it failed to answer).
    pub fn mark_down(&self) {
        let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        if p.last_seen_ms.is_some() {
            p.last_seen_ms = Some(0);
        }
    }

    /// Heard from within `timeout_ms` of `now_ms` (always, in-process).
    pub fn is_live(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.with_presence(|p| p.last_seen_ms.is_none_or(|t| now_ms.saturating_sub(t) <= timeout_ms))
    }

    /// Jobs this gateway has in flight on it.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Its bonded stake as the pool knows it.
    pub fn stake(&self) -> u128 {
        *self.stake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the known stake (after reading the ledger, or a slash).
    pub fn set_stake(&self, stake: u128) {
        *self.stake.lock().unwrap_or_else(|e| e.into_inner()) = stake;
    }

    /// Its address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Its record.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a served result.
    pub fn served(&self) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).served += 1;
    }

    /// Counts a check of one of its results.
    pub fn checked(&self, passed: bool) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if passed { s.passed += 1 } else { s.failed += 1 }
    }

    /// Counts a refused answer; returns the strikes so far.
    fn strike(&self) -> u64 {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.strikes += 1;
        s.strikes
    }

    /// Out of routing (benched after strikes) at `now_ms`.
    pub fn is_benched(&self, now_ms: u64) -> bool {
        self.benched_until_ms.load(Ordering::Relaxed) > now_ms
    }
}

/// Who runs and who checks: in-process executors fixed at start, remote ones joining and
/// leaving by heartbeat.
pub struct Pool {
    workers: RwLock<Vec<Arc<Executor>>>,
    validators: RwLock<Vec<Arc<Executor>>>,
    /// Executors below this reputation get no work.
    pub min_reputation: f64,
    /// Executors with less stake get no work.
    pub min_stake: u128,
    /// A remote executor not heard from for this long gets no work.
    pub heartbeat_timeout_ms: u64,
    /// Strikes (refused answers) that take an executor out of routing; see [`Pool::judge`].
    pub max_strikes: u64,
    /// How long it stays out, ms.
    pub strike_bench_ms: u64,
    rng: Mutex<StdRng>,
}

impl Pool {
    /// A pool; `seed` makes sampling and tie-breaks reproducible (tests, simulations).
    pub fn new(
        workers: Vec<Arc<Executor>>,
        validators: Vec<Arc<Executor>>,
        min_reputation: f64,
        min_stake: u128,
        seed: Option<u64>,
    ) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self {
            workers: RwLock::new(workers),
            validators: RwLock::new(validators),
            min_reputation,
            min_stake,
            heartbeat_timeout_ms: 5_000,
            max_strikes: 3,
            strike_bench_ms: 600_000,
            rng: Mutex::new(rng),
        }
    }

    /// Sets the strike rule: `max` refused answers bench an executor for `bench_ms`.
    pub fn with_strikes(mut self, max: u64, bench_ms: u64) -> Self {
        self.max_strikes = max.max(1);
        self.strike_bench_ms = bench_ms;
        self
    }

    /// What an executor's failure to serve a job says about it:
    ///
    /// - unavailable (unreachable, busy, a refusal with a reason): out of routing until its next
    ///   heartbeat proves it back;
    /// - a bad answer ([`ExecError::Invalid`]: a response or receipt not signed by it, a receipt
    ///   that does not state what it returned, a malformed body): a strike. Every
    ///   `max_strikes`-th strike benches it for `strike_bench_ms`, heartbeats or not; the
    ///   strikes stay on its record (`GET /v1/nodes`), so a node that keeps answering badly
    ///   spends most of its time benched. A strike is not a slash: a malformed answer proves
    ///   nothing about the work, only a re-execution does (see the verification modes).
    ///
    /// The request itself goes on with another executor (the caller's failover).
    pub fn judge(&self, e: &Executor, err: &ExecError) {
        match err {
            ExecError::Unavailable(_) => e.mark_down(),
            ExecError::Invalid(_) => {
                let strikes = e.strike();
                if strikes.is_multiple_of(self.max_strikes) {
                    let until = verinet_primitives::unix_ms_u64().saturating_add(self.strike_bench_ms);
                    e.benched_until_ms.store(until, Ordering::Relaxed);
                    tracing::warn!(executor = %e.address(), strikes, bench_ms = self.strike_bench_ms, "executor benched after bad answers");
                }
            }
            _ => {}
        }
    }

    /// Sets the heartbeat window.
    pub fn with_heartbeat_timeout(mut self, ms: u64) -> Self {
        self.heartbeat_timeout_ms = ms;
        self
    }

    fn list(&self, role: NodeRole) -> &RwLock<Vec<Arc<Executor>>> {
        match role {
            NodeRole::Worker => &self.workers,
            NodeRole::Validator => &self.validators,
        }
    }

    /// The executor at `address`, if it is in the pool.
    pub fn get(&self, address: Address) -> Option<Arc<Executor>> {
        self.all().into_iter().find(|e| e.address() == address)
    }

    /// Adds `e` (a remote executor that just registered). An address already present in another
    /// role is refused: one key, one role.
    pub fn join(&self, e: Arc<Executor>) -> Result<(), NodeRole> {
        if let Some(old) = self.get(e.address()) {
            return Err(old.role);
        }
        self.list(e.role).write().unwrap_or_else(|p| p.into_inner()).push(e);
        Ok(())
    }

    /// In good standing: live, not benched, reputation and stake at or above the thresholds. A node in
    /// another process needs some stake even when the threshold is 0: joining is open to any
    /// key, so an unbonded one has nothing to lose by cheating.
    pub fn active(&self, e: &Executor) -> bool {
        let min_stake = if e.is_remote() { self.min_stake.max(1) } else { self.min_stake };
        let now = verinet_primitives::unix_ms_u64();
        e.stats().reputation() >= self.min_reputation
            && e.stake() >= min_stake
            && e.is_live(now, self.heartbeat_timeout_ms)
            && !e.is_benched(now)
    }

    /// Every executor, workers first.
    pub fn all(&self) -> Vec<Arc<Executor>> {
        let mut all = self.workers.read().unwrap_or_else(|p| p.into_inner()).clone();
        all.extend(self.validators.read().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        all
    }

    /// Up to `k` distinct workers in good standing for `model`, none in `exclude`; see
    /// [`Pool::weight`] for who is likelier.
    pub fn pick_workers(&self, k: usize, model: ModelId, exclude: &[Address]) -> Vec<Arc<Executor>> {
        let from = self.workers.read().unwrap_or_else(|p| p.into_inner());
        self.pick(&from, k, model, exclude)
    }

    /// A validator in good standing for `model` that is not in `exclude`.
    pub fn pick_validator(&self, model: ModelId, exclude: &[Address]) -> Option<Arc<Executor>> {
        let from = self.validators.read().unwrap_or_else(|p| p.into_inner());
        self.pick(&from, 1, model, exclude).into_iter().next()
    }

    /// A validator to re-execute `worker`'s result: one on another runtime backend when any is in
    /// good standing (an independent implementation catches what a shared bug would hide), else
    /// any but the worker.
    pub fn pick_checker(&self, model: ModelId, worker: &Executor) -> Option<Arc<Executor>> {
        let from = self.validators.read().unwrap_or_else(|p| p.into_inner());
        let backend = worker.backend_name();
        let other: Vec<Arc<Executor>> = from.iter().filter(|v| v.backend_name() != backend).cloned().collect();
        let exclude = [worker.address()];
        self.pick(&other, 1, model, &exclude).into_iter().next().or_else(|| self.pick(&from, 1, model, &exclude).into_iter().next())
    }

    /// True with probability `p` (the sampling decision).
    pub fn sample(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap_or_else(|e| e.into_inner()).gen_bool(p.min(1.0))
    }

    /// How likely `e` is to get a job for `model`: its reputation, halved when a remote node
    /// does not hold the model's bytes yet (warm caches first), and scaled by its free
    /// capacity: a node with every slot taken keeps 5% so work still flows when all are busy.
    pub fn weight(e: &Executor, model: ModelId) -> f64 {
        let inflight = e.inflight();
        let (warm, headroom) = e.with_presence(|p| {
            let warm = if p.last_seen_ms.is_none() || p.models.contains(&model) { 1.0 } else { 0.5 };
            let headroom = if p.capacity == 0 {
                1.0 / (1.0 + f64::from(inflight))
            } else {
                let busy = inflight.max(p.load);
                (f64::from(p.capacity.saturating_sub(busy)) / f64::from(p.capacity)).max(0.05)
            };
            (warm, headroom)
        });
        e.stats().reputation() * warm * headroom
    }

    fn pick(&self, from: &[Arc<Executor>], k: usize, model: ModelId, exclude: &[Address]) -> Vec<Arc<Executor>> {
        let mut ok: Vec<(f64, Arc<Executor>)> = from
            .iter()
            .filter(|e| !exclude.contains(&e.address()) && self.active(e))
            .map(|e| (Self::weight(e, model), e.clone()))
            .collect();
        // Weighted, without replacement: reputable, warm, idle nodes get more work, but load
        // still spreads over every node in good standing.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(k.min(ok.len()));
        while out.len() < k && !ok.is_empty() {
            let total: f64 = ok.iter().map(|(r, _)| r).sum();
            let mut x = rng.gen_range(0.0..total);
            let mut i = 0;
            while i + 1 < ok.len() && x >= ok[i].0 {
                x -= ok[i].0;
                i += 1;
            }
            out.push(ok.swap_remove(i).1);
        }
        out
    }
}
