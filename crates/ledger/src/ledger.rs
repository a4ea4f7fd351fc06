use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use verinet_primitives::Address;
use verinet_store::{
    Balances, Bucket, Kept, LedgerStore, LedgerTotals, LedgerTx, MINT_ACCOUNT, NewPayment, NonceClaim, PaymentChange,
    PaymentStatus, Posting, Role, SessionSpend, TxKind,
};

use crate::{LedgerError, Quote, Result};

/// The money service: builds balanced transactions and commits each atomically.
///
/// Every public method is one [`LedgerTx`]; a refusal (insufficient funds, nonce reused, request
/// already settled) changes nothing. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    /// Open sessions' terms by token hash, as read once (see [`Ledger::session`]).
    sessions: Arc<Mutex<HashMap<String, Arc<SessionTerms>>>>,
}

/// What a spending session's bearer token stands for: the fields fixed when it opens. What it
/// has spent, its cap and its expiry are checked by the store at each escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTerms {
    /// Session id.
    pub id: String,
    /// Who pays.
    pub payer: Address,
    /// Allowed model names or ids; empty means any.
    pub models: Vec<String>,
}

/// The most sessions [`Ledger::session`] keeps; past it the memory starts over.
const SESSIONS_KEPT: usize = 10_000;

/// A paid request held in escrow: what the capture or refund needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escrow {
    /// Request id.
    pub request_id: String,
    /// Who paid.
    pub payer: Address,
    /// The quote the payment covers; the capture splits it.
    pub quote: Quote,
    /// The escrow transaction id.
    pub tx_id: String,
    /// The spending session it was debited from, if paid by one (its budget gets back what
    /// is refunded).
    pub session: Option<String>,
}

/// What `GET /v1/accounts/{address}` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account.
    pub address: Address,
    /// Balances.
    pub balances: Balances,
    /// Earnings by role since the ledger began.
    pub earnings: BTreeMap<Role, u128>,
    /// What it has paid for calls (captured payments).
    pub spent: u128,
}

/// What a capture keeps for its payer: the answer as it will be sent and its receipt, stored in
/// the capture's own transaction (see [`verinet_store::Kept`]). The transaction id is chosen by
/// the caller ([`new_tx_id`]) because the answer states it.
#[derive(Debug, Clone)]
pub struct Keep {
    /// The capture's transaction id.
    pub tx_id: String,
    /// The response body, JSON.
    pub answer: String,
    /// The receipt as this node stores it.
    pub receipt: verinet_store::ReceiptRecord,
}

impl Keep {
    fn into_kept(self, tx_id: &mut String, charged: u128) -> Box<Kept> {
        *tx_id = self.tx_id;
        Box::new(Kept { answer: self.answer, charged, receipt: self.receipt })
    }
}

/// A fresh transaction id: `0x` + 64 hex (the shape of an EVM transaction hash, which x402
/// settlement responses carry), time-ordered so the ledger's indexes on it grow at one end
/// ([`verinet_primitives::time_ordered_id`]).
pub fn new_tx_id() -> String {
    format!("0x{}", verinet_primitives::time_ordered_id(32))
}


fn signed(amount: u128) -> Result<i128> {
    i128::try_from(amount).map_err(|_| LedgerError::InvalidAmount(format!("{amount} is out of range")))
}

fn positive(amount: u128, what: &str) -> Result<i128> {
    if amount == 0 {
        return Err(LedgerError::InvalidAmount(format!("{what} must be positive")));
    }
    signed(amount)
}

/// Moves `amount` of `who`'s available balance into its stake.
fn stake_tx(who: Address, amount: u128) -> Result<LedgerTx> {
    let a = positive(amount, "stake")?;
    Ok(tx(
        TxKind::Stake,
        vec![Posting::new(who, Bucket::Available, -a), Posting::new(who, Bucket::Stake, a)],
        format!("stake {amount}"),
    ))
}

fn tx(kind: TxKind, postings: Vec<Posting>, memo: String) -> LedgerTx {
    LedgerTx {
        id: new_tx_id(),
        kind,
        postings,
        memo,
        at_ms: verinet_primitives::unix_ms(),
        nonce: None,
        payment: None,
        session_spend: None,
    }
}

/// How an escrow is authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaidBy {
    /// An EIP-3009 authorization whose nonce is claimed with the escrow.
    Authorization {
        /// `0x` + 64 hex.
        nonce: String,
    },
    /// A spending session whose budget is debited with the escrow.
    Session {
        /// Session id.
        id: String,
    },
}

