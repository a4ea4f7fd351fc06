use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Usage events: appended in batches, read by time window.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events (ids are unique; a repeated id is ignored).
    async fn insert_events(&self, events: &[EventRecord]) -> Result<()>;

    /// Events at or after `since_ms`, oldest first, at most `limit`.
    async fn events_since(&self, since_ms: i64, limit: u32) -> Result<Vec<EventRecord>>;
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique id.
    pub id: String,
    /// Unix ms.
    pub at_ms: i64,
    /// `request`, `publish`, `node_join`, `dispute`, ...
    pub kind: String,
    /// Fields, JSON.
    pub data: String,
}
