//! The SQLite ledger writer: one thread, one rusqlite connection, group commit.
//!
//! Every ledger transaction on a SQLite file comes here. The thread takes whatever is waiting
//! (up to [`MAX_GROUP`]) into one database transaction, one SAVEPOINT per ledger transaction,
//! and one COMMIT (one fsync) for the group: a refused transaction rolls back to its savepoint
//! and leaves the others alone, and no caller hears "done" before the group's COMMIT. SQLite has
//! one writer anyway; this turns its lock-and-sleep busy handler into a queue and amortises the
//! fsync over concurrent payments.
//!
//! Why a thread of its own, off sqlx: sqlx runs each SQLite connection on a worker thread and
//! hands every statement to it and back, two thread wake-ups per statement, which made a paid
//! request's two ledger transactions cost ~1.5 ms. Here a statement is a call into the library,
//! with the statement prepared once (`prepare_cached`). The statements and the checks are the
//! ones the sqlx path runs (`ledger_commit`); the schema is the one sqlx migrated before the
//! thread opened its connection.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter, types::Value};
use tokio::sync::{mpsc, oneshot};

use crate::{LedgerTx, PaymentChange, PaymentStatus, Result, StoreError, ledger_commit as lc, sql::address_text};

/// The most ledger transactions one group commit carries.
const MAX_GROUP: usize = 64;

type Job = (LedgerTx, oneshot::Sender<Result<()>>);

