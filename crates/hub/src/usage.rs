//! Usage counters buffered in memory and flushed in batches, so an inference never waits for a
//! durable write just to be counted. Counts are analytics, not money: a crash loses at most one
//! flush interval of them; payments (a later issue) commit with their request instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tracing::warn;
use verinet_store::ModelStore;

/// How often pending counts are written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Pending {
    calls: u64,
    failures: u64,
    last_at_ms: i64,
}

/// Pending counts per `(name, version)`.
pub(crate) struct UsageBuffer {
    store: Arc<dyn ModelStore>,
    pending: Mutex<HashMap<(String, semver::Version), Pending>>,
    /// Serialises flushes so a reader that flushes sees every earlier count written.
    flushing: tokio::sync::Mutex<()>,
}

impl UsageBuffer {
    /// A buffer over `store`, flushed every [`FLUSH_EVERY`] by a task that ends with the buffer.
    pub(crate) fn start(store: Arc<dyn ModelStore>) -> Arc<Self> {
        let buffer = Arc::new(Self { store, pending: Mutex::default(), flushing: tokio::sync::Mutex::new(()) });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Self> = Arc::downgrade(&buffer);
            handle.spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(buffer) = weak.upgrade() else { break };
                    buffer.flush().await;
                }
            });
        }
        buffer
    }

    /// Counts one call.
    pub(crate) fn add(&self, name: &str, version: &semver::Version, ok: bool, at_ms: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let p = pending.entry((name.to_owned(), version.clone())).or_default();
        if ok {
            p.calls += 1;
        } else {
            p.failures += 1;
        }
        p.last_at_ms = p.last_at_ms.max(at_ms);
    }

    /// Writes everything pending. A batch that fails to write is put back for the next flush.
    pub(crate) async fn flush(&self) {
        let _one_at_a_time = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for ((name, version), p) in batch {
            if let Err(e) = self.store.record_calls(&name, &version, p.calls, p.failures, p.last_at_ms).await {
                warn!(error = %e, model = %format!("{name}@{version}"), "usage flush failed; will retry");
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let back = pending.entry((name, version)).or_default();
                back.calls += p.calls;
                back.failures += p.failures;
                back.last_at_ms = back.last_at_ms.max(p.last_at_ms);
            }
        }
    }
}
