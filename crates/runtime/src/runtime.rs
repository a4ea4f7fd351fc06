//! The runtime: a backend behind a plan cache, a bounded queue, a concurrency cap and a timeout.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::{Instrument, debug};
use verinet_primitives::{IoSignature, ModelId, TensorMap};

use crate::cache::{CacheStats, CachedPlan, PlanCache};
use crate::{InferenceBackend, Result, RuntimeError, graph};

/// Limits of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Runs executing at once, each on its own blocking thread (at least 1). Default: the number
    /// of CPUs.
    pub max_concurrency: usize,
    /// Requests that may wait for a free slot; one more is refused with
    /// [`RuntimeError::Overloaded`]. Default: 256.
    pub max_queue: usize,
    /// Per request, waiting for a slot plus computing; loading and compiling a model on a cache
    /// miss is not counted. Default: 30 s.
    pub timeout: Duration,
    /// Budget of the plan cache in bytes, weighed by [`crate::Plan::memory_bytes`]. Default: 2 GiB.
    pub cache_bytes: usize,
    /// Most elements a request's inputs may hold in total. Default: 16 Mi.
    pub max_input_elements: usize,
    /// A compiled plan may hold this many bytes (constants included) per byte of the model,
    /// plus [`RuntimeConfig::plan_slack_bytes`]; a model past
    /// it is refused at compile ([`RuntimeError::InvalidModel`]), so at publish. Default: 16
    /// (tract keeps the model bytes beside int8 weights widened to float32: 5x; an onnxruntime
    /// session of MiniLM int8, 22 MB, adds 87 MiB to the heap: 4x). A bomb is 10^6x.
    pub max_plan_expansion: usize,
    /// See [`RuntimeConfig::max_plan_expansion`]. Default: 64 MiB.
    pub plan_slack_bytes: usize,
    /// A run predicted to compute for less than this (from the model's earlier runs, scaled by
    /// input size) runs on the calling async thread instead of being handed to a blocking
    /// thread: for a model of tens of microseconds the hand-off and the wake-up back cost more
    /// than the model. Still within the concurrency cap. Zero hands every run off. Default:
    /// 100 µs.
    pub inline_below: Duration,
}

impl RuntimeConfig {
    /// The most memory a plan compiled from `model_bytes` bytes may hold.
    pub fn plan_allowance(&self, model_bytes: usize) -> usize {
        model_bytes.saturating_mul(self.max_plan_expansion).saturating_add(self.plan_slack_bytes)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_queue: 256,
            timeout: Duration::from_secs(30),
            cache_bytes: 2 << 30,
            max_input_elements: 16 << 20,
            max_plan_expansion: 16,
            plan_slack_bytes: 64 << 20,
            inline_below: Duration::from_micros(100),
        }
    }
}

/// What one run returns.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Outputs keyed by graph output name.
    pub outputs: TensorMap,
    /// Where the time went.
    pub timings: Timings,
}

/// Where one run's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Getting the plan: zero on a cache hit, else fetching the bytes and compiling them (or
    /// waiting for another request's compile of the same model).
    pub load: Duration,
    /// Waiting for a slot and for a blocking thread to pick the run up.
    pub queue: Duration,
    /// Running the model.
    pub compute: Duration,
}

/// Runs models by id on one backend, within the limits of a [`RuntimeConfig`].
///
/// Compiled plans are cached by [`ModelId`]; requests for a model not in the cache fetch its bytes
/// through the loader they pass, and concurrent requests for the same model share one fetch and
/// one compile. Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Arc<dyn InferenceBackend>,
    config: RuntimeConfig,
    /// One permit per concurrent run; a run's blocking task holds its permit until it ends.
    slots: Arc<Semaphore>,
    /// Requests waiting for a permit.
    queued: AtomicUsize,
    state: Mutex<State>,
}

struct State {
    cache: PlanCache,
    /// Models being fetched and compiled; waiters share the cell. The first caller to see the
    /// plan moves it into the cache.
    compiling: HashMap<ModelId, Arc<OnceCell<Arc<CachedPlan>>>>,
}

