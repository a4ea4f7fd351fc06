//! The plan cache: compiled models by id, least recently used first out, weighed in bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use verinet_primitives::ModelId;

use crate::Plan;

/// What the plan cache holds and has done since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Plans held.
    pub entries: usize,
    /// Sum of their [`Plan::memory_bytes`].
    pub bytes: usize,
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that had to load and compile (or wait for a compile in progress).
    pub misses: u64,
    /// Plans dropped to stay within the budget.
    pub evictions: u64,
}

/// A compiled plan as the cache keeps it, with what its runs have cost: a moving average of the
/// compute time per input element, from which the runtime predicts the next run's.
pub(crate) struct CachedPlan {
    pub(crate) plan: Arc<dyn Plan>,
    /// f64 bits of nanoseconds per input element; 0 until a run has been timed.
    ns_per_element: AtomicU64,
}

impl CachedPlan {
    pub(crate) fn new(plan: Arc<dyn Plan>) -> Self {
        Self { plan, ns_per_element: AtomicU64::new(0) }
    }

    /// The compute time a run over `elements` input elements is expected to take; `None`
    /// before the first run has been timed.
    pub(crate) fn predicted(&self, elements: usize) -> Option<Duration> {
        let per = f64::from_bits(self.ns_per_element.load(Ordering::Relaxed));
        (per > 0.0).then(|| Duration::from_nanos((per * elements.max(1) as f64) as u64))
    }

