//! What one [`LedgerTx`] writes, shared by its two executors: sqlx (PostgreSQL, and SQLite in
//! memory) in `sql_ledger`, and the SQLite writer thread (rusqlite) in `sqlite_ledger`.
//!
//! The statements are the same text on both. Their `$n` placeholders appear once each and in
//! order, so SQLite, which treats `$1` as a named parameter numbered by first appearance, binds
//! them by position exactly as PostgreSQL does.
//!
//! A transaction costs a fixed number of statements whatever its number of legs:
//! 1. `INSERT INTO ledger_txs`;
//! 2. the nonce claim, the payment opened or closed (with the receipt kept with a capture) and
//!    the session debit, each when the transaction carries one;
//! 3. every balance it touches locked and read in one multi-row upsert ([`lock_balances_sql`]),
//!    checked in Rust ([`apply`]: amounts are u128 decimal text, beyond SQL integers), and
//!    written back in one `UPDATE … FROM (VALUES …)` ([`write_balances_sql`]);
//! 4. every leg in one multi-row insert ([`entries_sql`]).

use std::collections::{BTreeMap, HashMap};

use verinet_primitives::Address;

use crate::{
    Bucket, LedgerTx, PaymentChange, Posting, Result, Role, SessionSpend, StoreError, ledger::MINT_ACCOUNT, sql::address_text,
};

pub(crate) const INSERT_TX: &str =
    "INSERT INTO ledger_txs (id, kind, request_id, memo, created_at) VALUES ($1, $2, $3, $4, $5)";

pub(crate) const CLAIM_NONCE: &str = "INSERT INTO payment_nonces (payer, nonce, tx_id, created_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (payer, nonce) DO NOTHING";

pub(crate) const OPEN_PAYMENT: &str = "INSERT INTO payments (request_id, payer, amount, quote, model, app, gateway, method, \
     reference, status, input_hash, escrow_tx, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (request_id) DO NOTHING";

pub(crate) const CLOSE_PAYMENT: &str = "UPDATE payments SET status = $1, output_hash = $2, reason = $3, settle_tx = $4, \
     settled_at = $5, charged = $6 WHERE request_id = $7 AND status = $8";

/// The answer kept with a capture (migration 0015: in a table of its own, so that payment rows
/// stay small).
pub(crate) const INSERT_ANSWER: &str = "INSERT INTO payment_answers (request_id, answer) VALUES ($1, $2)";

pub(crate) const PAYMENT_STATUS: &str = "SELECT status FROM payments WHERE request_id = $1";

pub(crate) const SESSION_BUDGET: &str = "SELECT spent, max_total, expires_at FROM spending_sessions WHERE id = $1";

pub(crate) const SESSION_SPENT: &str = "UPDATE spending_sessions SET spent = $1 WHERE id = $2";

/// A receipt stored unsealed; one already stored for its request stands (the capture and the
/// receipt buffer both write it).
pub(crate) const INSERT_RECEIPT: &str = "INSERT INTO receipts (request_id, node, digest, body, batch_id, created_at) \
     VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (request_id) DO NOTHING";

/// The request a transaction belongs to, if any.
pub(crate) fn request_id(tx: &LedgerTx) -> Option<&str> {
    match &tx.payment {
        Some(PaymentChange::Open(p)) => Some(p.request_id.as_str()),
        Some(PaymentChange::Close { request_id, .. }) => Some(request_id.as_str()),
        None => None,
    }
}

/// The net change of one balance.
#[derive(Debug)]
pub(crate) struct Change {
    pub account_text: String,
    pub account: Address,
    pub bucket: Bucket,
    pub delta: i128,
}

impl Change {
    /// Whether this is the mint's counter-balance, the one balance allowed below zero.
    pub(crate) fn may_go_negative(&self) -> bool {
        self.bucket == Bucket::Minted && self.account == MINT_ACCOUNT
    }

    /// The refusal of this change, which would take a balance that held `before` below zero.
    pub(crate) fn insufficient(&self, before: i128) -> StoreError {
        StoreError::Insufficient {
            account: self.account,
            bucket: self.bucket.to_string(),
            needed: self.delta.unsigned_abs(),
            available: before.max(0).unsigned_abs(),
        }
    }
}

/// The net change per balance of `tx`, in lock order (account text, then bucket): two
/// transactions lock shared balances in the same order and never wait on each other in a cycle.
pub(crate) fn changes(tx: &LedgerTx) -> Result<Vec<Change>> {
    changes_of(&tx.postings)
}

/// The net change per balance of `postings` (of one or more transactions), in lock order.
pub(crate) fn changes_of<'a>(postings: impl IntoIterator<Item = &'a Posting>) -> Result<Vec<Change>> {
    let mut net: BTreeMap<(String, Bucket), (Address, i128)> = BTreeMap::new();
    for p in postings {
        let e = net.entry((address_text(&p.account), p.bucket)).or_insert((p.account, 0));
        e.1 = e.1.checked_add(p.delta).ok_or_else(|| StoreError::Invalid("posting overflows".into()))?;
    }
    Ok(net.into_iter().map(|((account_text, bucket), (account, delta))| Change { account_text, account, bucket, delta }).collect())
}

