//! [`LedgerStore`] over SQL: one locked transaction per [`LedgerTx`].
//!
//! Amounts are decimal text, so balances are read, checked and written back in Rust while the
//! transaction holds their locks (`ledger_commit` has the statements, a fixed handful per
//! transaction). PostgreSQL row-locks each balance in (account, bucket) order, so two
//! transactions never wait on each other in a cycle, and several gateways sharing the database
//! spend a balance once. Its transactions run here, through sqlx.
//!
//! On PostgreSQL the transaction is one statement on its own (`pg_ledger`): its balances stay
//! locked while the server runs it, not across round trips.
//!
//! A SQLite file's ledger transactions go to one writer thread instead (`sqlite_ledger`), which
//! groups whatever is waiting into one database transaction. An in-memory SQLite database (one
//! connection, tests) runs them here too, taking the write lock up front (`BEGIN IMMEDIATE`).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row, Transaction, any::AnyRow};
use verinet_primitives::Address;

use crate::{
    App, Balances, Bucket, KeptAnswer, LedgerAudit, LedgerStore, LedgerTotals, LedgerTx, PaymentChange, PaymentRecord, PaymentStatus, Result,
    Role, SpendingSession, SqlStore, StoreError, TxKind,
    held::Held,
    sqlite_ledger::HeldView,
    ledger::MINT_ACCOUNT,
    ledger_commit as lc,
    sql::{address_text, parse_address},
};

