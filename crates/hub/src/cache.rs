//! Resolved models kept in memory, so a hot call resolves its model without an SQL read.
//!
//! A version's record never changes once published (only its usage counters do, and the
//! request path does not read them), so the one thing that can make an entry wrong is a new
//! publication: `name` then means another version. Every publication empties the cache: this
//! gateway's own at once, another gateway's when the store's [`ModelStore::watch`] reports it.
//! While that watch is down the cache is not used at all.
//!
//! A fill races with an invalidation (a read started before a publication, finished after
//! it): each fill carries the generation it read under and is dropped if an invalidation came
//! in between, so a stale record is never kept.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use tracing::{info, warn};
use verinet_primitives::ModelRef;
use verinet_store::{ModelStore, ModelVersion, ModelWatch};

/// More distinct references than this and the cache starts over (only found models are kept,
/// so this bounds memory against callers that name many models, not against typos).
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
struct Inner {
    entries: HashMap<ModelRef, Arc<ModelVersion>>,
    /// Bumped by every invalidation.
    generation: u64,
    /// False while changes may go unreported (the store's watch is down).
    live: bool,
}

/// Resolved references, emptied on every publication.
pub(crate) struct ModelCache {
    inner: RwLock<Inner>,
}

impl ModelCache {
    /// A cache over `store`: live at once when no other process writes the store, else from
    /// the watch's first `Listening`, followed by a task that ends with the cache.
    pub(crate) fn start(store: &dyn ModelStore) -> Arc<Self> {
        let watch = store.watch();
        let cache = Arc::new(Self { inner: RwLock::new(Inner { live: watch.is_none(), ..Inner::default() }) });
        if let Some(mut rx) = watch {
            let weak: Weak<Self> = Arc::downgrade(&cache);
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let Some(cache) = weak.upgrade() else { return };
                    match event {
                        ModelWatch::Listening => {
                            info!("model cache on: other gateways' publications are heard");
                            cache.invalidate(Some(true));
                        }
                        ModelWatch::Published { .. } => cache.invalidate(None),
                        ModelWatch::Lost => {
                            warn!("model cache off until other gateways' publications are heard again");
                            cache.invalidate(Some(false));
                        }
                    }
                }
                if let Some(cache) = weak.upgrade() {
                    cache.invalidate(Some(false));
                }
            });
        }
        cache
    }

    /// The cached resolution of `r`, if the cache is live and holds it.
    pub(crate) fn get(&self, r: &ModelRef) -> Option<Arc<ModelVersion>> {
        let inner = self.read();
        if inner.live { inner.entries.get(r).cloned() } else { None }
    }

    /// The generation to fill under, taken before reading the store; `None` when not live.
    pub(crate) fn generation(&self) -> Option<u64> {
        let inner = self.read();
        inner.live.then_some(inner.generation)
    }

    /// Keeps `v` as `r`'s resolution, unless an invalidation came since `generation` was taken.
    pub(crate) fn fill(&self, r: &ModelRef, generation: u64, v: Arc<ModelVersion>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if !inner.live || inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(r.clone(), v);
    }

    /// Empties the cache and starts a new generation; `live` sets whether it may be used.
    pub(crate) fn invalidate(&self, live: Option<bool>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.entries.clear();
        inner.generation += 1;
        if let Some(live) = live {
            inner.live = live;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: &str) -> Arc<ModelVersion> {
        let new = verinet_store::NewModelVersion {
            name: "m".into(),
            version: v.parse().unwrap(),
            id: verinet_primitives::ModelId::of_bytes(v.as_bytes()),
            size: 1,
            owner: verinet_primitives::Address::ZERO,
            description: String::new(),
            tags: vec![],
            license: String::new(),
            price: 0,
            signature: verinet_primitives::IoSignature::default(),
            publish_signature: String::new(),
            policy: None,
            token_prices: None,
            published_at_ms: 0,
        };
        Arc::new(ModelVersion::new(&new))
    }

    fn live() -> ModelCache {
        ModelCache { inner: RwLock::new(Inner { live: true, ..Inner::default() }) }
    }

    #[test]
    fn a_fill_read_before_an_invalidation_is_dropped() {
        let cache = live();
        let r = ModelRef::Latest("m".into());
        let g = cache.generation().unwrap();
        cache.invalidate(None); // a publication lands while the store is being read
        cache.fill(&r, g, version("1.0.0"));
        assert!(cache.get(&r).is_none(), "a resolution read before the publication must not be kept");
        let g = cache.generation().unwrap();
        cache.fill(&r, g, version("1.1.0"));
        assert_eq!(cache.get(&r).unwrap().version.to_string(), "1.1.0");
    }

    #[test]
    fn a_cache_that_cannot_hear_publications_is_not_used() {
        let cache = live();
        let r = ModelRef::Latest("m".into());
        cache.fill(&r, cache.generation().unwrap(), version("1.0.0"));
        cache.invalidate(Some(false));
        assert!(cache.get(&r).is_none() && cache.generation().is_none());
        cache.fill(&r, 1, version("1.0.0"));
        cache.invalidate(Some(true));
        assert!(cache.get(&r).is_none(), "nothing from before the watch came back survives");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = live();
        let v = version("1.0.0");
        for i in 0..MAX_ENTRIES + 10 {
            cache.fill(&ModelRef::Latest(format!("m{i}")), cache.generation().unwrap(), v.clone());
        }
        assert!(cache.read().entries.len() <= MAX_ENTRIES);
    }
}
