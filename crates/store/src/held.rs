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
//! Reads that report escrows (balances, totals, the audit, a payment by id or by reference, a
//! session's spent budget, used nonces) combine the database with the held set. They hold the
//! set's read lock while they read the database, and the writer holds its write lock while it
//! commits and moves escrows out of the set, so a read sees every escrow exactly once.

use std::collections::{HashMap, HashSet};

use verinet_primitives::Address;

use crate::{Bucket, LedgerTx, PaymentChange, PaymentRecord, PaymentStatus};

/// The escrows held, with what the checks of a new one need, indexed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Held {
    /// The escrow transaction of each held request, by request id.
    escrows: HashMap<String, LedgerTx>,
    /// The nonces they claim: (payer, lowercase nonce).
    nonces: HashSet<(Address, String)>,
    /// The net change they make to each balance.
    deltas: HashMap<(Address, Bucket), i128>,
    /// What they debit from each spending session, by session id.
    sessions: HashMap<String, u128>,
}

impl Held {
    /// Holds `tx`, an escrow that opens a payment (checked by the caller).
    pub(crate) fn add(&mut self, tx: LedgerTx) {
        let Some(PaymentChange::Open(p)) = &tx.payment else { return };
        if let Some(n) = &tx.nonce {
            self.nonces.insert((n.payer, n.nonce.to_lowercase()));
        }
        for posting in &tx.postings {
            *self.deltas.entry((posting.account, posting.bucket)).or_default() += posting.delta;
        }
        if let Some(s) = &tx.session_spend {
            *self.sessions.entry(s.id.clone()).or_default() += s.amount;
        }
        self.escrows.insert(p.request_id.clone(), tx);
    }

    /// Stops holding the escrow of `request_id` and returns it.
    pub(crate) fn remove(&mut self, request_id: &str) -> Option<LedgerTx> {
        let tx = self.escrows.remove(request_id)?;
        if let Some(n) = &tx.nonce {
            self.nonces.remove(&(n.payer, n.nonce.to_lowercase()));
        }
        for posting in &tx.postings {
            let key = (posting.account, posting.bucket);
            if let Some(d) = self.deltas.get_mut(&key) {
                *d -= posting.delta;
                if *d == 0 {
                    self.deltas.remove(&key);
                }
            }
        }
        if let Some(s) = &tx.session_spend
            && let Some(spent) = self.sessions.get_mut(&s.id)
        {
            *spent = spent.saturating_sub(s.amount);
            if *spent == 0 {
                self.sessions.remove(&s.id);
            }
        }
        Some(tx)
    }

    /// The held escrow transaction of `request_id`.
    pub(crate) fn escrow(&self, request_id: &str) -> Option<&LedgerTx> {
        self.escrows.get(request_id)
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

    /// What the held escrows debit from session `id`.
    pub(crate) fn session_spent(&self, id: &str) -> u128 {
        self.sessions.get(id).copied().unwrap_or(0)
    }

    /// The payment record of a held request, as the database would show it (escrowed).
    pub(crate) fn payment(&self, request_id: &str) -> Option<PaymentRecord> {
        self.escrows.get(request_id).and_then(record)
    }

    /// The held payment opened with `payer`'s `reference`.
    pub(crate) fn by_reference(&self, payer: Address, reference: &str) -> Option<PaymentRecord> {
        self.open().find(|p| p.payer == payer && p.reference == reference)
    }

    /// Every held payment, as escrowed records.
    pub(crate) fn open(&self) -> impl Iterator<Item = PaymentRecord> + '_ {
        self.escrows.values().filter_map(record)
    }

    /// How many escrows are held.
    pub(crate) fn len(&self) -> usize {
        self.escrows.len()
    }
}

fn record(tx: &LedgerTx) -> Option<PaymentRecord> {
    let Some(PaymentChange::Open(p)) = &tx.payment else { return None };
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
        status: PaymentStatus::Escrowed,
        input_hash: p.input_hash.clone(),
        output_hash: None,
        reason: None,
        escrow_tx: tx.id.clone(),
        settle_tx: None,
        created_at_ms: tx.at_ms,
        settled_at_ms: None,
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
        assert_eq!(held.len(), 3);
        assert_eq!(held.delta(alice, Bucket::Available), -15);
        assert_eq!(held.delta(alice, Bucket::Escrow), 15);
        assert_eq!(held.bucket_delta(Bucket::Escrow), 18);
        assert_eq!(held.bucket_delta(Bucket::Available), -18);
        assert_eq!(held.session_spent("s1"), 8);
        assert!(held.claims_nonce(alice, "0xabr1"), "nonces compare lowercase");
        assert!(!held.claims_nonce(bob, "0xabr1"));
        let p = held.by_reference(alice, "0xabr1").unwrap();
        assert_eq!((p.request_id.as_str(), p.status, p.escrow_tx.as_str(), p.created_at_ms), ("r1", PaymentStatus::Escrowed, "tx-r1", 7));

        assert_eq!(held.remove("r1").unwrap().id, "tx-r1");
        assert!(held.remove("r1").is_none());
        assert!(!held.claims_nonce(alice, "0xabr1"));
        assert_eq!(held.delta(alice, Bucket::Available), -5);
        held.remove("r2");
        held.remove("r3");
        assert_eq!(held.len(), 0);
        assert!(held.deltas.is_empty() && held.sessions.is_empty() && held.nonces.is_empty());
    }
}
