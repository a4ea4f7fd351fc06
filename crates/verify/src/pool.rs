//! The executors a gateway routes to (workers) and checks with (validators), their reputation,
//! and the choice of who runs and who checks a request.
//!
//! In this issue every executor runs in the gateway's process with its own key (and, for
//! validators, possibly another backend); the network issue puts them behind HTTP on other
//! machines without changing how the gateway picks and judges them.

use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use verinet_runtime::Runtime;

/// What an executor does for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Executes requests.
    Worker,
    /// Re-executes a sample of them.
    Validator,
}

/// One executor: an identity (its key signs its receipts) and a runtime.
pub struct Executor {
    /// Its key.
    pub key: Arc<PrivateKeySigner>,
    /// Where it runs models.
    pub runtime: Arc<Runtime>,
    /// Its role.
    pub role: NodeRole,
    stats: Mutex<Stats>,
    /// Bonded stake as last seen in the ledger (set at start, lowered by slashes), so routing
    /// needs no database read.
    stake: Mutex<u128>,
}

/// Verification outcomes of one executor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Results served.
    pub served: u64,
    /// Results re-executed (or quorum-compared) and found right.
    pub passed: u64,
    /// Results found wrong (each one a dispute and a slash).
    pub failed: u64,
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
    /// An executor with a fresh record.
    pub fn new(key: Arc<PrivateKeySigner>, runtime: Arc<Runtime>, role: NodeRole) -> Self {
        Self { key, runtime, role, stats: Mutex::new(Stats::default()), stake: Mutex::new(0) }
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
        self.key.address()
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
}

/// Who runs and who checks.
pub struct Pool {
    workers: Vec<Arc<Executor>>,
    validators: Vec<Arc<Executor>>,
    /// Executors below this reputation get no work.
    pub min_reputation: f64,
    /// Executors with less stake get no work.
    pub min_stake: u128,
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
        Self { workers, validators, min_reputation, min_stake, rng: Mutex::new(rng) }
    }

    /// In good standing: reputation and stake at or above the thresholds.
    pub fn active(&self, e: &Executor) -> bool {
        e.stats().reputation() >= self.min_reputation && e.stake() >= self.min_stake
    }

    /// Every executor, workers first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Executor>> {
        self.workers.iter().chain(&self.validators)
    }

    /// Up to `k` distinct workers in good standing (reputation and stake), drawn with probability proportional to
    /// reputation.
    pub fn pick_workers(&self, k: usize) -> Vec<Arc<Executor>> {
        self.pick(&self.workers, k, None)
    }

    /// A validator in good standing that is not `exclude`.
    pub fn pick_validator(&self, exclude: Address) -> Option<Arc<Executor>> {
        self.pick(&self.validators, 1, Some(exclude)).into_iter().next()
    }

    /// True with probability `p` (the sampling decision).
    pub fn sample(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap_or_else(|e| e.into_inner()).gen_bool(p.min(1.0))
    }

    fn pick(&self, from: &[Arc<Executor>], k: usize, exclude: Option<Address>) -> Vec<Arc<Executor>> {
        let mut ok: Vec<(f64, Arc<Executor>)> = from
            .iter()
            .filter(|e| Some(e.address()) != exclude && self.active(e))
            .map(|e| (e.stats().reputation(), e.clone()))
            .collect();
        // Weighted by reputation, without replacement: reputable nodes get more work, but load
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
