//! [`EventStore`] over SQL.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use crate::{EventRecord, EventStore, Result, SqlStore};

/// Rows per INSERT statement (4 binds each, well under every backend's parameter limit).
const ROWS_PER_STATEMENT: usize = 200;

#[async_trait]
impl EventStore for SqlStore {
    async fn insert_events(&self, events: &[EventRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${}, ${})", i * 4 + 1, i * 4 + 2, i * 4 + 3, i * 4 + 4))
                .collect();
            let sql =
                format!("INSERT INTO usage_events (id, at, kind, data) VALUES {} ON CONFLICT (id) DO NOTHING", rows.join(", "));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q.bind(&e.id).bind(e.at_ms).bind(&e.kind).bind(&e.data);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn events_since(&self, since_ms: i64, limit: u32) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT id, at, kind, data FROM usage_events WHERE at >= $1 ORDER BY at, id LIMIT $2")
            .bind(since_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(EventRecord { id: r.try_get("id")?, at_ms: r.try_get("at")?, kind: r.try_get("kind")?, data: r.try_get("data")? }))
            .collect()
    }
}