impl Runtime {
    /// A runtime over `backend`. `max_concurrency` is raised to at least 1.
    pub fn new(backend: Arc<dyn InferenceBackend>, mut config: RuntimeConfig) -> Self {
        config.max_concurrency = config.max_concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let state = State { cache: PlanCache::new(config.cache_bytes), compiling: HashMap::new() };
        let shared = Shared {
            backend,
            slots: Arc::new(Semaphore::new(config.max_concurrency)),
            config,
            queued: AtomicUsize::new(0),
            state: Mutex::new(state),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The backend's name: `"tract"` or `"onnxruntime"`.
    pub fn backend_name(&self) -> &'static str {
        self.shared.backend.name()
    }

    /// The limits in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Compiles `onnx` (any byte container: `Vec<u8>`, `bytes::Bytes`, `Arc<[u8]>`) on the
    /// blocking pool and returns its signature: the publish-time validation. The plan is cached
    /// under `id`, which must be the [`ModelId`] of these bytes; if it is cached already, its
    /// signature is returned without compiling again.
    pub async fn inspect<B>(&self, id: ModelId, onnx: B) -> Result<IoSignature>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let span = tracing::info_span!("runtime.inspect", model = %id);
        let plan = self.plan(id, || async move { Ok(onnx) }).instrument(span).await?;
        Ok(plan.plan.signature().clone())
    }

    /// Runs `inputs` on model `id`.
    ///
    /// If the plan is not cached, `load` is awaited for the model bytes (say from the blob store;
    /// any `AsRef<[u8]>` container) and they are compiled; concurrent callers for the same id share
    /// one load and one compile. Inputs are then checked against the signature
    /// ([`RuntimeError::Input`]) before queueing. The run waits for one of `max_concurrency`
    /// slots (at most `max_queue` requests wait, more get [`RuntimeError::Overloaded`]) and
    /// executes on tokio's blocking pool. `timeout` covers the wait and the run
    /// ([`RuntimeError::Timeout`]); a run that times out keeps its slot until it really finishes,
    /// so the concurrency limit counts busy threads, not waiting callers.
    pub async fn run<F, Fut, B>(&self, id: ModelId, load: F, inputs: TensorMap) -> Result<RunOutput>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<B>>,
        B: AsRef<[u8]> + Send + 'static,
    {
        let span = tracing::info_span!("runtime.run", model = %id, backend = self.backend_name());
        async move {
            let started = Instant::now();
            let plan = self.plan(id, load).await?;
            let load = started.elapsed();
            plan.plan.signature().check_inputs(&inputs, self.shared.config.max_input_elements)?;
            let (outputs, queue, compute) = self.execute(plan, inputs).await?;
            debug!(?load, ?queue, ?compute, "run done");
            Ok(RunOutput { outputs, timings: Timings { load, queue, compute } })
        }
        .instrument(span)
        .await
    }