impl SqlStore {
    /// The escrows the SQLite writer holds in memory (none on other databases), locked for
    /// reading: hold it across the database read it is combined with.
    pub(crate) async fn held(&self) -> Option<HeldView<'_>> {
        match &self.ledger_writer {
            Some(w) => Some(w.held().await),
            None => None,
        }
    }

    /// A transaction that will write: SQLite takes the write lock now, PostgreSQL locks rows.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(if self.backend == "sqlite" { self.pool.begin_with("BEGIN IMMEDIATE").await? } else { self.pool.begin().await? })
    }

    /// Row-lock clause for reads that precede a write (SQLite already holds the database lock).
    fn for_update(&self) -> &'static str {
        if self.backend == "sqlite" { "" } else { " FOR UPDATE" }
    }

    /// Applies `tx` inside the open transaction `db` (see `ledger_commit` for what it writes).
    async fn commit_in(&self, db: &mut AnyConnection, tx: &LedgerTx) -> Result<()> {
        sqlx::query(lc::INSERT_TX)
            .bind(&tx.id)
            .bind(tx.kind.as_str())
            .bind(lc::request_id(tx))
            .bind(&tx.memo)
            .bind(tx.at_ms)
            .execute(&mut *db)
            .await?;

        if let Some(n) = &tx.nonce {
            let claimed = sqlx::query(lc::CLAIM_NONCE)
                .bind(address_text(&n.payer))
                .bind(n.nonce.to_lowercase())
                .bind(&tx.id)
                .bind(tx.at_ms)
                .execute(&mut *db)
                .await?;
            if claimed.rows_affected() == 0 {
                return Err(StoreError::NonceUsed { payer: n.payer, nonce: n.nonce.clone() });
            }
        }

        match &tx.payment {
            Some(PaymentChange::Open(p)) => {
                let opened = sqlx::query(lc::OPEN_PAYMENT)
                    .bind(&p.request_id)
                    .bind(address_text(&p.payer))
                    .bind(p.amount.to_string())
                    .bind(&p.quote)
                    .bind(&p.model)
                    .bind(p.app.as_deref())
                    .bind(address_text(&p.gateway))
                    .bind(&p.method)
                    .bind(&p.reference)
                    .bind(PaymentStatus::Escrowed.as_str())
                    .bind(&p.input_hash)
                    .bind(&tx.id)
                    .bind(tx.at_ms)
                    .execute(&mut *db)
                    .await?;
                if opened.rows_affected() == 0 {
                    return Err(lc::opened_twice(&p.request_id));
                }
            }
            Some(PaymentChange::Close { request_id, to, output_hash, reason, kept }) => {
                let closed = sqlx::query(lc::CLOSE_PAYMENT)
                    .bind(to.as_str())
                    .bind(output_hash.as_deref())
                    .bind(reason.as_deref())
                    .bind(&tx.id)
                    .bind(tx.at_ms)
                    .bind(kept.as_ref().map(|k| k.charged.to_string()))
                    .bind(request_id)
                    .bind(PaymentStatus::Escrowed.as_str())
                    .execute(&mut *db)
                    .await?;
                if closed.rows_affected() == 0 {
                    return Err(lc::not_escrowed_in(db, request_id).await?);
                }
                if let Some(k) = kept {
                    sqlx::query(lc::INSERT_ANSWER).bind(request_id).bind(&k.answer).execute(&mut *db).await?;
                    crate::sql_receipt::insert_receipt(db, &k.receipt).await?;
                }
            }
            None => {}
        }

        if let Some(spend) = &tx.session_spend {
            let sql = format!("{}{}", lc::SESSION_BUDGET, self.for_update());
            let row = sqlx::query(AssertSqlSafe(sql)).bind(&spend.id).fetch_optional(&mut *db).await?;
            let row = row
                .map(|r| Ok::<_, StoreError>((r.try_get("spent")?, r.try_get("max_total")?, r.try_get("expires_at")?)))
                .transpose()?;
            let after = lc::session_after(spend, row, tx.at_ms)?;
            sqlx::query(lc::SESSION_SPENT).bind(after.to_string()).bind(&spend.id).execute(&mut *db).await?;
        }

        let changes = lc::changes(tx)?;
        if !changes.is_empty() {
            let mut lock = sqlx::query(AssertSqlSafe(lc::lock_balances_sql(changes.len())));
            for c in &changes {
                lock = lock.bind(c.account_text.as_str()).bind(c.bucket.as_str());
            }
            let mut old = HashMap::with_capacity(changes.len());
            for r in lock.fetch_all(&mut *db).await? {
                old.insert((r.try_get("account")?, r.try_get("bucket")?), r.try_get::<String, _>("amount")?);
            }
            let moved = lc::apply(&changes, &old)?;
            if !moved.is_empty() {
                let mut write = sqlx::query(AssertSqlSafe(lc::write_balances_sql(moved.len())));
                for (account, bucket, amount) in &moved {
                    write = write.bind(*account).bind(bucket.as_str()).bind(amount.as_str());
                }
                write.execute(&mut *db).await?;
            }
        }

        if !tx.postings.is_empty() {
            let mut q = sqlx::query(AssertSqlSafe(lc::entries_sql(tx.postings.len())));
            for (idx, account, bucket, delta, role) in lc::entry_rows(tx) {
                q = q.bind(&tx.id).bind(idx).bind(account).bind(bucket).bind(delta).bind(role);
            }
            q.execute(&mut *db).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for SqlStore {
    #[tracing::instrument(level = "debug", skip_all, fields(id = %tx.id, kind = %tx.kind))]
    async fn commit(&self, tx: &LedgerTx) -> Result<()> {
        let mut sum: i128 = 0;
        for p in &tx.postings {
            sum = sum.checked_add(p.delta).ok_or_else(|| StoreError::Invalid("postings overflow".into()))?;
            if p.bucket == Bucket::Minted && p.account != MINT_ACCOUNT {
                return Err(StoreError::Invalid("only the mint account has a minted bucket".into()));
            }
        }
        if sum != 0 {
            return Err(StoreError::Invalid(format!("postings of {} sum to {sum}, not zero", tx.id)));
        }
        if let Some(writer) = &self.ledger_writer {
            return writer.commit(tx.clone()).await;
        }
        if self.backend == "postgres" && crate::pg_ledger::commit_alone(&mut *self.pool.acquire().await?, tx).await? {
            return Ok(());
        }
        // Refused on its own (PostgreSQL), or SQLite in memory: in a transaction that says why.
        let mut db = self.begin_write().await?;
        let done = if self.backend == "postgres" { crate::pg_ledger::commit_in(&mut db, tx).await } else { self.commit_in(&mut db, tx).await };
        match done {
            Ok(()) => Ok(db.commit().await?),
            Err(e) => {
                if let Err(rollback) = db.rollback().await {
                    tracing::warn!(%rollback, "rolling back a refused ledger transaction");
                }
                Err(e)
            }
        }
    }

    async fn nonce_used(&self, payer: Address, nonce: &str) -> Result<bool> {
        let held = self.held().await;
        if held.as_ref().is_some_and(|h| h.get().claims_nonce(payer, nonce)) {
            return Ok(true);
        }
        let row = sqlx::query("SELECT 1 AS one FROM payment_nonces WHERE payer = $1 AND nonce = $2")
            .bind(address_text(&payer))
            .bind(nonce.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn balances(&self, account: Address) -> Result<Balances> {
        let held = self.held().await;
        // Held escrows change a payer's available and escrow balances; new ones added after
        // this are not in the database either, so the read stays consistent.
        let delta = held.as_ref().map_or([0, 0], |h| {
            let h = h.get();
            [h.delta(account, Bucket::Available), h.delta(account, Bucket::Escrow)]
        });
        let rows = sqlx::query("SELECT bucket, amount FROM ledger_balances WHERE account = $1")
            .bind(address_text(&account))
            .fetch_all(&self.pool)
            .await?;
        let mut stored = [0i128; 3];
        for r in &rows {
            match r.try_get::<String, _>("bucket")?.parse::<Bucket>()? {
                Bucket::Available => stored[0] = signed(r, "amount")?,
                Bucket::Escrow => stored[1] = signed(r, "amount")?,
                Bucket::Stake => stored[2] = signed(r, "amount")?,
                Bucket::Minted => {}
            }
        }
        Ok(Balances {
            available: with_held(stored[0], delta[0], Bucket::Available)?,
            escrow: with_held(stored[1], delta[1], Bucket::Escrow)?,
            stake: with_held(stored[2], 0, Bucket::Stake)?,
        })
    }

    async fn earnings(&self, account: Address) -> Result<BTreeMap<Role, u128>> {
        let held = self.held().await;
        let rows = sqlx::query("SELECT role, delta FROM ledger_entries WHERE account = $1 AND role IS NOT NULL")
            .bind(address_text(&account))
            .fetch_all(&self.pool)
            .await?;
        let mut found = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("role")?.parse::<Role>()?, amount(r, "delta")?)))
            .collect::<Result<Vec<_>>>()?;
        // Captures answered and not written yet.
        found.extend(held.as_ref().map(|h| h.get().earnings(account)).unwrap_or_default());
        let mut out = BTreeMap::new();
        for (role, v) in found {
            let e = out.entry(role).or_insert(0u128);
            *e = e.checked_add(v).ok_or_else(|| StoreError::Corrupt("earnings overflow".into()))?;
        }
        Ok(out)
    }

    async fn spent(&self, payer: Address) -> Result<u128> {
        use futures::TryStreamExt;
        let held = self.held().await;
        // Streamed: a busy payer's captures are summed without holding them all.
        let mut rows = sqlx::query("SELECT amount, charged FROM payments WHERE payer = $1 AND status = $2")
            .bind(address_text(&payer))
            .bind(PaymentStatus::Captured.to_string())
            .fetch(&self.pool);
        // Captures answered and not written yet.
        let mut total = held.as_ref().map_or(0, |h| h.get().spent(payer));
        while let Some(r) = rows.try_next().await? {
            let charged = match r.try_get::<Option<String>, _>("charged")? {
                Some(c) => c.parse().map_err(|e| StoreError::Corrupt(format!("charged {c:?}: {e}")))?,
                None => amount(&r, "amount")?,
            };
            total = total.checked_add(charged).ok_or_else(|| StoreError::Corrupt("spent overflow".into()))?;
        }
        Ok(total)
    }

    async fn totals(&self) -> Result<LedgerTotals> {
        let held = self.held().await;
        let mut sums: BTreeMap<Bucket, i128> = held_sums(held.as_ref().map(HeldView::get).as_deref());
        let rows = sqlx::query("SELECT bucket, amount FROM ledger_balances").fetch_all(&self.pool).await?;
        for r in &rows {
            let bucket: Bucket = r.try_get::<String, _>("bucket")?.parse()?;
            let e = sums.entry(bucket).or_insert(0);
            *e = e.checked_add(signed(r, "amount")?).ok_or_else(|| StoreError::Corrupt("totals overflow".into()))?;
        }
        let get = |b: Bucket| sums.get(&b).copied().unwrap_or(0);
        let unsigned =
            |v: i128, what: &str| u128::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} total is {v}")));
        Ok(LedgerTotals {
            minted: unsigned(-get(Bucket::Minted), "minted")?,
            available: unsigned(get(Bucket::Available), "available")?,
            escrow: unsigned(get(Bucket::Escrow), "escrow")?,
            stake: unsigned(get(Bucket::Stake), "stake")?,
        })
    }

    async fn payment(&self, request_id: &str) -> Result<Option<PaymentRecord>> {
        let held = self.held().await;
        if let Some(p) = held.as_ref().and_then(|h| h.get().payment(request_id)) {
            return Ok(Some(p));
        }
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE request_id = $1")))
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn audit(&self) -> Result<LedgerAudit> {
        // Closes answered and waiting are written first: the audit counts accounts and
        // negative balances from the database.
        self.flush_ledger().await?;
        // One read transaction: the sums, the escrowed payments and the counts agree (and
        // agree with the escrows the SQLite writer holds).
        let held = self.held().await;
        let snapshot = held.as_ref().map(|h| h.get().clone());
        let mut db = self.pool.begin().await?;
        let rows = sqlx::query("SELECT account, bucket, amount FROM ledger_balances").fetch_all(&mut *db).await?;
        let mut sums: BTreeMap<Bucket, i128> = held_sums(snapshot.as_ref());
        let (mut accounts, mut negative) = (std::collections::BTreeSet::new(), 0u64);
        for r in &rows {
            let bucket: Bucket = r.try_get::<String, _>("bucket")?.parse()?;
            let v = signed(r, "amount")?;
            if bucket != Bucket::Minted && v < 0 {
                negative += 1;
            }
            accounts.insert(r.try_get::<String, _>("account")?);
            let e = sums.entry(bucket).or_insert(0);
            *e = e.checked_add(v).ok_or_else(|| StoreError::Corrupt("totals overflow".into()))?;
        }
        let get = |b: Bucket| u128::try_from(if b == Bucket::Minted { -sums.get(&b).copied().unwrap_or(0) } else { sums.get(&b).copied().unwrap_or(0) });
        let bad = |b: Bucket| StoreError::Corrupt(format!("the {b:?} total is negative"));
        let totals = LedgerTotals {
            minted: get(Bucket::Minted).map_err(|_| bad(Bucket::Minted))?,
            available: get(Bucket::Available).map_err(|_| bad(Bucket::Available))?,
            escrow: get(Bucket::Escrow).map_err(|_| bad(Bucket::Escrow))?,
            stake: get(Bucket::Stake).map_err(|_| bad(Bucket::Stake))?,
        };
        let open = sqlx::query("SELECT amount, created_at FROM payments WHERE status = $1")
            .bind(PaymentStatus::Escrowed.as_str())
            .fetch_all(&mut *db)
            .await?;
        let mut open_amount = 0u128;
        let mut oldest: Option<i64> = None;
        let mut opened = Vec::with_capacity(open.len());
        for r in &open {
            opened.push((amount(r, "amount")?, r.try_get::<i64, _>("created_at")?));
        }
        if let Some(h) = &snapshot {
            opened.extend(h.open().map(|p| (p.amount, p.created_at_ms)));
        }
        for (a, at) in &opened {
            open_amount = open_amount.checked_add(*a).ok_or_else(|| StoreError::Corrupt("escrow overflow".into()))?;
            oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
        }
        let mut payments = BTreeMap::new();
        for r in sqlx::query("SELECT status, COUNT(*) AS n FROM payments GROUP BY status").fetch_all(&mut *db).await? {
            payments.insert(r.try_get::<String, _>("status")?, u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0));
        }
        if let Some(h) = &snapshot {
            for p in h.records() {
                *payments.entry(p.status.as_str().to_owned()).or_insert(0) += 1;
            }
        }
        db.commit().await?;
        drop(held);
        Ok(LedgerAudit {
            totals,
            accounts: accounts.len() as u64,
            negative_balances: negative,
            open_escrows: opened.len() as u64,
            open_escrow_amount: open_amount,
            oldest_open_escrow_ms: oldest,
            payments,
        })
    }

    async fn payment_by_reference(&self, payer: Address, reference: &str) -> Result<Option<(PaymentRecord, Option<KeptAnswer>)>> {
        let held = self.held().await;
        if let Some(found) = held.as_ref().and_then(|h| h.get().by_reference(payer, reference)) {
            return Ok(Some(found));
        }
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS}, a.answer, charged FROM payments LEFT JOIN payment_answers a USING (request_id) \
             WHERE payer = $1 AND reference = $2"
        );
        let Some(row) =
            sqlx::query(AssertSqlSafe(sql)).bind(address_text(&payer)).bind(reference).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let kept = match row.try_get::<Option<String>, _>("answer")? {
            Some(answer) => Some(KeptAnswer { answer, charged: amount(&row, "charged")? }),
            None => None,
        };
        Ok(Some((payment_from_row(&row)?, kept)))
    }

    async fn flush(&self) -> Result<()> {
        self.flush_ledger().await
    }

    async fn forget_answers(&self, before_ms: i64) -> Result<u64> {
        // Answers kept by captures still waiting in memory are written first, so none outlives
        // its window.
        self.flush_ledger().await?;
        let done = sqlx::query(
            "DELETE FROM payment_answers WHERE request_id IN \
             (SELECT request_id FROM payments WHERE settled_at IS NOT NULL AND settled_at < $1)",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn payments_with_status(
        &self,
        status: PaymentStatus,
        gateway: Address,
        before_ms: i64,
    ) -> Result<Vec<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = $1 AND gateway = $2 AND created_at < $3 \
             ORDER BY created_at"
        );
        let held = self.held().await;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(status.as_str())
            .bind(address_text(&gateway))
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut found = rows.iter().map(payment_from_row).collect::<Result<Vec<_>>>()?;
        if let Some(h) = held.as_ref().map(HeldView::get) {
            found.extend(h.records().filter(|p| p.status == status && p.gateway == gateway && p.created_at_ms < before_ms));
            found.sort_by_key(|p| p.created_at_ms);
        }
        Ok(found)
    }

    async fn request_txs(&self, request_id: &str) -> Result<Vec<TxKind>> {
        let held = self.held().await;
        if let Some(txs) = held.as_ref().and_then(|h| h.get().request_txs(request_id)) {
            return Ok(txs);
        }
        let rows = sqlx::query("SELECT kind, created_at FROM ledger_txs WHERE request_id = $1")
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        let mut txs = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("created_at")?, r.try_get::<String, _>("kind")?.parse::<TxKind>()?)))
            .collect::<Result<Vec<_>>>()?;
        // Within one millisecond the escrow still comes first: it opens what the others close.
        txs.sort_by_key(|(at, kind)| (*at, *kind != TxKind::Escrow));
        Ok(txs.into_iter().map(|(_, kind)| kind).collect())
    }

    async fn insert_app(&self, app: &App) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO apps (id, name, owner, markup, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&app.id)
        .bind(&app.name)
        .bind(address_text(&app.owner))
        .bind(app.markup.to_string())
        .bind(app.created_at_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AppExists(app.id.clone()));
        }
        Ok(())
    }

    async fn app(&self, id: &str) -> Result<Option<App>> {
        let row = sqlx::query("SELECT id, name, owner, markup, created_at FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| app_row(&r)).transpose()
    }

    async fn apps_by_owner(&self, owner: Address, limit: usize) -> Result<Vec<App>> {
        let rows = sqlx::query(
            "SELECT id, name, owner, markup, created_at FROM apps WHERE owner = $1 \
             ORDER BY created_at DESC, id LIMIT $2",
        )
        .bind(address_text(&owner))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(app_row).collect()
    }

    async fn insert_session(&self, s: &SpendingSession) -> Result<()> {
        let models = serde_json::to_string(&s.models).map_err(|e| StoreError::Invalid(format!("models: {e}")))?;
        let done = sqlx::query(
            "INSERT INTO spending_sessions (id, token_hash, payer, max_total, spent, expires_at, models, nonce, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.token_hash)
        .bind(address_text(&s.payer))
        .bind(s.max_total.to_string())
        .bind(s.spent.to_string())
        .bind(s.expires_at)
        .bind(models)
        .bind(s.nonce.to_lowercase())
        .bind(s.created_at_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NonceUsed { payer: s.payer, nonce: s.nonce.clone() });
        }
        Ok(())
    }

    async fn session_by_token(&self, token_hash: &str) -> Result<Option<SpendingSession>> {
        let row = sqlx::query(
            "SELECT id, token_hash, payer, max_total, spent, expires_at, models, nonce, created_at \
             FROM spending_sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            let spent = amount(&r, "spent")?
                // Read after the row, without waiting for a commit in progress (this is on every
                // session-paid request): an escrow written at this very instant may be missed.
                // The budget check itself runs on the writer, exactly.
                .checked_add(self.ledger_writer.as_ref().map_or(0, |w| w.peek().session_spent(&id)))
                .ok_or_else(|| StoreError::Corrupt("session spent overflows".into()))?;
            Ok(SpendingSession {
                id,
                token_hash: r.try_get("token_hash")?,
                payer: parse_address(&r.try_get::<String, _>("payer")?)?,
                max_total: amount(&r, "max_total")?,
                spent,
                expires_at: r.try_get("expires_at")?,
                models: serde_json::from_str(&r.try_get::<String, _>("models")?)
                    .map_err(|e| StoreError::Corrupt(format!("session models: {e}")))?,
                nonce: r.try_get("nonce")?,
                created_at_ms: r.try_get("created_at")?,
            })
        })
        .transpose()
    }
}

