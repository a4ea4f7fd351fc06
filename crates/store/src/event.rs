use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Usage events (appended in batches, read by time window) and their roll-ups.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events (ids are unique; a repeated id is ignored).
    async fn insert_events(&self, events: &[EventRecord]) -> Result<()>;

    /// Events at or after `since_ms`, oldest first, at most `limit`.
    async fn events_since(&self, since_ms: i64, limit: u32) -> Result<Vec<EventRecord>>;

    /// Deletes up to `limit` events older than `before_ms`; returns how many went.
    async fn prune_events(&self, before_ms: i64, limit: u32) -> Result<u64>;

    /// Appends roll-up rows to `tier` (bucket width, seconds). Rows of one bucket and key may
    /// repeat: readers add them up.
    async fn add_tallies(&self, tier: u32, rows: &[TallyRecord]) -> Result<()>;

    /// The rows of `tier` with buckets in `[from_ms, to_ms)`.
    async fn tallies(&self, tier: u32, from_ms: i64, to_ms: i64) -> Result<Vec<TallyRecord>>;

    /// Replaces the rows of `tier` in `[from_ms, to_ms)` with `rows`, atomically (readers see
    /// the old rows or the new ones; two nodes doing it at once leave one copy).
    async fn replace_tallies(&self, tier: u32, from_ms: i64, to_ms: i64, rows: &[TallyRecord]) -> Result<()>;

    /// Deletes the rows of `tier` with buckets before `before_ms`; returns how many went.
    async fn prune_tallies(&self, tier: u32, before_ms: i64) -> Result<u64>;

    /// The oldest and newest bucket of `tier`, if it has rows.
    async fn tally_span(&self, tier: u32) -> Result<Option<(i64, i64)>>;
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

/// One stored roll-up row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyRecord {
    /// Bucket start, unix ms.
    pub bucket_ms: i64,
    /// What is counted (JSON).
    pub key: String,
    /// The counts (JSON).
    pub data: String,
}
