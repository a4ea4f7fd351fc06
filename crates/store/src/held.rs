//! Escrows held in the SQLite ledger writer's memory between their opening and their close.
//!
//! An escrow on its own moves no money that anyone can observe: the payer's funds are set
//! aside for a request that has not answered yet. So on a SQLite file the writer thread does
//! not write it: it checks it (the nonce unclaimed, the request new, the session's budget and
//! the payer's balance, both net of the escrows already held) and keeps it here. The escrow
//! and its capture (or refund) are then written together, in one database transaction: one
//! commit and one payment row per paid request instead of two commits, an insert and an update.
//!
//! Crash safety is unchanged: an answer is only ever sent after its capture commits, and a
//! process that dies with escrows held loses nothing anyone was owed (no answer was given, no
//! money moved, the authorization's nonce is still unclaimed, so the payer can send it again).
//! The data dir belongs to one process (`verinet.lock`), so this writer is the only one that
//! changes the ledger of its file and what it holds cannot be overtaken by another writer.
//!
//! A node may also answer a close (capture or refund) of a held escrow before writing it
//! (`[payments] capture_flush_ms`): the close is checked, kept here with its escrow, and the
//! pair is written with the next group commit, at most that many milliseconds later. What that
//! trades is in docs/payments.md: a process that dies in between loses the pair, so the payer
//! keeps the money and the nonce and the operator loses the fee; nothing anyone paid is lost.
//!
//! Reads that report escrows or their closes (balances, totals, earnings, spending, the audit,
//! a payment by id or by reference and its kept answer, its receipt, its transactions, a
//! session's spent budget, used nonces) combine the database with the held set. They hold the
//! set's read lock while they read the database, and the writer holds its write lock while it
//! commits and moves escrows out of the set, so a read sees every escrow exactly once.

use std::collections::{HashMap, HashSet};

use verinet_primitives::Address;

use crate::{Bucket, KeptAnswer, LedgerTx, PaymentChange, PaymentRecord, PaymentStatus, ReceiptRecord, Role, StoreError, TxKind};

/// The escrows held, with what the checks of a new one need, indexed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Held {
    /// The escrow transaction of each held request, by request id.
    escrows: HashMap<String, LedgerTx>,
    /// The close answered for a held escrow and not written yet, by request id.
    closes: HashMap<String, LedgerTx>,
    /// The nonces they claim: (payer, lowercase nonce).
    nonces: HashSet<(Address, String)>,
    /// The net change they (and their closes) make to each balance.
    deltas: HashMap<(Address, Bucket), i128>,
    /// What they debit from each spending session, net of what closes release, by session id.
    sessions: HashMap<String, i128>,
}

impl Held {
    /// Holds `tx`, an escrow that opens a payment (checked by the caller).
    pub(crate) fn add(&mut self, tx: LedgerTx) {
        let Some(PaymentChange::Open(p)) = &tx.payment else { return };
        let id = p.request_id.clone();
        self.apply(&tx, 1);
        self.escrows.insert(id, tx);
    }

    /// Keeps `close`, a capture or refund of a held escrow, answered and not written yet.
    /// Refused (and nothing kept) when the escrow is not held or already closed.
    pub(crate) fn close(&mut self, close: LedgerTx) -> Result<(), StoreError> {
        let Some(PaymentChange::Close { request_id, .. }) = &close.payment else {
            return Err(StoreError::Invalid("only a capture or refund closes a held escrow".into()));
        };
        if !self.escrows.contains_key(request_id) {
            return Err(StoreError::not_escrowed(request_id, "absent"));
        }
        if let Some(done) = self.closes.get(request_id) {
            return Err(StoreError::not_escrowed(request_id, closed_status(done).as_str()));
        }
        let id = request_id.clone();
        self.apply(&close, 1);
        self.closes.insert(id, close);
        Ok(())
    }

    /// Adds (`sign` 1) or takes back (-1) what `tx` does to the indexes.
    fn apply(&mut self, tx: &LedgerTx, sign: i128) {
        if let Some(n) = &tx.nonce {
            let key = (n.payer, n.nonce.to_lowercase());
            if sign > 0 {
                self.nonces.insert(key);
            } else {
                self.nonces.remove(&key);
            }
        }
        for posting in &tx.postings {
            let key = (posting.account, posting.bucket);
            let d = self.deltas.entry(key).or_default();
            *d += sign * posting.delta;
            if *d == 0 {
                self.deltas.remove(&key);
            }
        }
        if let Some(s) = &tx.session_spend {
            let net = i128::try_from(s.amount).unwrap_or(i128::MAX).saturating_sub(i128::try_from(s.released).unwrap_or(i128::MAX));
            let spent = self.sessions.entry(s.id.clone()).or_default();
            *spent += sign * net;
            if *spent == 0 {
                self.sessions.remove(&s.id);
            }
        }
    }

