//! A [`LedgerTx`] on PostgreSQL in one statement, on its own: one round trip to the server,
//! not eight.
//!
//! Why: PostgreSQL is where several gateways share one ledger, so each transaction row-locks the
//! balances it moves, and every payment moves the same few (the payer's, the operator's, the
//! protocol's). A balance stays locked from the statement that locks it to the COMMIT. With a
//! statement per table, that was four round trips, and concurrent payments queued behind each
//! other for all of them, and for the gateway's turn to send the next statement on a busy
//! machine. Here the statement is its own transaction: the balances stay locked while the
//! server runs it, and no longer.
//!
//! The statement is one `WITH` of data-modifying parts, the same statements `ledger_commit`
//! has for the other executors, each renumbered after the parameters before it:
//! - `t`: the ledger row; `n`: the nonce claim; `p`: the payment opened or closed; `r`: the
//!   receipt kept with a capture; `e`: every leg;
//! - `b`: every balance that moves, created at zero or moved in place by PostgreSQL's
//!   `numeric` (amounts are u128 decimal text) in one upsert, in lock order
//!   ([`lc::changes`]), returning the amounts after.
//!
//! The one row it returns says whether the nonce was claimed, whether the payment changed, and
//! every balance (and a session's budget) after. Its last column is a guard: the same checks in
//! SQL, `1 / 0` when any fails, which aborts the statement and writes nothing
//! ([`commit_alone`]). Refusals are rare (a nonce reused, a balance short), so only then does
//! the caller run the statement again, unguarded, in a BEGIN/COMMIT of its own ([`commit_in`]):
//! the checks in Rust find the refusal from the row (the errors are those of the other
//! executors) and the caller rolls back. If the state changed in between and nothing is
//! refused the second time, that run commits: the transaction applied a moment later.

use std::collections::HashMap;
use std::fmt::Write;

use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::{
    Bucket, LedgerTx, PaymentChange, PaymentStatus, Result, StoreError, ledger::MINT_ACCOUNT, ledger_commit as lc, sql::address_text,
};

/// One value bound to the statement.
enum Arg {
    Text(Option<String>),
    Int(i64),
}

/// The statement as it is built: its parts and their parameters, in order.
#[derive(Default)]
struct Statement {
    parts: Vec<String>,
    args: Vec<Arg>,
}

impl Statement {
    /// Adds `sql` (placeholders `$1..$n`, each once, in order) as the part `name`, its
    /// placeholders renumbered after those already bound.
    fn part(&mut self, name: &str, sql: &str, args: impl IntoIterator<Item = Arg>) {
        let offset = self.args.len();
        self.args.extend(args);
        self.parts.push(format!("{name} AS ({})", shift(sql, offset)));
        debug_assert_eq!(sql.matches('$').count(), self.args.len() - offset, "{name}: one argument per placeholder");
    }
}

/// `sql` with every placeholder `$k` made `$(k + by)`.
fn shift(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let k: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        let _ = write!(out, "${}", k + by);
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

fn text(s: impl Into<String>) -> Arg {
    Arg::Text(Some(s.into()))
}

fn opt(s: Option<impl Into<String>>) -> Arg {
    Arg::Text(s.map(Into::into))
}

/// A session's spend applied in place (bound: amount, released, id), returning the row after;
/// nothing when there is no such session.
const SPEND_SESSION_SQL: &str = "UPDATE spending_sessions SET spent = (spent::numeric + $1::numeric - $2::numeric)::text \
     WHERE id = $3 RETURNING spent, max_total, expires_at";

/// Balances locked, created at zero when missing, and moved by the deltas bound as
/// (account, bucket, delta) per balance, returning each after.
fn move_balances_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    format!(
        "INSERT INTO ledger_balances (account, bucket, amount) VALUES {} ON CONFLICT (account, bucket) DO UPDATE \
         SET amount = (ledger_balances.amount::numeric + EXCLUDED.amount::numeric)::text RETURNING account, bucket, amount",
        rows.join(", ")
    )
}

/// The SQLSTATE of the guard's refusal (`division_by_zero`): nothing else in the statement divides.
const GUARD_REFUSED: &str = "22012";

/// i128's bound: a balance at or beyond it overflowed.
const I128_BOUND: &str = "170141183460469231731687303715884105728";

/// Commits `tx` as one statement on its own (PostgreSQL's implicit transaction), guarded:
/// `Ok(false)` when it would be refused, and then nothing of it is written. The caller learns
/// why from [`commit_in`] in a transaction of its own.
pub(crate) async fn commit_alone(db: &mut AnyConnection, tx: &LedgerTx) -> Result<bool> {
    match run(db, tx, true).await {
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.code().as_deref() == Some(GUARD_REFUSED) => Ok(false),
        Ok(()) => Ok(true),
        // The statement failed: nothing of it is written.
        Err(e @ StoreError::Database(_)) => Err(e),
        // Written, yet the checks refuse it: the guard and the checks disagree (a bug).
        Err(refused) => Err(StoreError::Corrupt(format!("{} was committed although its checks refuse it: {refused}", tx.id))),
    }
}

