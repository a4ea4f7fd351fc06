//! PostgreSQL: the escrows and closes waiting on one gateway, written as one statement.
//!
//! Why: every paid statement moves rows that every other one moves too (the payer's balances, a
//! session's `spent`, and in each capture the same payees: the model's creator, the operator,
//! the protocol). A row lock is held until the statement commits, so on their own the paid
//! statements of one model ran one at a time, ~1 ms each under load, and a gateway stopped near
//! 1,000 paid calls a second at any concurrency (BENCHMARKS.md, "Why PostgreSQL stays near
//! 1,000 paid calls a second"). Here they are group-committed: while one group's statement
//! runs, the next waits, and it is written as one statement that locks each of those rows once
//! for the whole group, moved by the group's net change. Nobody is answered before the
//! statement commits, so what a caller hears and what other gateways read are as before.
//!
//! Only escrows and closes are grouped, because for them a check of the group's net result is
//! as good as checking each in turn. A close debits only the payer's escrow, which its own
//! escrow (committed before the close was sent) credited, and credits available balances. An
//! escrow debits only the payer's available balance. So the order "every close, then every
//! escrow" is a serial order of the group in which every balance only grows and then only
//! shrinks: if the balances after the whole group are not below zero, no step of it went
//! below zero. A session's `spent` the same way (releases first, then spends). Anything else
//! (a mint, a transfer, a stake) is written alone, as before.
//!
//! The group statement is guarded like the single one (`pg_ledger`): any check that fails (a
//! nonce claimed, a payment not escrowed, a balance or a session budget short) aborts it and
//! nothing of it is written. Then each transaction of the group is written on its own, in
//! arrival order, and gets its own answer: the one refused, the reason; the others, Ok. A
//! group of one is written on its own from the start.
//!
//! Lock order: the balances in the group statement are locked in the order the single
//! statement uses ([`lc::changes_of`]), so two gateways' statements never wait on each other's
//! balances in a cycle. Sessions and nonces of one group are not ordered against another
//! gateway's; a cycle there (two gateways spending two shared sessions, or one nonce sent to
//! both) is broken by PostgreSQL's deadlock check, and the group it aborts is written again one
//! transaction at a time.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sqlx::{AnyPool, Row};
use tokio::sync::oneshot;

use crate::{Bucket, LedgerTx, PaymentChange, PaymentStatus, Result, StoreError, TxKind, ledger::MINT_ACCOUNT, ledger_commit as lc, sql::address_text};

/// At most this many transactions in one statement (~60 parameters' worth of JSON each).
const MAX_GROUP: usize = 64;

/// A transaction waiting for its group, and where its answer goes.
type Waiting = (LedgerTx, oneshot::Sender<Result<()>>);