    /// Stops holding the escrow of `request_id` and returns it, with its close if one was
    /// answered.
    pub(crate) fn remove(&mut self, request_id: &str) -> Option<(LedgerTx, Option<LedgerTx>)> {
        let tx = self.escrows.remove(request_id)?;
        let close = self.closes.remove(request_id);
        if let Some(c) = &close {
            self.apply(c, -1);
        }
        self.apply(&tx, -1);
        Some((tx, close))
    }

    /// Holds again what [`Held::remove`] returned (its write was rolled back).
    pub(crate) fn restore(&mut self, (escrow, close): (LedgerTx, Option<LedgerTx>)) {
        self.add(escrow);
        if let Some(c) = close {
            // It was closed once from this very state; it closes again.
            let _ = self.close(c);
        }
    }

    /// The held escrow transaction of `request_id`.
    pub(crate) fn escrow(&self, request_id: &str) -> Option<&LedgerTx> {
        self.escrows.get(request_id)
    }

    /// The close answered for the held escrow of `request_id`, not written yet.
    pub(crate) fn answered(&self, request_id: &str) -> Option<&LedgerTx> {
        self.closes.get(request_id)
    }

    /// The held escrows `tx` reaches into, which must be written before it: those of a payer
    /// whose escrow balance it debits, and those of a session whose budget it releases.
    /// (A capture or refund of a held escrow writes that escrow itself; this is for any other
    /// transaction, which sees only the database.)
    pub(crate) fn reached_by(&self, tx: &LedgerTx) -> Vec<String> {
        let payers: HashSet<Address> =
            tx.postings.iter().filter(|p| p.bucket == Bucket::Escrow && p.delta < 0).map(|p| p.account).collect();
        let session = tx.session_spend.as_ref().filter(|s| s.released > 0).map(|s| s.id.as_str());
        let mut ids: Vec<String> = self
            .escrows
            .iter()
            .filter(|(_, e)| {
                let payer = e.postings.first().map(|p| p.account);
                payer.is_some_and(|a| payers.contains(&a)) || (session.is_some() && e.session_spend.as_ref().map(|s| s.id.as_str()) == session)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Whether a held escrow claims `payer`'s `nonce`.
    pub(crate) fn claims_nonce(&self, payer: Address, nonce: &str) -> bool {
        self.nonces.contains(&(payer, nonce.to_lowercase()))
    }

    /// The net change the held escrows make to one balance.
    pub(crate) fn delta(&self, account: Address, bucket: Bucket) -> i128 {
        self.deltas.get(&(account, bucket)).copied().unwrap_or(0)
    }

    /// The net change the held escrows make to the sum of `bucket` over all accounts.
    pub(crate) fn bucket_delta(&self, bucket: Bucket) -> i128 {
        self.deltas.iter().filter(|((_, b), _)| *b == bucket).map(|(_, d)| *d).sum()
    }

    /// What the held escrows debit from session `id`, net of what their closes release.
    pub(crate) fn session_spent(&self, id: &str) -> u128 {
        self.sessions.get(id).copied().map_or(0, |s| u128::try_from(s).unwrap_or(0))
    }

    /// The payment record of a held request, as the database will show it once written.
    pub(crate) fn payment(&self, request_id: &str) -> Option<PaymentRecord> {
        let escrow = self.escrows.get(request_id)?;
        record(escrow, self.closes.get(request_id))
    }

    /// The held payment opened with `payer`'s `reference`, and the answer its capture kept.
    pub(crate) fn by_reference(&self, payer: Address, reference: &str) -> Option<(PaymentRecord, Option<KeptAnswer>)> {
        let (id, _) = self.escrows.iter().find(|(_, e)| match &e.payment {
            Some(PaymentChange::Open(p)) => p.payer == payer && p.reference == reference,
            _ => false,
        })?;
        let kept = self.closes.get(id).and_then(kept).map(|k| KeptAnswer { answer: k.answer.clone(), charged: k.charged });
        Some((self.payment(id)?, kept))
    }

    /// Every held payment, as the records the database will show.
    pub(crate) fn records(&self) -> impl Iterator<Item = PaymentRecord> + '_ {
        self.escrows.iter().filter_map(|(id, e)| record(e, self.closes.get(id)))
    }

    /// Every held payment not closed yet, as escrowed records.
    pub(crate) fn open(&self) -> impl Iterator<Item = PaymentRecord> + '_ {
        self.records().filter(|p| p.status == PaymentStatus::Escrowed)
    }

    /// What the answered captures of `payer` charged.
    pub(crate) fn spent(&self, payer: Address) -> u128 {
        self.closes
            .iter()
            .filter(|(_, c)| closed_status(c) == PaymentStatus::Captured)
            .filter_map(|(id, c)| match &self.escrows.get(id)?.payment {
                Some(PaymentChange::Open(p)) if p.payer == payer => Some(kept(c).map_or(p.amount, |k| k.charged)),
                _ => None,
            })
            .sum()
    }

    /// What the answered closes credit `account` with, by role.
    pub(crate) fn earnings(&self, account: Address) -> Vec<(Role, u128)> {
        self.closes
            .values()
            .flat_map(|c| &c.postings)
            .filter(|p| p.account == account && p.delta > 0)
            .filter_map(|p| p.role.map(|r| (r, p.delta.unsigned_abs())))
            .collect()
    }

    /// The receipt an answered capture of `request_id` keeps.
    pub(crate) fn receipt(&self, request_id: &str) -> Option<ReceiptRecord> {
        self.closes.get(request_id).and_then(kept).map(|k| k.receipt.clone())
    }

    /// The transactions of a held request, in order: its escrow and its close if answered.
    pub(crate) fn request_txs(&self, request_id: &str) -> Option<Vec<TxKind>> {
        self.escrows.get(request_id)?;
        Some(std::iter::once(TxKind::Escrow).chain(self.closes.get(request_id).map(|c| c.kind)).collect())
    }
}

/// The status a close moves its payment to.
fn closed_status(close: &LedgerTx) -> PaymentStatus {
    match &close.payment {
        Some(PaymentChange::Close { to, .. }) => *to,
        _ => PaymentStatus::Escrowed,
    }
}

fn kept(close: &LedgerTx) -> Option<&crate::Kept> {
    match &close.payment {
        Some(PaymentChange::Close { kept, .. }) => kept.as_deref(),
        _ => None,
    }
}

fn record(tx: &LedgerTx, close: Option<&LedgerTx>) -> Option<PaymentRecord> {
    let Some(PaymentChange::Open(p)) = &tx.payment else { return None };
    let (status, output_hash, reason) = match close.and_then(|c| c.payment.as_ref()) {
        Some(PaymentChange::Close { to, output_hash, reason, .. }) => (*to, output_hash.clone(), reason.clone()),
        _ => (PaymentStatus::Escrowed, None, None),
    };
    Some(PaymentRecord {
        request_id: p.request_id.clone(),
        payer: p.payer,
        amount: p.amount,
        quote: p.quote.clone(),
        model: p.model.clone(),
        app: p.app.clone(),
        gateway: p.gateway,
        method: p.method.clone(),
        reference: p.reference.clone(),
        status,
        input_hash: p.input_hash.clone(),
        output_hash,
        reason,
        escrow_tx: tx.id.clone(),
        settle_tx: close.map(|c| c.id.clone()),
        created_at_ms: tx.at_ms,
        settled_at_ms: close.map(|c| c.at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewPayment, NonceClaim, Posting, SessionSpend, TxKind};

    fn escrow(request_id: &str, payer: Address, amount: u128, session: Option<&str>) -> LedgerTx {
        let a = amount as i128;
        LedgerTx {
            id: format!("tx-{request_id}"),
            kind: TxKind::Escrow,
            postings: vec![Posting::new(payer, Bucket::Available, -a), Posting::new(payer, Bucket::Escrow, a)],
            memo: String::new(),
            at_ms: 7,
            nonce: session.is_none().then(|| NonceClaim { payer, nonce: format!("0xAB{request_id}") }),
            payment: Some(PaymentChange::Open(NewPayment {
                request_id: request_id.into(),
                payer,
                amount,
                quote: "{}".into(),
                model: "m".into(),
                app: None,
                gateway: Address::ZERO,
                method: if session.is_some() { "session" } else { "x402" }.into(),
                reference: session.map_or(format!("0xab{request_id}"), str::to_owned),
                input_hash: "0x".into(),
            })),
            session_spend: session.map(|id| SessionSpend { id: id.into(), amount, released: 0 }),
        }
    }

    #[test]
    fn holding_and_releasing_keeps_every_index_in_step() {
        let (alice, bob) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let mut held = Held::default();
        held.add(escrow("r1", alice, 10, None));
        held.add(escrow("r2", alice, 5, Some("s1")));
        held.add(escrow("r3", bob, 3, Some("s1")));
        assert_eq!(held.open().count(), 3);
        assert_eq!(held.delta(alice, Bucket::Available), -15);
        assert_eq!(held.delta(alice, Bucket::Escrow), 15);
        assert_eq!(held.bucket_delta(Bucket::Escrow), 18);
        assert_eq!(held.bucket_delta(Bucket::Available), -18);
        assert_eq!(held.session_spent("s1"), 8);
        assert!(held.claims_nonce(alice, "0xabr1"), "nonces compare lowercase");
        assert!(!held.claims_nonce(bob, "0xabr1"));
        let (p, kept) = held.by_reference(alice, "0xabr1").unwrap();
        assert!(kept.is_none());
        assert_eq!((p.request_id.as_str(), p.status, p.escrow_tx.as_str(), p.created_at_ms), ("r1", PaymentStatus::Escrowed, "tx-r1", 7));

        assert_eq!(held.remove("r1").unwrap().0.id, "tx-r1");
        assert!(held.remove("r1").is_none());
        assert!(!held.claims_nonce(alice, "0xabr1"));
        assert_eq!(held.delta(alice, Bucket::Available), -5);
        held.remove("r2");
        held.remove("r3");
        assert_eq!(held.open().count(), 0);
        assert!(held.deltas.is_empty() && held.sessions.is_empty() && held.nonces.is_empty());
    }

    fn capture(request_id: &str, payer: Address, creator: Address, amount: u128, charged: u128, session: Option<&str>) -> LedgerTx {
        let (a, c) = (amount as i128, charged as i128);
        let mut postings = vec![Posting::new(payer, Bucket::Escrow, -a), Posting::new(creator, Bucket::Available, c)];
        postings[1].role = Some(Role::Creator);
        if a > c {
            postings.push(Posting::new(payer, Bucket::Available, a - c));
        }
        LedgerTx {
            id: format!("cap-{request_id}"),
            kind: TxKind::Capture,
            postings,
            memo: String::new(),
            at_ms: 9,
            nonce: None,
            payment: Some(PaymentChange::Close {
                request_id: request_id.into(),
                to: PaymentStatus::Captured,
                output_hash: Some("0xout".into()),
                reason: None,
                kept: Some(Box::new(crate::Kept {
                    answer: "{}".into(),
                    charged,
                    receipt: ReceiptRecord {
                        request_id: request_id.into(),
                        node: creator,
                        digest: "0xd".into(),
                        body: "{}".into(),
                        batch_id: None,
                        created_at_ms: 9,
                    },
                })),
            }),
            session_spend: session.map(|id| SessionSpend { id: id.into(), amount: 0, released: amount - charged }),
        }
    }

    #[test]
    fn an_answered_close_shows_as_written_until_it_is() {
        let (alice, creator) = (Address::repeat_byte(1), Address::repeat_byte(3));
        let mut held = Held::default();
        held.add(escrow("r1", alice, 10, Some("s1")));
        held.add(escrow("r2", alice, 4, None));
        assert!(held.close(capture("r9", alice, creator, 4, 4, None)).is_err(), "no such escrow");
        held.close(capture("r1", alice, creator, 10, 7, Some("s1"))).unwrap();
        assert!(held.close(capture("r1", alice, creator, 10, 7, Some("s1"))).is_err(), "closed once");
        assert!(held.closes.contains_key("r1") && !held.closes.contains_key("r2"));
        assert_eq!((held.open().count(), held.closes.len()), (1, 1));
        // The capture's split as the database will have it.
        assert_eq!(held.delta(alice, Bucket::Escrow), 4);
        assert_eq!(held.delta(alice, Bucket::Available), -14 + 3);
        assert_eq!(held.delta(creator, Bucket::Available), 7);
        assert_eq!(held.session_spent("s1"), 7);
        assert_eq!(held.spent(alice), 7);
        assert_eq!(held.earnings(creator), vec![(Role::Creator, 7)]);
        let p = held.payment("r1").unwrap();
        assert_eq!((p.status, p.settle_tx.as_deref(), p.settled_at_ms, p.output_hash.as_deref()), (PaymentStatus::Captured, Some("cap-r1"), Some(9), Some("0xout")));
        assert_eq!(held.open().map(|p| p.request_id).collect::<Vec<_>>(), vec!["r2".to_owned()]);
        assert_eq!(held.request_txs("r1").unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
        assert_eq!(held.request_txs("r2").unwrap(), vec![TxKind::Escrow]);
        assert_eq!(held.receipt("r1").unwrap().digest, "0xd");

        let taken = held.remove("r1").unwrap();
        assert!(taken.1.is_some());
        assert_eq!((held.spent(alice), held.session_spent("s1"), held.delta(creator, Bucket::Available)), (0, 0, 0));
        held.restore(taken);
        assert!(held.closes.contains_key("r1"));
        assert_eq!(held.delta(creator, Bucket::Available), 7);
        held.remove("r1");
        held.remove("r2");
        assert!(held.deltas.is_empty() && held.sessions.is_empty() && held.nonces.is_empty() && held.closes.is_empty());
    }
}