/// A request to hold `quote.total` of `payer` for `request_id`.
#[derive(Debug, Clone)]
pub struct EscrowRequest<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// Who pays.
    pub payer: Address,
    /// The price.
    pub quote: &'a Quote,
    /// Model id.
    pub model: &'a str,
    /// App id.
    pub app: Option<&'a str>,
    /// The gateway taking the payment.
    pub gateway: Address,
    /// Canonical input hash.
    pub input_hash: &'a str,
    /// The authorisation.
    pub paid_by: PaidBy,
}

impl Ledger {
    /// A ledger over `store`.
    pub fn new(store: Arc<dyn LedgerStore>) -> Self {
        Self { store, sessions: Arc::default() }
    }

    /// The session whose bearer token hashes to `token_hash`, if one is open: read from the
    /// store once, then kept in memory (its terms never change; a token not found is not kept,
    /// so a session opened on another gateway is found at its first use). A paid call by
    /// session then reads nothing before its escrow, which checks the budget and expiry.
    pub async fn session(&self, token_hash: &str) -> Result<Option<Arc<SessionTerms>>> {
        if let Some(t) = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).get(token_hash).cloned() {
            return Ok(Some(t));
        }
        let Some(s) = self.store.session_by_token(token_hash).await? else { return Ok(None) };
        let terms = Arc::new(SessionTerms { id: s.id, payer: s.payer, models: s.models });
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= SESSIONS_KEPT {
            sessions.clear();
        }
        sessions.insert(token_hash.to_owned(), terms.clone());
        Ok(Some(terms))
    }

    /// The store below (reads, tests).
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    /// New money for `to` (devnet faucet). Returns the transaction id.
    pub async fn mint(&self, to: Address, amount: u128) -> Result<String> {
        let a = positive(amount, "mint amount")?;
        let t = tx(
            TxKind::Mint,
            vec![Posting::new(MINT_ACCOUNT, Bucket::Minted, -a), Posting::new(to, Bucket::Available, a)],
            format!("faucet {amount} to {to}"),
        );
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Holds the quoted total of the payer in escrow, records the request and claims the nonce
    /// (or debits the session), all in one transaction.
    pub async fn escrow(&self, r: EscrowRequest<'_>) -> Result<Escrow> {
        let a = positive(r.quote.total, "price")?;
        let quote = serde_json::to_string(r.quote).map_err(|e| LedgerError::InvalidAmount(e.to_string()))?;
        let mut t = tx(
            TxKind::Escrow,
            vec![Posting::new(r.payer, Bucket::Available, -a), Posting::new(r.payer, Bucket::Escrow, a)],
            format!("escrow for request {}", r.request_id),
        );
        let (method, reference) = match &r.paid_by {
            PaidBy::Authorization { nonce } => {
                t.nonce = Some(NonceClaim { payer: r.payer, nonce: nonce.clone() });
                // As the nonce is claimed: one nonce whatever the case of its hex digits.
                ("x402", nonce.to_lowercase())
            }
            PaidBy::Session { id } => {
                t.session_spend = Some(SessionSpend { id: id.clone(), amount: r.quote.total, released: 0 });
                ("session", id.clone())
            }
        };
        t.payment = Some(PaymentChange::Open(NewPayment {
            request_id: r.request_id.to_owned(),
            payer: r.payer,
            amount: r.quote.total,
            quote,
            model: r.model.to_owned(),
            app: r.app.map(str::to_owned),
            gateway: r.gateway,
            method: method.into(),
            reference,
            input_hash: r.input_hash.to_owned(),
        }));
        self.store.commit(&t).await?;
        let session = match r.paid_by {
            PaidBy::Session { id } => Some(id),
            PaidBy::Authorization { .. } => None,
        };
        Ok(Escrow { request_id: r.request_id.to_owned(), payer: r.payer, quote: r.quote.clone(), tx_id: t.id, session })
    }

    /// Pays the quote's split out of escrow and records the result hash: the request produced a
    /// result. Refused if the request is not escrowed (captured or refunded before).
    ///
    /// With `keep`, the answer and its receipt commit with the capture under `keep.tx_id`.
    pub async fn capture(&self, e: &Escrow, output_hash: &str, keep: Option<Keep>) -> Result<String> {
        let total = signed(e.quote.total)?;
        let mut postings = vec![Posting::new(e.payer, Bucket::Escrow, -total)];
        for (to, role, amount) in e.quote.split() {
            postings.push(Posting::earned(to, role, signed(amount)?));
        }
        let mut t = tx(TxKind::Capture, postings, format!("capture for request {}", e.request_id));
        t.payment = Some(PaymentChange::Close {
            request_id: e.request_id.clone(),
            to: PaymentStatus::Captured,
            output_hash: Some(output_hash.to_owned()),
            reason: None,
            kept: keep.map(|k| k.into_kept(&mut t.id, e.quote.total)),
        });
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Pays `used` out of an escrow of a larger maximum (a call priced by what it used:
    /// tokens) and returns the rest to the payer, in one transaction: the escrow is emptied,
    /// each payee gets its share of `used`, the payer's available balance (and the session's
    /// budget) gets `maximum - used`. Refused if `used` exceeds the escrowed quote in any
    /// part, or the request is not escrowed.
    /// With `keep`, the answer and its receipt commit with the capture under `keep.tx_id`.
    pub async fn capture_used(&self, e: &Escrow, used: &Quote, output_hash: &str, memo: &str, keep: Option<Keep>) -> Result<String> {
        let max = &e.quote;
        let within = used.royalty <= max.royalty
            && used.compute <= max.compute
            && used.verification <= max.verification
            && used.protocol <= max.protocol
            && used.markup <= max.markup
            && used.total <= max.total
            && used.payees == max.payees;
        if !within {
            return Err(LedgerError::InvalidAmount(format!(
                "request {}: the charge {} exceeds the authorised maximum {} (or names other payees)",
                e.request_id, used.total, max.total
            )));
        }
        let rest = max.total - used.total;
        let mut postings = vec![Posting::new(e.payer, Bucket::Escrow, -signed(max.total)?)];
        for (to, role, amount) in used.split() {
            postings.push(Posting::earned(to, role, signed(amount)?));
        }
        if rest > 0 {
            postings.push(Posting::new(e.payer, Bucket::Available, signed(rest)?));
        }
        let mut t = tx(
            TxKind::Capture,
            postings,
            format!("capture {} of {} for request {}: {memo}", used.total, max.total, e.request_id),
        );
        t.payment = Some(PaymentChange::Close {
            request_id: e.request_id.clone(),
            to: PaymentStatus::Captured,
            output_hash: Some(output_hash.to_owned()),
            reason: Some(memo.to_owned()),
            kept: keep.map(|k| k.into_kept(&mut t.id, used.total)),
        });
        t.session_spend = e.session.clone().filter(|_| rest > 0).map(|id| SessionSpend { id, amount: 0, released: rest });
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Returns the escrow to the payer: the request produced no result.
    pub async fn refund(&self, request_id: &str, payer: Address, amount: u128, reason: &str) -> Result<String> {
        self.refund_to(request_id, payer, amount, None, reason).await
    }

    /// [`Ledger::refund`], giving the amount back to the spending session's budget too when
    /// the escrow was paid by one.
    pub async fn refund_to(&self, request_id: &str, payer: Address, amount: u128, session: Option<&str>, reason: &str) -> Result<String> {
        let a = signed(amount)?;
        let mut t = tx(
            TxKind::Refund,
            vec![Posting::new(payer, Bucket::Escrow, -a), Posting::new(payer, Bucket::Available, a)],
            format!("refund for request {request_id}: {reason}"),
        );
        t.session_spend = session.map(|id| SessionSpend { id: id.to_owned(), amount: 0, released: amount });
        t.payment = Some(PaymentChange::Close {
            request_id: request_id.to_owned(),
            to: PaymentStatus::Refunded,
            output_hash: None,
            reason: Some(reason.to_owned()),
            kept: None,
        });
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Moves `amount` from `from` to `to` claiming `nonce` (x402 facilitator settle).
    pub async fn transfer(&self, from: Address, to: Address, amount: u128, nonce: &str) -> Result<String> {
        let a = positive(amount, "amount")?;
        let credit = Posting::earned(to, Role::Payee, a);
        self.transfer_once(from, credit, format!("x402 settle {amount} from {from} to {to}"), nonce.to_owned()).await
    }

    /// `from`'s own transfer of `amount` available to `to` (`POST /v1/transfers`), claiming
    /// `from`'s `nonce` with it so a signed request is applied once, on any gateway.
    pub async fn send(&self, from: Address, to: Address, amount: u128, nonce: &str) -> Result<String> {
        let a = positive(amount, "amount")?;
        let credit = Posting::new(to, Bucket::Available, a);
        self.transfer_once(from, credit, format!("transfer {amount} from {from} to {to}"), format!("transfer:{nonce}")).await
    }

    /// Moves `credit`'s amount out of `from`'s available balance into `credit`, claiming
    /// `from`'s `nonce` in the same transaction.
    async fn transfer_once(&self, from: Address, credit: Posting, description: String, nonce: String) -> Result<String> {
        let mut t = tx(TxKind::Transfer, vec![Posting::new(from, Bucket::Available, -credit.delta), credit], description);
        t.nonce = Some(NonceClaim { payer: from, nonce });
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Bonds `amount` of `who`'s balance as stake.
    pub async fn stake(&self, who: Address, amount: u128) -> Result<String> {
        let t = stake_tx(who, amount)?;
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// [`Ledger::stake`] claiming `who`'s `nonce` with it, so a signed stake request cannot be
    /// replayed (on any gateway sharing the ledger).
    pub async fn stake_once(&self, who: Address, amount: u128, nonce: &str) -> Result<String> {
        let mut t = stake_tx(who, amount)?;
        t.nonce = Some(NonceClaim { payer: who, nonce: nonce.to_owned() });
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Releases `amount` of `who`'s stake.
    pub async fn unstake(&self, who: Address, amount: u128) -> Result<String> {
        let a = positive(amount, "unstake")?;
        let t = tx(
            TxKind::Unstake,
            vec![Posting::new(who, Bucket::Stake, -a), Posting::new(who, Bucket::Available, a)],
            format!("unstake {amount}"),
        );
        self.store.commit(&t).await?;
        Ok(t.id)
    }

    /// Slashes up to `amount` of `cheater`'s stake (all of it if it has less): `validator_bps`
    /// of what is taken to `validator` (role `validator`), the rest to `protocol`. Returns what
    /// was slashed (0 if there was no stake; then nothing is committed).
    pub async fn slash(
        &self,
        cheater: Address,
        amount: u128,
        validator: Address,
        validator_bps: u32,
        protocol: Address,
        request_id: &str,
    ) -> Result<u128> {
        let stake = self.store.balances(cheater).await?.stake;
        let take = amount.min(stake);
        if take == 0 {
            return Ok(0);
        }
        let to_validator = take.saturating_mul(u128::from(validator_bps.min(10_000))) / 10_000;
        let mut postings = vec![Posting::new(cheater, Bucket::Stake, -signed(take)?)];
        if to_validator > 0 {
            postings.push(Posting::earned(validator, Role::Validator, signed(to_validator)?));
        }
        if take > to_validator {
            postings.push(Posting::earned(protocol, Role::Protocol, signed(take - to_validator)?));
        }
        let t = tx(TxKind::Slash, postings, format!("slash {take} of {cheater} for request {request_id}"));
        self.store.commit(&t).await?;
        Ok(take)
    }

    /// Balances and earnings of an account.
    pub async fn account(&self, address: Address) -> Result<AccountView> {
        Ok(AccountView {
            address,
            balances: self.store.balances(address).await?,
            earnings: self.store.earnings(address).await?,
            spent: self.store.spent(address).await?,
        })
    }

    /// Sums over every account (the invariant check).
    pub async fn totals(&self) -> Result<LedgerTotals> {
        Ok(self.store.totals().await?)
    }

    /// Refunds this gateway's escrows opened before `before_ms` that never settled: their
    /// requests died with a crashed process and produced no result the payer received.
    /// Returns how many were refunded.
    pub async fn recover(&self, gateway: Address, before_ms: i64) -> Result<usize> {
        let stale = self.store.payments_with_status(PaymentStatus::Escrowed, gateway, before_ms).await?;
        let mut n = 0;
        for p in stale {
            let session = (p.method == "session").then_some(p.reference.as_str());
            match self.refund_to(&p.request_id, p.payer, p.amount, session, "node restarted before a result").await {
                Ok(_) => n += 1,
                // Closed meanwhile (another recovery): nothing to do.
                Err(LedgerError::Store(verinet_store::StoreError::PaymentState { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        if n > 0 {
            warn!(refunded = n, "refunded escrows left by an earlier run");
        } else {
            info!("no stale escrows");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use verinet_store::{SpendingSession, SqlStore};

    /// A session is read once and kept; a token not found is asked again (the session may open
    /// later, or on another gateway).
    #[tokio::test]
    async fn a_session_is_read_once_and_an_unknown_token_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        let store: Arc<dyn LedgerStore> = Arc::new(SqlStore::connect(&url).await.unwrap());
        let ledger = Ledger::new(store.clone());
        assert!(ledger.session("h1").await.unwrap().is_none());
        let payer = Address::repeat_byte(7);
        store
            .insert_session(&SpendingSession {
                id: "s1".into(),
                token_hash: "h1".into(),
                payer,
                max_total: 10,
                spent: 0,
                expires_at: i64::MAX / 1000,
                models: vec!["digits".into()],
                nonce: "n1".into(),
                created_at_ms: 1,
            })
            .await
            .unwrap();
        let first = ledger.session("h1").await.unwrap().unwrap();
        assert_eq!(*first, SessionTerms { id: "s1".into(), payer, models: vec!["digits".into()] });
        let again = ledger.session("h1").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second lookup read the store again");
        assert!(ledger.clone().session("h2").await.unwrap().is_none());
    }
}