/// Locks and reads `n` balances, creating missing ones at zero: binds (account, bucket) per
/// balance and returns `account, bucket, amount`. On PostgreSQL `ON CONFLICT DO UPDATE` row-locks
/// each existing row in VALUES order (the lock order); SQLite's writer holds the database lock.
pub(crate) fn lock_balances_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("(${}, ${}, '0')", 2 * i + 1, 2 * i + 2)).collect();
    format!(
        "INSERT INTO ledger_balances (account, bucket, amount) VALUES {} \
         ON CONFLICT (account, bucket) DO UPDATE SET amount = ledger_balances.amount RETURNING account, bucket, amount",
        rows.join(", ")
    )
}

/// Writes `n` balances: binds (account, bucket, amount) per balance.
pub(crate) fn write_balances_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    format!(
        "UPDATE ledger_balances SET amount = v.column3 FROM (VALUES {}) AS v \
         WHERE ledger_balances.account = v.column1 AND ledger_balances.bucket = v.column2",
        rows.join(", ")
    )
}

/// Inserts `n` legs: binds (tx_id, idx, account, bucket, delta, role) per leg.
pub(crate) fn entries_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let b = i * 6;
            format!("(${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6)
        })
        .collect();
    format!("INSERT INTO ledger_entries (tx_id, idx, account, bucket, delta, role) VALUES {}", rows.join(", "))
}

/// One leg as the entries insert binds it: (idx, account, bucket, delta, role).
pub(crate) fn entry_rows(tx: &LedgerTx) -> impl Iterator<Item = (i64, String, &'static str, String, Option<&'static str>)> + '_ {
    tx.postings.iter().enumerate().map(|(idx, p)| {
        (idx as i64, address_text(&p.account), p.bucket.as_str(), p.delta.to_string(), p.role.map(Role::as_str))
    })
}

/// The balances after `changes`, given what the lock read (`old`, by account text and bucket
/// text): only those that move, each as (account text, bucket, new amount). Refuses a balance
/// that would go negative, except the mint's counter-balance.
pub(crate) fn apply<'a>(changes: &'a [Change], old: &HashMap<(String, String), String>) -> Result<Vec<(&'a str, Bucket, String)>> {
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let text = old.get(&(c.account_text.clone(), c.bucket.as_str().to_owned())).ok_or_else(|| {
            StoreError::Corrupt(format!("the balance lock did not return {} {}", c.account_text, c.bucket))
        })?;
        let before: i128 = text.parse().map_err(|e| StoreError::Corrupt(format!("amount {text:?}: {e}")))?;
        let after = before.checked_add(c.delta).ok_or_else(|| StoreError::Invalid("balance overflows".into()))?;
        if after < 0 && !c.may_go_negative() {
            return Err(c.insufficient(before));
        }
        if c.delta != 0 {
            out.push((c.account_text.as_str(), c.bucket, after.to_string()));
        }
    }
    Ok(out)
}

/// What a session has spent after `spend`, given the row `SESSION_BUDGET` read (`None`: no such
/// session), at `at_ms`. Refuses past the cap, or any spend after expiry.
pub(crate) fn session_after(spend: &SessionSpend, row: Option<(String, String, i64)>, at_ms: i64) -> Result<u128> {
    let budget = |reason: String| StoreError::Budget { id: spend.id.clone(), reason };
    let (spent, max, expires_at) = row.ok_or_else(|| budget("no such session".into()))?;
    let parse = |s: &str| s.parse::<u128>().map_err(|e| StoreError::Corrupt(format!("session amount {s:?}: {e}")));
    let (spent, max) = (parse(&spent)?, parse(&max)?);
    if spend.amount > 0 && at_ms >= expires_at.saturating_mul(1000) {
        return Err(budget(format!("expired at {expires_at}")));
    }
    let spent = spent
        .checked_sub(spend.released)
        .ok_or_else(|| budget(format!("releasing {} of a budget that has spent only {spent}", spend.released)))?;
    spent
        .checked_add(spend.amount)
        .filter(|a| spend.amount == 0 || *a <= max)
        .ok_or_else(|| budget(format!("spending {} would exceed the cap {max} (spent {spent})", spend.amount)))
}

/// The refusal of a payment opened twice.
pub(crate) fn opened_twice(request_id: &str) -> StoreError {
    StoreError::PaymentState { request_id: request_id.to_owned(), expected: "absent".into(), found: "present".into() }
}

/// The refusal of closing a payment found in status `found` (`None`: absent).
pub(crate) fn not_escrowed(request_id: &str, found: Option<String>) -> StoreError {
    StoreError::not_escrowed(request_id, found.as_deref().unwrap_or("absent"))
}

/// The refusal of closing `request_id`, which the close's update did not find escrowed: reads
/// its status in the open transaction `db` (sqlx).
pub(crate) async fn not_escrowed_in(db: &mut sqlx::AnyConnection, request_id: &str) -> Result<StoreError> {
    use sqlx::Row;
    let found = sqlx::query(PAYMENT_STATUS)
        .bind(request_id)
        .fetch_optional(&mut *db)
        .await?
        .map(|r| r.try_get::<String, _>("status"))
        .transpose()?;
    Ok(not_escrowed(request_id, found))
}
