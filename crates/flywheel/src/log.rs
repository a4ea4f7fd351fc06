use std::sync::Arc;
use std::time::Duration;

use tracing::warn;
use verinet_store::{EventRecord, EventStore, PendingWrites, StoreError};

use crate::Event;

/// Events buffered in memory and written in batches, so the request path never waits on the
/// database (a crash loses at most one flush interval of analytics, never money).
pub struct EventLog {
    store: Arc<dyn EventStore>,
    pending: PendingWrites<EventRecord>,
    /// Flush at least this often.
    pub interval: Duration,
    /// False: events are dropped (only for measuring what they cost; see BENCHMARKS.md).
    enabled: bool,
}


impl EventLog {
    /// A log over `store`.
    pub fn new(store: Arc<dyn EventStore>, interval: Duration) -> Self {
        Self { store, pending: PendingWrites::default(), interval, enabled: true }
    }

    /// A log that drops every event (the "events off" side of the benchmark).
    pub fn disabled(store: Arc<dyn EventStore>) -> Self {
        Self { enabled: false, ..Self::new(store, Duration::from_secs(3600)) }
    }

    /// The store below.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Queues an event now (never waits on the database).
    pub fn emit(&self, e: &Event) {
        if !self.enabled {
            return;
        }
        let record = EventRecord {
            // Time-ordered: the table's key index grows at one end as events are flushed.
            id: verinet_primitives::time_ordered_id(12),
            at_ms: verinet_primitives::unix_ms(),
            kind: e.kind().to_owned(),
            data: serde_json::to_string(e).unwrap_or_default(),
        };
        self.pending.push(record);
    }

    /// Writes what is buffered.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let store = &self.store;
        self.pending.flush(|batch| async move { store.insert_events(&batch).await.map_err(|e| (batch, e)) }).await
    }

    /// Flushes every `interval` until `stop` resolves, then once more.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if let Err(e) = self.flush().await {
                warn!(error = %e, "writing usage events failed; retrying");
            }
        }
        if let Err(e) = self.flush().await {
            warn!(error = %e, "writing the last usage events failed");
        }
    }

    /// Events of the last `window` (flushes first), decoded; unreadable rows are skipped.
    pub async fn window(&self, window: Duration) -> Result<Vec<(i64, Event)>, StoreError> {
        self.flush().await?;
        let since = verinet_primitives::unix_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let rows = self.store.events_since(since, 1_000_000).await?;
        Ok(rows.into_iter().filter_map(|r| serde_json::from_str(&r.data).ok().map(|e| (r.at_ms, e))).collect())
    }
}