    /// Plan cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.state().cache.stats()
    }

    /// Runs executing now (including timed-out runs still finishing).
    pub fn running(&self) -> usize {
        self.shared.config.max_concurrency - self.shared.slots.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The cached plan for `id`, or one compiled from `load()`'s bytes, shared with concurrent
    /// callers for the same id.
    async fn plan<F, Fut, B>(&self, id: ModelId, load: F) -> Result<Arc<CachedPlan>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<B>>,
        B: AsRef<[u8]> + Send + 'static,
    {
        let cell = {
            let mut state = self.state();
            if let Some(plan) = state.cache.get(&id) {
                return Ok(plan);
            }
            state.compiling.entry(id).or_default().clone()
        };
        // If the caller that started the compile fails or is dropped, a waiter tries its own loader.
        let result = cell.get_or_try_init(|| async move { self.compile(load().await?).await }).await.cloned();
        let mut state = self.state();
        let ours = state.compiling.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell));
        match &result {
            Ok(plan) if ours => {
                state.compiling.remove(&id);
                state.cache.insert(id, plan.clone());
            }
            // Nobody else waits on this cell (clones are only made under the lock): forget it.
            Err(_) if ours && Arc::strong_count(&cell) == 2 => {
                state.compiling.remove(&id);
            }
            _ => {}
        }
        result
    }

    async fn compile<B>(&self, onnx: B) -> Result<Arc<CachedPlan>>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let backend = self.shared.backend.clone();
        let started = Instant::now();
        let size = onnx.as_ref().len();
        let plan = tokio::task::spawn_blocking(move || {
            graph::guard(|| backend.prepare(onnx.as_ref()), RuntimeError::InvalidModel)
        })
        .await
        .map_err(|e| RuntimeError::Execution(format!("compile task failed: {e}")))??;
        let (memory, allowed) = (plan.memory_bytes(), self.shared.config.plan_allowance(size));
        debug!(elapsed = ?started.elapsed(), memory, "plan compiled");
        // A graph that expands when compiled (ConstantOfShape of a constant shape, say) is a
        // memory bomb: refused, and the plan dropped here rather than kept in the cache.
        if memory > allowed {
            return Err(RuntimeError::InvalidModel(format!(
                "compiled, this {size}-byte model holds {} MiB (constants included); this node allows {} MiB for it \
                 ({}x its size + {} MiB)",
                memory >> 20,
                allowed >> 20,
                self.shared.config.max_plan_expansion,
                self.shared.config.plan_slack_bytes >> 20,
            )));
        }
        Ok(Arc::new(CachedPlan::new(plan)))
    }

    /// Queues for a slot and runs, on the calling thread if the run is predicted to be short,
    /// else on the blocking pool; returns outputs, queue and compute time.
    async fn execute(&self, plan: Arc<CachedPlan>, inputs: TensorMap) -> Result<(TensorMap, Duration, Duration)> {
        let timeout = self.shared.config.timeout;
        let entered = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = self.acquire(deadline).await?;
        if tokio::time::Instant::now() >= deadline {
            return Err(RuntimeError::Timeout(timeout));
        }
        let elements: usize = inputs.values().map(|t| t.len()).sum();
        let inline = plan.predicted(elements).is_some_and(|d| d < self.shared.config.inline_below);
        let run = move || {
            // Dropped when the run really ends, even if the caller has given up on it.
            let _permit: OwnedSemaphorePermit = permit;
            let started = Instant::now();
            let outputs = graph::guard(|| plan.plan.run(&inputs), RuntimeError::Execution);
            let compute = started.elapsed();
            plan.timed(elements, compute);
            (outputs, started.duration_since(entered), compute)
        };
        if inline {
            let (outputs, queue, compute) = run();
            return Ok((outputs?, queue, compute));
        }
        let task = tokio::task::spawn_blocking(run);
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(RuntimeError::Timeout(timeout)),
            Ok(Err(e)) => Err(RuntimeError::Execution(format!("inference task failed: {e}"))),
            Ok(Ok((outputs, queue, compute))) => Ok((outputs?, queue, compute)),
        }
    }

    async fn acquire(&self, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit> {
        let slots = &self.shared.slots;
        match slots.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::NoPermits) => {}
            Err(TryAcquireError::Closed) => return Err(closed()),
        }
        let _waiting = QueueSlot::take(&self.shared.queued, self.shared.config.max_queue)?;
        match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(RuntimeError::Timeout(self.shared.config.timeout)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock guards plain bookkeeping, never held across a panic-prone call: a poisoned
        // lock still holds consistent data.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("backend", &self.backend_name())
            .field("config", &self.shared.config)
            .field("cache", &self.cache_stats())
            .finish()
    }
}

fn closed() -> RuntimeError {
    RuntimeError::Execution("the runtime's slots are closed".into())
}

/// One place in the wait queue, given back on drop (also when the waiting request is cancelled).
struct QueueSlot<'a>(&'a AtomicUsize);

impl<'a> QueueSlot<'a> {
    fn take(queued: &'a AtomicUsize, max_queue: usize) -> Result<Self> {
        let ahead = queued.fetch_add(1, Ordering::SeqCst);
        if ahead >= max_queue {
            queued.fetch_sub(1, Ordering::SeqCst);
            return Err(RuntimeError::Overloaded { queued: ahead });
        }
        Ok(Self(queued))
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