/// Applies `tx` inside the open PostgreSQL transaction `db`; on a refusal, says why (the caller
/// rolls back).
pub(crate) async fn commit_in(db: &mut AnyConnection, tx: &LedgerTx) -> Result<()> {
    run(db, tx, false).await
}

/// The statement, and the checks of what it returned. `guarded`: a refusal aborts the statement
/// itself (a division by zero in the row it returns), so it can run without a transaction
/// around it.
async fn run(db: &mut AnyConnection, tx: &LedgerTx, guarded: bool) -> Result<()> {
    let mut st = Statement::default();
    st.part("t", lc::INSERT_TX, [text(&tx.id), text(tx.kind.as_str()), opt(lc::request_id(tx)), text(&tx.memo), Arg::Int(tx.at_ms)]);
    if let Some(n) = &tx.nonce {
        let claim = format!("{} RETURNING 1", lc::CLAIM_NONCE);
        st.part("n", &claim, [text(address_text(&n.payer)), text(n.nonce.to_lowercase()), text(&tx.id), Arg::Int(tx.at_ms)]);
    }
    match &tx.payment {
        Some(PaymentChange::Open(p)) => {
            let open = format!("{} RETURNING 1", lc::OPEN_PAYMENT);
            st.part(
                "p",
                &open,
                [
                    text(&p.request_id),
                    text(address_text(&p.payer)),
                    text(p.amount.to_string()),
                    text(&p.quote),
                    text(&p.model),
                    opt(p.app.clone()),
                    text(address_text(&p.gateway)),
                    text(&p.method),
                    text(&p.reference),
                    text(PaymentStatus::Escrowed.as_str()),
                    text(&p.input_hash),
                    text(&tx.id),
                    Arg::Int(tx.at_ms),
                ],
            );
        }
        Some(PaymentChange::Close { request_id, to, output_hash, reason, kept }) => {
            let close = format!("{} RETURNING 1", lc::CLOSE_PAYMENT);
            st.part(
                "p",
                &close,
                [
                    text(to.as_str()),
                    opt(output_hash.clone()),
                    opt(reason.clone()),
                    text(&tx.id),
                    Arg::Int(tx.at_ms),
                    opt(kept.as_ref().map(|k| k.charged.to_string())),
                    text(request_id),
                    text(PaymentStatus::Escrowed.as_str()),
                ],
            );
            if let Some(k) = kept {
                st.part("a", lc::INSERT_ANSWER, [text(request_id), text(&k.answer)]);
                let r = &k.receipt;
                st.part(
                    "r",
                    lc::INSERT_RECEIPT,
                    [text(&r.request_id), text(address_text(&r.node)), text(&r.digest), text(&r.body), Arg::Int(r.created_at_ms)],
                );
            }
        }
        None => {}
    }
    if let Some(spend) = &tx.session_spend {
        st.part("s", SPEND_SESSION_SQL, [text(spend.amount.to_string()), text(spend.released.to_string()), text(&spend.id)]);
    }
    if !tx.postings.is_empty() {
        let legs: Vec<Arg> = lc::entry_rows(tx)
            .flat_map(|(idx, account, bucket, delta, role)| {
                [text(&tx.id), Arg::Int(idx), text(account), text(bucket), text(delta), opt(role)]
            })
            .collect();
        st.part("e", &lc::entries_sql(tx.postings.len()), legs);
    }
    let changes: Vec<lc::Change> = lc::changes(tx)?.into_iter().filter(|c| c.delta != 0).collect();
    if !changes.is_empty() {
        let deltas: Vec<Arg> =
            changes.iter().flat_map(|c| [text(&c.account_text), text(c.bucket.as_str()), text(c.delta.to_string())]).collect();
        st.part("b", &move_balances_sql(changes.len()), deltas);
    }
    // Rows the nonce claim and the payment change wrote (1 when the transaction has none).
    let count = |present: bool, name: &str| if present { format!("(SELECT count(*) FROM {name})") } else { "1".into() };
    let balances = if changes.is_empty() {
        "NULL".to_owned()
    } else {
        "(SELECT string_agg(account || ' ' || bucket || ' ' || amount, ',') FROM b)".to_owned()
    };
    let session = if tx.session_spend.is_some() {
        "(SELECT spent || ' ' || max_total || ' ' || expires_at FROM s)"
    } else {
        "NULL"
    };
    // What the Rust checks below refuse, in SQL. Only the mint's address and bucket are written
    // into the text; every other value is a parameter.
    let mut ok = Vec::new();
    if tx.nonce.is_some() {
        ok.push("(SELECT count(*) FROM n) = 1".to_owned());
    }
    if tx.payment.is_some() {
        ok.push("(SELECT count(*) FROM p) = 1".to_owned());
    }
    if let (Some(spend), true) = (&tx.session_spend, guarded) {
        // Parameters, so the text (and PostgreSQL's prepared statement) is the same every time.
        st.args.push(text(spend.amount.to_string()));
        st.args.push(Arg::Int(tx.at_ms));
        let (amount, at) = (st.args.len() - 1, st.args.len());
        ok.push(format!(
            "EXISTS (SELECT 1 FROM s WHERE spent::numeric - ${amount}::numeric >= 0 \
             AND (${amount}::numeric = 0 OR (spent::numeric <= max_total::numeric AND ${at}::bigint < expires_at * 1000)))"
        ));
    }
    if !changes.is_empty() {
        ok.push(format!(
            "NOT EXISTS (SELECT 1 FROM b WHERE (amount::numeric < 0 AND NOT (account = '{}' AND bucket = '{}')) \
             OR abs(amount::numeric) >= {I128_BOUND})",
            address_text(&MINT_ACCOUNT),
            Bucket::Minted.as_str()
        ));
    }
    let guard = if guarded && !ok.is_empty() { format!("1 / (CASE WHEN {} THEN 1 ELSE 0 END)", ok.join(" AND ")) } else { "1".into() };
    let sql = format!(
        "WITH {} SELECT {}::bigint AS claimed, {}::bigint AS changed, {session}::text AS session, {balances}::text AS balances, \
         {guard} AS ok",
        st.parts.join(", "),
        count(tx.nonce.is_some(), "n"),
        count(tx.payment.is_some(), "p")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for a in st.args {
        q = match a {
            Arg::Text(s) => q.bind(s),
            Arg::Int(i) => q.bind(i),
        };
    }
    let row = q.fetch_one(&mut *db).await?;

    if row.try_get::<i64, _>("claimed")? == 0 {
        let n = tx.nonce.as_ref().ok_or_else(|| StoreError::Corrupt("a nonce claim without a nonce".into()))?;
        return Err(StoreError::NonceUsed { payer: n.payer, nonce: n.nonce.clone() });
    }
    if row.try_get::<i64, _>("changed")? == 0 {
        return Err(match &tx.payment {
            Some(PaymentChange::Open(p)) => lc::opened_twice(&p.request_id),
            Some(PaymentChange::Close { request_id, .. }) => lc::not_escrowed_in(db, request_id).await?,
            None => StoreError::Corrupt("a payment change without a payment".into()),
        });
    }
    if let Some(spend) = &tx.session_spend {
        // The budget as it was, from the row after: the check is the other executors' own.
        let found = row.try_get::<Option<String>, _>("session")?;
        let before = found
            .as_deref()
            .map(|s| {
                let mut it = s.splitn(3, ' ');
                let (spent, max, expires) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
                let corrupt = |what: &str| StoreError::Corrupt(format!("session {} {what}: {s:?}", spend.id));
                let spent: i128 = spent.parse().map_err(|_| corrupt("spent"))?;
                let before = i128::try_from(spend.amount)
                    .ok()
                    .zip(i128::try_from(spend.released).ok())
                    .and_then(|(amount, released)| spent.checked_sub(amount)?.checked_add(released))
                    .ok_or_else(|| corrupt("spent"))?;
                Ok::<_, StoreError>((before.to_string(), max.to_owned(), expires.parse::<i64>().map_err(|_| corrupt("expiry"))?))
            })
            .transpose()?;
        lc::session_after(spend, before, tx.at_ms)?;
    }
    if let Some(after) = row.try_get::<Option<String>, _>("balances")? {
        let after: HashMap<(&str, &str), &str> = after
            .split(',')
            .filter_map(|b| {
                let mut it = b.splitn(3, ' ');
                Some(((it.next()?, it.next()?), it.next()?))
            })
            .collect();
        for c in &changes {
            let text = after.get(&(c.account_text.as_str(), c.bucket.as_str())).ok_or_else(|| {
                StoreError::Corrupt(format!("the balance upsert did not return {} {}", c.account_text, c.bucket))
            })?;
            // Beyond i128 only when a delta overflowed it.
            let now: i128 = text.parse().map_err(|_| StoreError::Invalid(format!("balance overflows: {text}")))?;
            if now < 0 && !c.may_go_negative() {
                let before = now.checked_sub(c.delta).ok_or_else(|| StoreError::Invalid("balance overflows".into()))?;
                return Err(c.insufficient(before));
            }
        }
    }
    Ok(())
}