/// The group committer of one store: who waits, and the turn to write.
#[derive(Default)]
pub(crate) struct Groups {
    waiting: Mutex<Vec<Waiting>>,
    /// Held while a group is written; callers queue on it in arrival order (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
    /// Transactions written in a group of two or more.
    grouped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

/// Whether `tx` may share a statement with others (see the module's note).
pub(crate) fn groupable(tx: &LedgerTx) -> bool {
    let debits_only = |bucket: Bucket| tx.postings.iter().all(|p| p.delta >= 0 || p.bucket == bucket);
    match (&tx.payment, tx.kind) {
        (Some(PaymentChange::Open(_)), TxKind::Escrow) => debits_only(Bucket::Available),
        (Some(PaymentChange::Close { .. }), TxKind::Capture | TxKind::Refund) => debits_only(Bucket::Escrow),
        _ => false,
    }
}

impl Groups {
    /// Commits `tx` (checked as [`groupable`]) with whatever else waits; returns once it is
    /// written, or refused.
    pub(crate) async fn commit(self: &Arc<Self>, pool: &AnyPool, tx: &LedgerTx) -> Result<()> {
        let (done, mut answer) = oneshot::channel();
        self.waiting.lock().map_err(|_| poisoned())?.push((tx.clone(), done));
        loop {
            let turn = self.turn.lock().await;
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let group: Vec<Waiting> = {
                let mut waiting = self.waiting.lock().map_err(|_| poisoned())?;
                let n = waiting.len().min(MAX_GROUP);
                waiting.drain(..n).collect()
            };
            if group.is_empty() {
                // Taken by a writer whose caller went away; its task still answers.
                drop(turn);
                return answer.await.unwrap_or_else(|_| Err(lost()));
            }
            // A task of its own: a caller that goes away cannot stop a group half answered.
            let written = tokio::spawn(write(pool.clone(), group)).await;
            drop(turn);
            match written {
                Ok(grouped) => {
                    self.grouped.fetch_add(grouped, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "a ledger group's writer failed"),
            }
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                // Beyond this group's bound: the next turn.
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Corrupt("the ledger group queue's lock was poisoned".into())
}

fn lost() -> StoreError {
    StoreError::Corrupt("a ledger group's writer stopped before answering".into())
}

/// Writes `group` as one statement, or each of it on its own when that is refused or fails,
/// and answers every caller; returns how many it wrote as one statement.
async fn write(pool: AnyPool, group: Vec<Waiting>) -> u64 {
    if group.len() > 1 {
        let txs: Vec<&LedgerTx> = group.iter().map(|(tx, _)| tx).collect();
        let together = match pool.acquire().await {
            Ok(mut db) => commit_group(&mut db, &txs).await,
            Err(e) => Err(e.into()),
        };
        match together {
            Ok(true) => {
                let n = group.len() as u64;
                for (_, done) in group {
                    let _ = done.send(Ok(()));
                }
                return n;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, size = group.len(), "a ledger group failed; writing its transactions one by one"),
        }
    }
    for (tx, done) in group {
        let _ = done.send(crate::pg_ledger::commit_one(&pool, &tx).await);
    }
    0
}

/// The group statement: one `WITH` whose parts each read their rows from one JSON parameter
/// (`json_to_recordset`), so its text is the same for every group and PostgreSQL prepares it
/// once per connection. Parts with no rows get `[]`.
const GROUP_SQL: &str = "WITH \
 t AS (INSERT INTO ledger_txs (id, kind, request_id, memo, created_at) \
   SELECT id, kind, request_id, memo, created_at FROM json_to_recordset($1::json) \
   AS x(id text, kind text, request_id text, memo text, created_at bigint)), \
 n AS (INSERT INTO payment_nonces (payer, nonce, tx_id, created_at) \
   SELECT payer, nonce, tx_id, created_at FROM json_to_recordset($2::json) \
   AS x(payer text, nonce text, tx_id text, created_at bigint) \
   ON CONFLICT (payer, nonce) DO NOTHING RETURNING 1), \
 o AS (INSERT INTO payments (request_id, payer, amount, quote, model, app, gateway, method, reference, status, input_hash, escrow_tx, created_at) \
   SELECT request_id, payer, amount, quote, model, app, gateway, method, reference, status, input_hash, escrow_tx, created_at \
   FROM json_to_recordset($3::json) AS x(request_id text, payer text, amount text, quote text, model text, app text, gateway text, \
   method text, reference text, status text, input_hash text, escrow_tx text, created_at bigint) \
   ON CONFLICT (request_id) DO NOTHING RETURNING 1), \
 c AS (UPDATE payments SET status = x.status, output_hash = x.output_hash, reason = x.reason, settle_tx = x.settle_tx, \
   settled_at = x.settled_at, charged = x.charged \
   FROM json_to_recordset($4::json) AS x(request_id text, status text, output_hash text, reason text, settle_tx text, \
   settled_at bigint, charged text) \
   WHERE payments.request_id = x.request_id AND payments.status = 'escrowed' RETURNING 1), \
 a AS (INSERT INTO payment_answers (request_id, answer) \
   SELECT request_id, answer FROM json_to_recordset($5::json) AS x(request_id text, answer text)), \
 r AS (INSERT INTO receipts (request_id, node, digest, body, batch_id, created_at) \
   SELECT request_id, node, digest, body, NULL, created_at FROM json_to_recordset($6::json) \
   AS x(request_id text, node text, digest text, body text, created_at bigint) \
   ON CONFLICT (request_id) DO NOTHING), \
 s AS (UPDATE spending_sessions SET spent = (spent::numeric + x.amount::numeric - x.released::numeric)::text \
   FROM json_to_recordset($7::json) AS x(id text, amount text, released text, at bigint) \
   WHERE spending_sessions.id = x.id RETURNING spending_sessions.spent, max_total, expires_at, x.amount, x.at), \
 e AS (INSERT INTO ledger_entries (tx_id, idx, account, bucket, delta, role) \
   SELECT tx_id, idx, account, bucket, delta, role FROM json_to_recordset($8::json) \
   AS x(tx_id text, idx bigint, account text, bucket text, delta text, role text)), \
 b AS (INSERT INTO ledger_balances (account, bucket, amount) \
   SELECT account, bucket, delta FROM ROWS FROM (json_to_recordset($9::json) AS (account text, bucket text, delta text)) \
   WITH ORDINALITY AS x(account, bucket, delta, k) ORDER BY k \
   ON CONFLICT (account, bucket) DO UPDATE SET amount = (ledger_balances.amount::numeric + EXCLUDED.amount::numeric)::text \
   RETURNING account, bucket, amount) \
 SELECT 1 / (CASE WHEN (SELECT count(*) FROM n) = $10 AND (SELECT count(*) FROM o) = $11 AND (SELECT count(*) FROM c) = $12 \
   AND (SELECT count(*) FROM s) = $13 \
   AND NOT EXISTS (SELECT 1 FROM s WHERE NOT (spent::numeric - amount::numeric >= 0 AND (amount::numeric = 0 \
     OR (spent::numeric <= max_total::numeric AND at < expires_at * 1000)))) \
   AND NOT EXISTS (SELECT 1 FROM b WHERE (amount::numeric < 0 AND NOT (account = $14 AND bucket = $15)) \
     OR abs(amount::numeric) >= 170141183460469231731687303715884105728) \
   THEN 1 ELSE 0 END) AS ok";

/// Writes `txs` (all [`groupable`]) as one statement, guarded: `Ok(false)` when any check
/// refuses, and then nothing of it is written.
async fn commit_group(db: &mut sqlx::AnyConnection, txs: &[&LedgerTx]) -> Result<bool> {
    let (mut t, mut n, mut o, mut c, mut a, mut r, mut e) = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    // Per session: (amount, released, the latest time of a spend that adds).
    let mut sessions: std::collections::BTreeMap<&str, (u128, u128, i64)> = Default::default();
    for tx in txs {
        t.push(json!({"id": tx.id, "kind": tx.kind.as_str(), "request_id": lc::request_id(tx), "memo": tx.memo, "created_at": tx.at_ms}));
        if let Some(claim) = &tx.nonce {
            n.push(json!({"payer": address_text(&claim.payer), "nonce": claim.nonce.to_lowercase(), "tx_id": tx.id, "created_at": tx.at_ms}));
        }
        match &tx.payment {
            Some(PaymentChange::Open(p)) => o.push(json!({
                "request_id": p.request_id, "payer": address_text(&p.payer), "amount": p.amount.to_string(), "quote": p.quote,
                "model": p.model, "app": p.app, "gateway": address_text(&p.gateway), "method": p.method, "reference": p.reference,
                "status": PaymentStatus::Escrowed.as_str(), "input_hash": p.input_hash, "escrow_tx": tx.id, "created_at": tx.at_ms,
            })),
            Some(PaymentChange::Close { request_id, to, output_hash, reason, kept }) => {
                c.push(json!({
                    "request_id": request_id, "status": to.as_str(), "output_hash": output_hash, "reason": reason,
                    "settle_tx": tx.id, "settled_at": tx.at_ms, "charged": kept.as_ref().map(|k| k.charged.to_string()),
                }));
                if let Some(k) = kept {
                    a.push(json!({"request_id": request_id, "answer": k.answer}));
                    let rc = &k.receipt;
                    r.push(json!({
                        "request_id": rc.request_id, "node": address_text(&rc.node), "digest": rc.digest, "body": rc.body,
                        "created_at": rc.created_at_ms,
                    }));
                }
            }
            None => return Ok(false),
        }
        if let Some(spend) = &tx.session_spend {
            let s = sessions.entry(spend.id.as_str()).or_insert((0, 0, i64::MIN));
            let (Some(amount), Some(released)) = (s.0.checked_add(spend.amount), s.1.checked_add(spend.released)) else {
                return Ok(false);
            };
            *s = (amount, released, if spend.amount > 0 { s.2.max(tx.at_ms) } else { s.2 });
        }
        for (idx, account, bucket, delta, role) in lc::entry_rows(tx) {
            e.push(json!({"tx_id": tx.id, "idx": idx, "account": account, "bucket": bucket, "delta": delta, "role": role}));
        }
    }
    let s: Vec<Value> = sessions
        .iter()
        .map(|(id, (amount, released, at))| json!({"id": id, "amount": amount.to_string(), "released": released.to_string(), "at": at}))
        .collect();
    let b: Vec<Value> = lc::changes_of(txs.iter().flat_map(|tx| &tx.postings))?
        .into_iter()
        .filter(|c| c.delta != 0)
        .map(|c| json!({"account": c.account_text, "bucket": c.bucket.as_str(), "delta": c.delta.to_string()}))
        .collect();
    let count = |rows: &[Value]| rows.len() as i64;
    let (nonces, opens, closes, session_rows) = (count(&n), count(&o), count(&c), count(&s));
    let mut q = sqlx::query(GROUP_SQL);
    for rows in [t, n, o, c, a, r, s, e, b] {
        q = q.bind(Value::Array(rows).to_string());
    }
    let done = q
        .bind(nonces)
        .bind(opens)
        .bind(closes)
        .bind(session_rows)
        .bind(address_text(&MINT_ACCOUNT))
        .bind(Bucket::Minted.as_str())
        .fetch_one(&mut *db)
        .await;
    match done {
        Ok(row) => {
            row.try_get::<i32, _>("ok")?;
            Ok(true)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(crate::pg_ledger::GUARD_REFUSED) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(feature = "test-utils")]
impl crate::SqlStore {
    /// Tests only (PostgreSQL): writes `txs` as one group statement, as the group committer
    /// would; `Ok(false)` when its checks refuse it, and then nothing of it is written.
    pub async fn commit_as_one_group(&self, txs: &[LedgerTx]) -> Result<bool> {
        if self.pg_groups.is_none() || !txs.iter().all(groupable) {
            return Err(StoreError::Invalid("a group statement takes escrows and closes on PostgreSQL".into()));
        }
        let txs: Vec<&LedgerTx> = txs.iter().collect();
        commit_group(&mut *self.pool.acquire().await?, &txs).await
    }

    /// Tests only: how many ledger transactions the group committer wrote in groups of two or more.
    pub fn ledger_grouped(&self) -> u64 {
        self.pg_groups.as_ref().map_or(0, |g| g.grouped.load(std::sync::atomic::Ordering::Relaxed))
    }
}