    /// Folds a timed run into the average (a quarter weight for the newest; racing updates
    /// may lose one, which only delays the average).
    pub(crate) fn timed(&self, elements: usize, compute: Duration) {
        let now = (compute.as_nanos() as f64 / elements.max(1) as f64).max(f64::MIN_POSITIVE);
        let old = f64::from_bits(self.ns_per_element.load(Ordering::Relaxed));
        let new = if old > 0.0 { 0.75 * old + 0.25 * now } else { now };
        self.ns_per_element.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// A memory-weighted LRU. Few entries (one per hot model), so plain maps are enough: `order`
/// maps each entry's last use to its id, the first key is the next to go.
pub(crate) struct PlanCache {
    budget: usize,
    entries: HashMap<ModelId, Entry>,
    order: BTreeMap<u64, ModelId>,
    clock: u64,
    stats: CacheStats,
}

struct Entry {
    plan: Arc<CachedPlan>,
    bytes: usize,
    last_use: u64,
}

impl PlanCache {
    /// An empty cache holding at most `budget` bytes of plans.
    pub(crate) fn new(budget: usize) -> Self {
        Self { budget, entries: HashMap::new(), order: BTreeMap::new(), clock: 0, stats: CacheStats::default() }
    }

    /// The plan for `id`, now the most recently used; counts a hit or a miss.
    pub(crate) fn get(&mut self, id: &ModelId) -> Option<Arc<CachedPlan>> {
        self.clock += 1;
        let Some(entry) = self.entries.get_mut(id) else {
            self.stats.misses += 1;
            return None;
        };
        self.order.remove(&entry.last_use);
        entry.last_use = self.clock;
        self.order.insert(self.clock, *id);
        self.stats.hits += 1;
        let plan = entry.plan.clone();
        // Plans may grow as they are used (tract keeps shape-specialised plans): re-weigh.
        let bytes = plan.plan.memory_bytes();
        self.stats.bytes = self.stats.bytes - entry.bytes + bytes;
        entry.bytes = bytes;
        self.evict_over(self.budget, Some(id));
        Some(plan)
    }

    /// Keeps `plan` under `id`, evicting the least recently used plans to make room. A plan larger
    /// than the whole budget is not kept (it serves the request that compiled it); returns whether
    /// it was kept.
    pub(crate) fn insert(&mut self, id: ModelId, plan: Arc<CachedPlan>) -> bool {
        let bytes = plan.plan.memory_bytes();
        if bytes > self.budget {
            tracing::warn!(model = %id, bytes, budget = self.budget, "plan larger than the whole cache; not kept");
            return false;
        }
        self.remove(&id);
        self.evict_over(self.budget - bytes, None);
        self.clock += 1;
        self.order.insert(self.clock, id);
        self.entries.insert(id, Entry { plan, bytes, last_use: self.clock });
        self.stats.bytes += bytes;
        true
    }

    /// Evicts least recently used plans other than `keep` while the cache weighs over `limit`.
    fn evict_over(&mut self, limit: usize, keep: Option<&ModelId>) {
        let mut spared = None;
        while self.stats.bytes > limit {
            let Some((tick, victim)) = self.order.pop_first() else { break };
            if Some(&victim) == keep {
                spared = Some((tick, victim));
                continue;
            }
            if let Some(old) = self.entries.remove(&victim) {
                self.stats.bytes -= old.bytes;
                self.stats.evictions += 1;
                tracing::debug!(model = %victim, bytes = old.bytes, "plan evicted");
            }
        }
        self.order.extend(spared);
    }

    fn remove(&mut self, id: &ModelId) {
        if let Some(old) = self.entries.remove(id) {
            self.order.remove(&old.last_use);
            self.stats.bytes -= old.bytes;
        }
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats { entries: self.entries.len(), ..self.stats }
    }
}

#[cfg(test)]
mod tests {
    use verinet_primitives::{IoSignature, TensorMap};

    use super::*;

    /// Only its size matters to the cache; it may grow.
    struct Sized(std::sync::atomic::AtomicUsize, IoSignature);

    impl Plan for Sized {
        fn signature(&self) -> &IoSignature {
            &self.1
        }
        fn run(&self, _: &TensorMap) -> crate::Result<TensorMap> {
            Ok(TensorMap::new())
        }
        fn memory_bytes(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    fn plan(bytes: usize) -> Arc<CachedPlan> {
        Arc::new(CachedPlan::new(Arc::new(Sized(bytes.into(), IoSignature::default()))))
    }

    fn id(n: u8) -> ModelId {
        ModelId::from_digest([n; 32])
    }

    #[test]
    fn evicts_least_recently_used_until_it_fits() {
        let mut c = PlanCache::new(100);
        assert!(c.insert(id(1), plan(40)));
        assert!(c.insert(id(2), plan(40)));
        assert!(c.get(&id(1)).is_some()); // 2 is now the oldest
        assert!(c.insert(id(3), plan(40)));
        assert!(c.get(&id(2)).is_none());
        assert!(c.get(&id(1)).is_some() && c.get(&id(3)).is_some());
        assert_eq!(c.stats(), CacheStats { entries: 2, bytes: 80, hits: 3, misses: 1, evictions: 1 });

        assert!(c.insert(id(4), plan(100)), "a plan of exactly the budget fits alone");
        assert_eq!((c.stats().entries, c.stats().bytes, c.stats().evictions), (1, 100, 3));
        assert!(!c.insert(id(5), plan(101)), "a plan over the budget is not kept");
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn reinserting_replaces_without_double_counting() {
        let mut c = PlanCache::new(100);
        c.insert(id(1), plan(30));
        c.insert(id(1), plan(50));
        assert_eq!((c.stats().entries, c.stats().bytes, c.stats().evictions), (1, 50, 0));
    }

    #[test]
    fn a_plan_that_grows_is_reweighed_when_used() {
        let mut c = PlanCache::new(100);
        let growing = Arc::new(Sized(30.into(), IoSignature::default()));
        c.insert(id(1), plan(40));
        c.insert(id(2), Arc::new(CachedPlan::new(growing.clone())));
        growing.0.store(70, std::sync::atomic::Ordering::Relaxed);
        assert!(c.get(&id(2)).is_some());
        assert_eq!((c.stats().entries, c.stats().bytes, c.stats().evictions), (1, 70, 1), "the other plan made room");
        assert!(c.get(&id(1)).is_none());
    }

    #[test]
    fn a_run_is_predicted_from_the_average_cost_per_element() {
        let p = plan(1);
        assert_eq!(p.predicted(64), None, "nothing timed yet");
        p.timed(64, Duration::from_micros(64));
        assert_eq!(p.predicted(64), Some(Duration::from_micros(64)));
        assert_eq!(p.predicted(6400), Some(Duration::from_micros(6400)), "a bigger batch costs more");
        p.timed(64, Duration::from_micros(320));
        assert_eq!(p.predicted(64), Some(Duration::from_micros(128)), "a quarter of the newest run");
        p.timed(0, Duration::ZERO);
        assert_eq!(p.predicted(64), Some(Duration::from_micros(96)), "an empty run counts as a free one");
    }
}