const PAYMENT_COLUMNS: &str = "request_id, payer, amount, quote, model, app, gateway, method, reference, status, \
     input_hash, output_hash, reason, escrow_tx, settle_tx, created_at, settled_at";

fn app_row(r: &AnyRow) -> Result<App> {
    Ok(App {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        owner: parse_address(&r.try_get::<String, _>("owner")?)?,
        markup: amount(r, "markup")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

fn payment_from_row(r: &AnyRow) -> Result<PaymentRecord> {
    Ok(PaymentRecord {
        request_id: r.try_get("request_id")?,
        payer: parse_address(&r.try_get::<String, _>("payer")?)?,
        amount: amount(r, "amount")?,
        quote: r.try_get("quote")?,
        model: r.try_get("model")?,
        app: r.try_get("app")?,
        gateway: parse_address(&r.try_get::<String, _>("gateway")?)?,
        method: r.try_get("method")?,
        reference: r.try_get("reference")?,
        status: r.try_get::<String, _>("status")?.parse()?,
        input_hash: r.try_get("input_hash")?,
        output_hash: r.try_get("output_hash")?,
        reason: r.try_get("reason")?,
        escrow_tx: r.try_get("escrow_tx")?,
        settle_tx: r.try_get("settle_tx")?,
        created_at_ms: r.try_get("created_at")?,
        settled_at_ms: r.try_get("settled_at")?,
    })
}

fn amount(r: &AnyRow, col: &str) -> Result<u128> {
    let s: String = r.try_get(col)?;
    s.parse().map_err(|e| StoreError::Corrupt(format!("{col} {s:?}: {e}")))
}

fn signed(r: &AnyRow, col: &str) -> Result<i128> {
    let s: String = r.try_get(col)?;
    s.parse().map_err(|e| StoreError::Corrupt(format!("{col} {s:?}: {e}")))
}

/// A balance read from the database plus what the held escrows change of it.
fn with_held(stored: i128, held: i128, bucket: Bucket) -> Result<u128> {
    let v = stored.checked_add(held).ok_or_else(|| StoreError::Corrupt("balance overflow".into()))?;
    u128::try_from(v).map_err(|_| StoreError::Corrupt(format!("a {bucket} balance of {v}")))
}

/// The starting sums per bucket: what the held escrows change (nothing on other databases).
fn held_sums(held: Option<&Held>) -> BTreeMap<Bucket, i128> {
    let Some(h) = held else { return BTreeMap::new() };
    [Bucket::Available, Bucket::Escrow].into_iter().map(|b| (b, h.bucket_delta(b))).collect()
}