/// Handle of the writer thread; it stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct LedgerWriter {
    jobs: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Opens `path` (already migrated) and starts the thread.
    pub(crate) fn spawn(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let db = Connection::open(path)?;
        db.busy_timeout(busy_timeout)?;
        // FULL: a COMMIT is on disk (the WAL synced) before any caller hears "done".
        db.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY")?;
        db.set_prepared_statement_cache_capacity(64);
        let (jobs, rx) = mpsc::channel(4 * MAX_GROUP);
        std::thread::Builder::new().name("verinet-ledger".into()).spawn(move || write_loop(db, rx))?;
        Ok(Self { jobs })
    }

    /// Commits `tx` with whatever else is waiting; returns once the group's COMMIT is durable.
    pub(crate) async fn commit(&self, tx: LedgerTx) -> Result<()> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::CommitFailed("the ledger writer stopped".into());
        self.jobs.send((tx, reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

fn write_loop(mut db: Connection, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = commit_group(&mut db, &group);
        for ((_, reply), result) in group.into_iter().zip(results) {
            // The caller may have gone; its transaction is committed (or not) all the same.
            let _ = reply.send(result);
        }
    }
}

/// One database transaction for the whole group.
///
/// Refusals are rare (a nonce reused, a balance short), so the group first runs without
/// savepoints: a savepoint copies every page it is first to touch into a statement journal, a
/// tenth of the writer's time when every transaction had one. If any transaction is refused,
/// that attempt is rolled back whole and the group runs again with a savepoint each, in the same
/// order, so each transaction meets the same balances and gets the same outcome.
fn commit_group(db: &mut Connection, group: &[Job]) -> Vec<Result<()>> {
    let outcome = match without_savepoints(db, group) {
        Ok(Ok(())) => Ok(group.iter().map(|_| Ok(())).collect()),
        // Alone, the refused transaction's attempt was all there was to roll back.
        Ok(Err(refused)) if group.len() == 1 => Ok(vec![Err(refused)]),
        Ok(Err(_)) => with_savepoints(db, group),
        Err(e) => Err(e),
    };
    outcome.unwrap_or_else(|e| group.iter().map(|_| Err(StoreError::CommitFailed(e.to_string()))).collect())
}

/// Commits the whole group, or rolls it all back at the first refusal and returns that.
fn without_savepoints(db: &mut Connection, group: &[Job]) -> rusqlite::Result<Result<()>> {
    let txn = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (tx, _) in group {
        if let Err(refused) = commit_in(&txn, tx) {
            txn.rollback()?;
            return Ok(Err(refused));
        }
    }
    txn.commit()?;
    Ok(Ok(()))
}

/// Commits the group with one savepoint per transaction: a refused one rolls back alone.
fn with_savepoints(db: &mut Connection, group: &[Job]) -> rusqlite::Result<Vec<Result<()>>> {
    let txn = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for (tx, _) in group {
        txn.execute_batch("SAVEPOINT ledger_tx")?;
        let result = commit_in(&txn, tx);
        if result.is_err() {
            txn.execute_batch("ROLLBACK TO SAVEPOINT ledger_tx")?;
        }
        txn.execute_batch("RELEASE SAVEPOINT ledger_tx")?;
        results.push(result);
    }
    // A failure from here on drops `txn`, which rolls the group back.
    txn.commit()?;
    Ok(results)
}

/// Applies `tx` inside the open transaction: the statements of the sqlx path, in its order.
fn commit_in(db: &Connection, tx: &LedgerTx) -> Result<()> {
    db.prepare_cached(lc::INSERT_TX)?.execute(params![tx.id, tx.kind.as_str(), lc::request_id(tx), tx.memo, tx.at_ms])?;

    if let Some(n) = &tx.nonce {
        let claimed = db.prepare_cached(lc::CLAIM_NONCE)?.execute(params![
            address_text(&n.payer),
            n.nonce.to_lowercase(),
            tx.id,
            tx.at_ms
        ])?;
        if claimed == 0 {
            return Err(StoreError::NonceUsed { payer: n.payer, nonce: n.nonce.clone() });
        }
    }

    match &tx.payment {
        Some(PaymentChange::Open(p)) => {
            let opened = db.prepare_cached(lc::OPEN_PAYMENT)?.execute(params![
                p.request_id,
                address_text(&p.payer),
                p.amount.to_string(),
                p.quote,
                p.model,
                p.app,
                address_text(&p.gateway),
                p.method,
                p.reference,
                PaymentStatus::Escrowed.as_str(),
                p.input_hash,
                tx.id,
                tx.at_ms
            ])?;
            if opened == 0 {
                return Err(lc::opened_twice(&p.request_id));
            }
        }
        Some(PaymentChange::Close { request_id, to, output_hash, reason, kept }) => {
            let closed = db.prepare_cached(lc::CLOSE_PAYMENT)?.execute(params![
                to.as_str(),
                output_hash,
                reason,
                tx.id,
                tx.at_ms,
                kept.as_ref().map(|k| k.answer.as_str()),
                kept.as_ref().map(|k| k.charged.to_string()),
                request_id,
                PaymentStatus::Escrowed.as_str()
            ])?;
            if closed == 0 {
                let found = db
                    .prepare_cached(lc::PAYMENT_STATUS)?
                    .query_row(params![request_id], |r| r.get::<_, String>(0))
                    .optional()?;
                return Err(lc::not_escrowed(request_id, found));
            }
            if let Some(k) = kept {
                let r = &k.receipt;
                db.prepare_cached(lc::INSERT_RECEIPT)?.execute(params![
                    r.request_id,
                    address_text(&r.node),
                    r.digest,
                    r.body,
                    r.created_at_ms
                ])?;
            }
        }
        None => {}
    }

    if let Some(spend) = &tx.session_spend {
        let row = db
            .prepare_cached(lc::SESSION_BUDGET)?
            .query_row(params![spend.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let after = lc::session_after(spend, row, tx.at_ms)?;
        db.prepare_cached(lc::SESSION_SPENT)?.execute(params![after.to_string(), spend.id])?;
    }

    let changes = lc::changes(tx)?;
    if !changes.is_empty() {
        let keys = changes.iter().flat_map(|c| [c.account_text.as_str(), c.bucket.as_str()]);
        let mut lock = db.prepare_cached(&lc::lock_balances_sql(changes.len()))?;
        let mut rows = lock.query(params_from_iter(keys))?;
        let mut old = HashMap::with_capacity(changes.len());
        while let Some(r) = rows.next()? {
            old.insert((r.get(0)?, r.get(1)?), r.get::<_, String>(2)?);
        }
        drop(rows);
        let moved = lc::apply(&changes, &old)?;
        if !moved.is_empty() {
            let values = moved.iter().flat_map(|(account, bucket, amount)| [*account, bucket.as_str(), amount.as_str()]);
            db.prepare_cached(&lc::write_balances_sql(moved.len()))?.execute(params_from_iter(values))?;
        }
    }

    if !tx.postings.is_empty() {
        let mut values = Vec::with_capacity(tx.postings.len() * 6);
        for (idx, account, bucket, delta, role) in lc::entry_rows(tx) {
            values.extend([
                Value::Text(tx.id.clone()),
                Value::Integer(idx),
                Value::Text(account),
                Value::Text(bucket.to_owned()),
                Value::Text(delta),
                role.map_or(Value::Null, |r| Value::Text(r.to_owned())),
            ]);
        }
        db.prepare_cached(&lc::entries_sql(tx.postings.len()))?.execute(params_from_iter(values))?;
    }
    Ok(())
}
