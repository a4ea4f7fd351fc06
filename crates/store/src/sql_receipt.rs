//! [`ReceiptStore`] over SQL.

use async_trait::async_trait;
use sqlx::{Row, any::AnyRow};
use verinet_primitives::Address;

use crate::{
    BatchRecord, DisputeRecord, ReceiptRecord, ReceiptStore, Result, SqlStore, StoreError,
    sql::{address_text, parse_address},
};

fn receipt_from_row(r: &AnyRow) -> Result<ReceiptRecord> {
    Ok(ReceiptRecord {
        request_id: r.try_get("request_id")?,
        node: parse_address(&r.try_get::<String, _>("node")?)?,
        digest: r.try_get("digest")?,
        body: r.try_get("body")?,
        batch_id: r.try_get("batch_id")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

/// Receipts per INSERT (6 binds each) and ids per sealing UPDATE: under every backend's
/// parameter limit (SQLite 32766, PostgreSQL 65535).
const ROWS_PER_STATEMENT: usize = 200;
const IDS_PER_STATEMENT: usize = 500;

const RECEIPT_COLUMNS: &str = "request_id, node, digest, body, batch_id, created_at";

/// Stores `r` unsealed on `db` (`ledger_commit::INSERT_RECEIPT`).
pub(crate) async fn insert_receipt(db: &mut sqlx::AnyConnection, r: &ReceiptRecord) -> Result<()> {
    sqlx::query(crate::ledger_commit::INSERT_RECEIPT)
    .bind(&r.request_id)
    .bind(address_text(&r.node))
    .bind(&r.digest)
    .bind(&r.body)
    .bind(r.created_at_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// Inserts `receipts` in statements of many rows, sealed in `batch` or unsealed; a request id
/// stored before is left as it was. Returns how many were inserted.
async fn insert_many(
    store: &SqlStore,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    receipts: &[ReceiptRecord],
    batch: Option<&str>,
) -> Result<u64> {
    let mut inserted = 0;
    // Many rows per statement: one round trip to the database per chunk, not per receipt.
    for chunk in receipts.chunks(ROWS_PER_STATEMENT) {
        let rows = store.placeholders().rows(chunk.len(), 6);
        let sql = format!("INSERT INTO receipts ({RECEIPT_COLUMNS}) VALUES {rows} ON CONFLICT (request_id) DO NOTHING");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q.bind(&r.request_id).bind(address_text(&r.node)).bind(&r.digest).bind(&r.body).bind(batch).bind(r.created_at_ms);
        }
        inserted += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

#[async_trait]
impl ReceiptStore for SqlStore {
    async fn insert_receipts(&self, receipts: &[ReceiptRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_many(self, &mut tx, receipts, None).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn receipt(&self, request_id: &str) -> Result<Option<ReceiptRecord>> {
        // A capture answered and not written yet keeps its receipt in the ledger writer.
        let held = self.held().await;
        if let Some(r) = held.as_ref().and_then(|h| h.get().receipt(request_id)) {
            return Ok(Some(r));
        }
        let sql = format!("SELECT {RECEIPT_COLUMNS} FROM receipts WHERE request_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(request_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(receipt_from_row).transpose()
    }

    async fn unbatched(&self, node: Address, limit: u32) -> Result<Vec<ReceiptRecord>> {
        let sql = format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE node = $1 AND batch_id IS NULL \
             ORDER BY created_at, request_id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(address_text(&node))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn seal_batch(&self, batch: &BatchRecord, fresh: &[ReceiptRecord], stored_ids: &[String]) -> Result<()> {
        let size = i64::try_from(batch.size).map_err(|_| StoreError::Invalid("batch size out of range".into()))?;
        if batch.size != (fresh.len() + stored_ids.len()) as u64 {
            return Err(StoreError::Invalid(format!(
                "batch of {} names {} receipts",
                batch.size,
                fresh.len() + stored_ids.len()
            )));
        }
        if !stored_ids.is_empty() {
            // A capture answered before it is written (a SQLite file with a close delay) has
            // its receipt stored by the next group commit: write what waits first.
            self.flush_ledger().await?;
        }
        // Dropping the transaction on an error rolls it back: nothing of this batch is written.
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO receipt_batches (id, node, root, size, signature, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&batch.id)
        .bind(address_text(&batch.node))
        .bind(&batch.root)
        .bind(size)
        .bind(&batch.signature)
        .bind(batch.created_at_ms)
        .execute(&mut *tx)
        .await?;
        let inserted = insert_many(self, &mut tx, fresh, Some(&batch.id)).await?;
        if inserted != fresh.len() as u64 {
            return Err(StoreError::Invalid(format!(
                "{} of the batch's new receipts are stored already or named twice",
                fresh.len() as u64 - inserted
            )));
        }
        for chunk in stored_ids.chunks(IDS_PER_STATEMENT) {
            let mut marks = self.placeholders();
            let (batch_id, ids) = (marks.list(1), marks.list(chunk.len()));
            let sql = format!("UPDATE receipts SET batch_id = {batch_id} WHERE batch_id IS NULL AND request_id IN ({ids})");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&batch.id);
            for id in chunk {
                q = q.bind(id);
            }
            let done = q.execute(&mut *tx).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(StoreError::Invalid(format!(
                    "{} of the batch's stored receipts are unknown, already sealed or named twice",
                    chunk.len() as u64 - done.rows_affected()
                )));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>> {
        let row = sqlx::query("SELECT id, node, root, size, signature, created_at FROM receipt_batches WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let size: i64 = r.try_get("size")?;
            Ok(BatchRecord {
                id: r.try_get("id")?,
                node: parse_address(&r.try_get::<String, _>("node")?)?,
                root: r.try_get("root")?,
                size: u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("batch size {size}")))?,
                signature: r.try_get("signature")?,
                created_at_ms: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn batch_digests(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT digest FROM receipts WHERE batch_id = $1 UNION ALL SELECT digest FROM receipt_leaves WHERE batch_id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("digest")?)).collect()
    }

    async fn sealed_leaf(&self, request_id: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT batch_id, digest FROM receipts WHERE request_id = $1 AND batch_id IS NOT NULL \
             UNION ALL SELECT batch_id, digest FROM receipt_leaves WHERE request_id = $1",
        )
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("batch_id")?, r.try_get("digest")?))).transpose()
    }

    async fn prune_receipts(&self, before_ms: i64, limit: u32) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        // The creation time of the limit-th oldest receipt due bounds this round: everything
        // up to it, ties included, and nothing past `before_ms`.
        let nth = sqlx::query(
            "SELECT created_at FROM receipts WHERE created_at < $1 AND batch_id IS NOT NULL \
             ORDER BY created_at LIMIT 1 OFFSET $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit) - 1)
        .fetch_optional(&self.pool)
        .await?;
        let upto = match nth {
            Some(r) => r.try_get::<i64, _>("created_at")?,
            None => before_ms - 1,
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO receipt_leaves (request_id, batch_id, digest) \
             SELECT request_id, batch_id, digest FROM receipts WHERE created_at <= $1 AND batch_id IS NOT NULL \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(upto)
        .execute(&mut *tx)
        .await?;
        let pruned = sqlx::query("DELETE FROM receipts WHERE created_at <= $1 AND batch_id IS NOT NULL")
            .bind(upto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }

    async fn insert_dispute(&self, d: &DisputeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO disputes (request_id, worker, validator, mode, worker_output, validator_output, detail, \
             slashed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (request_id, worker) DO NOTHING",
        )
        .bind(&d.request_id)
        .bind(address_text(&d.worker))
        .bind(address_text(&d.validator))
        .bind(&d.mode)
        .bind(&d.worker_output)
        .bind(&d.validator_output)
        .bind(&d.detail)
        .bind(d.slashed.to_string())
        .bind(d.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn request_disputes(&self, request_id: &str) -> Result<Vec<DisputeRecord>> {
        let sql = format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE request_id = $1 ORDER BY worker");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(request_id).fetch_all(&self.pool).await?;
        rows.iter().map(dispute_from_row).collect()
    }

    async fn disputes(&self, worker: Option<Address>, limit: u32) -> Result<Vec<DisputeRecord>> {
        let cols = DISPUTE_COLUMNS;
        let rows = match worker {
            Some(w) => {
                let sql = format!("SELECT {cols} FROM disputes WHERE worker = $1 ORDER BY created_at DESC LIMIT $2");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(address_text(&w)).bind(i64::from(limit)).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("SELECT {cols} FROM disputes ORDER BY created_at DESC LIMIT $1");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit)).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(dispute_from_row).collect()
    }
}

const DISPUTE_COLUMNS: &str =
    "request_id, worker, validator, mode, worker_output, validator_output, detail, slashed, created_at";

fn dispute_from_row(r: &AnyRow) -> Result<DisputeRecord> {
    let slashed: String = r.try_get("slashed")?;
    Ok(DisputeRecord {
        request_id: r.try_get("request_id")?,
        worker: parse_address(&r.try_get::<String, _>("worker")?)?,
        validator: parse_address(&r.try_get::<String, _>("validator")?)?,
        mode: r.try_get("mode")?,
        worker_output: r.try_get("worker_output")?,
        validator_output: r.try_get("validator_output")?,
        detail: r.try_get("detail")?,
        slashed: slashed.parse().map_err(|e| StoreError::Corrupt(format!("slashed {slashed:?}: {e}")))?,
        created_at_ms: r.try_get("created_at")?,
    })
}
