//! [`EventStore`] over SQL.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use crate::{EventRecord, EventStore, Result, SqlStore, TallyRecord};

/// Rows per INSERT statement (4 binds each, well under every backend's parameter limit).
const ROWS_PER_STATEMENT: usize = 200;

#[async_trait]
impl EventStore for SqlStore {
    async fn insert_events(&self, events: &[EventRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let rows = self.placeholders().rows(chunk.len(), 4);
            let sql = format!("INSERT INTO usage_events (id, at, kind, data) VALUES {rows} ON CONFLICT (id) DO NOTHING");
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

    async fn prune_events(&self, before_ms: i64, limit: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM usage_events WHERE id IN (SELECT id FROM usage_events WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn add_tallies(&self, tier: u32, rows: &[TallyRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_tallies(self, &mut tx, tier, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tallies(&self, tier: u32, from_ms: i64, to_ms: i64) -> Result<Vec<TallyRecord>> {
        let rows = sqlx::query("SELECT bucket, key, data FROM usage_tallies WHERE tier = $1 AND bucket >= $2 AND bucket < $3")
            .bind(i64::from(tier))
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(TallyRecord { bucket_ms: r.try_get("bucket")?, key: r.try_get("key")?, data: r.try_get("data")? }))
            .collect()
    }

    async fn replace_tallies(&self, tier: u32, from_ms: i64, to_ms: i64, rows: &[TallyRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if self.backend == "postgres" {
            // Gateways sharing the database compact the same minutes: one at a time, or both
            // deletes would run before both inserts and leave two copies.
            sqlx::query("SELECT pg_advisory_xact_lock(7305047411)").execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM usage_tallies WHERE tier = $1 AND bucket >= $2 AND bucket < $3")
            .bind(i64::from(tier))
            .bind(from_ms)
            .bind(to_ms)
            .execute(&mut *tx)
            .await?;
        insert_tallies(self, &mut tx, tier, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_tallies(&self, tier: u32, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM usage_tallies WHERE tier = $1 AND bucket < $2")
            .bind(i64::from(tier))
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn tally_span(&self, tier: u32) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query("SELECT MIN(bucket) AS lo, MAX(bucket) AS hi FROM usage_tallies WHERE tier = $1")
            .bind(i64::from(tier))
            .fetch_one(&self.pool)
            .await?;
        let (lo, hi): (Option<i64>, Option<i64>) = (row.try_get("lo")?, row.try_get("hi")?);
        Ok(lo.zip(hi))
    }
}

async fn insert_tallies(store: &SqlStore, tx: &mut sqlx::Transaction<'_, sqlx::Any>, tier: u32, rows: &[TallyRecord]) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values = store.placeholders().rows(chunk.len(), 4);
        let sql = format!("INSERT INTO usage_tallies (tier, bucket, key, data) VALUES {values}");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for r in chunk {
            q = q.bind(i64::from(tier)).bind(r.bucket_ms).bind(&r.key).bind(&r.data);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
