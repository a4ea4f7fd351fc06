//! The behaviour every [`LedgerStore`] must show, one async function per behaviour, each given a
//! fresh, empty store. [`ledger_store_conformance!`](crate::ledger_store_conformance) turns the
//! list into `#[tokio::test]`s exactly like `model_store_conformance!`.
//!
//! After every refused transaction the suite checks that nothing changed, and after every test
//! that the ledger invariant (minted == available + escrow + stake) holds.

#![allow(clippy::unwrap_used, reason = "a test suite: a panic is how it reports a violation")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use verinet_primitives::Address;

use crate::{
    App, Balances, Bucket, Kept, LedgerStore, LedgerTx, ReceiptRecord, ReceiptStore, MINT_ACCOUNT, NewPayment, NonceClaim, PaymentChange, PaymentStatus,
    Posting, Role, SessionSpend, SpendingSession, StoreError, TxKind,
};

/// Generates one multi-threaded `#[tokio::test]` per ledger behaviour, run through `$harness`
/// (an `async fn(test)` giving `test` a fresh `Arc<dyn LedgerStore>`).
#[macro_export]
macro_rules! ledger_store_conformance {
    ($harness:path) => {
        $crate::ledger_store_conformance!(@tests $harness;
            mint_credits_and_balances, escrow_then_capture_splits_and_records_result,
            refund_returns_escrow_and_closes_once, replayed_nonce_changes_nothing,
            insufficient_balance_changes_nothing, unbalanced_postings_are_refused,
            concurrent_escrows_never_overspend, concurrent_same_nonce_has_one_winner,
            concurrent_closes_capture_once, session_budget_caps_spending, apps_register_once,
            stale_escrows_are_found_per_gateway, a_capture_keeps_its_answer_and_receipt,
            audit_sees_what_the_ledger_holds, escrowed_funds_and_nonces_are_spoken_for,
            a_balance_that_covers_every_request_pays_them_all);
    };
    (@tests $harness:path; $($test:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                $harness($crate::ledger_conformance::$test).await;
            }
        )*
    };
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn tx_id() -> String {
    format!("0x{:064x}", SEQ.fetch_add(1, Ordering::Relaxed))
}

fn addr(n: u8) -> Address {
    Address::repeat_byte(n)
}

fn tx(kind: TxKind, postings: Vec<Posting>) -> LedgerTx {
    LedgerTx {
        id: tx_id(),
        kind,
        postings,
        memo: String::new(),
        at_ms: 1_000,
        nonce: None,
        payment: None,
        session_spend: None,
    }
}

async fn mint(s: &dyn LedgerStore, to: Address, amount: u128) {
    s.commit(&mint_tx(to, amount)).await.unwrap();
}

/// New money: `amount` minted to `to`'s available balance.
pub fn mint_tx(to: Address, amount: u128) -> LedgerTx {
    let a = amount as i128;
    tx(TxKind::Mint, vec![Posting::new(MINT_ACCOUNT, Bucket::Minted, -a), Posting::new(to, Bucket::Available, a)])
}

/// An escrow of `amount` from `payer` for `request_id`, claiming `nonce`.
pub fn escrow_tx(payer: Address, amount: u128, request_id: &str, nonce: &str) -> LedgerTx {
    let a = amount as i128;
    let mut t = tx(TxKind::Escrow, vec![
        Posting::new(payer, Bucket::Available, -a),
        Posting::new(payer, Bucket::Escrow, a),
    ]);
    t.nonce = Some(NonceClaim { payer, nonce: nonce.to_owned() });
    t.payment = Some(PaymentChange::Open(NewPayment {
        request_id: request_id.to_owned(),
        payer,
        amount,
        quote: "{}".into(),
        model: "sha256:00".into(),
        app: None,
        gateway: addr(0xee),
        method: "x402".into(),
        reference: nonce.to_owned(),
        input_hash: "0xin".into(),
    }));
    t
}

/// The capture of [`escrow_tx`]'s `amount`: `amount - 3` to the creator `0xc1…`, 2 to the
/// operator `0x0a…`, 1 to the protocol `0x02…`.
pub fn capture_tx(payer: Address, amount: u128, request_id: &str) -> LedgerTx {
    let a = amount as i128;
    let mut t = tx(TxKind::Capture, vec![
        Posting::new(payer, Bucket::Escrow, -a),
        Posting::earned(addr(0xc1), Role::Creator, a - 3),
        Posting::earned(addr(0x0a), Role::Operator, 2),
        Posting::earned(addr(0x02), Role::Protocol, 1),
    ]);
    t.payment = Some(PaymentChange::Close {
        request_id: request_id.to_owned(),
        to: PaymentStatus::Captured,
        output_hash: Some("0xout".into()),
        reason: None,
        kept: None,
    });
    t
}

/// The refund of [`escrow_tx`]'s `amount` to the payer.
pub fn refund_tx(payer: Address, amount: u128, request_id: &str) -> LedgerTx {
    let a = amount as i128;
    let mut t = tx(TxKind::Refund, vec![
        Posting::new(payer, Bucket::Escrow, -a),
        Posting::new(payer, Bucket::Available, a),
    ]);
    t.payment = Some(PaymentChange::Close {
        request_id: request_id.to_owned(),
        to: PaymentStatus::Refunded,
        output_hash: None,
        reason: Some("execution failed".into()),
        kept: None,
    });
    t
}

fn nonce(n: u64) -> String {
    format!("0x{n:064x}")
}

async fn assert_balanced(s: &dyn LedgerStore) {
    let t = s.totals().await.unwrap();
    assert!(t.balanced(), "ledger invariant broken: {t:?}");
}

fn bal(available: u128, escrow: u128, stake: u128) -> Balances {
    Balances { available, escrow, stake }
}

/// Minting credits the account and the totals; unknown accounts are all zero.
pub async fn mint_credits_and_balances(s: Arc<dyn LedgerStore>) {
    assert_eq!(s.balances(addr(9)).await.unwrap(), Balances::default());
    mint(&*s, addr(1), 100).await;
    mint(&*s, addr(1), 23).await;
    assert_eq!(s.balances(addr(1)).await.unwrap(), bal(123, 0, 0));
    let t = s.totals().await.unwrap();
    assert_eq!((t.minted, t.available), (123, 123));
    assert_balanced(&*s).await;
}

/// Escrow holds the money with the request record; capture pays every payee by role and
/// records the result hash, in one transaction each.
pub async fn escrow_then_capture_splits_and_records_result(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 50).await;
    s.commit(&escrow_tx(payer, 10, "r1", &nonce(1))).await.unwrap();
    assert_eq!(s.balances(payer).await.unwrap(), bal(40, 10, 0));
    let p = s.payment("r1").await.unwrap().unwrap();
    assert_eq!((p.status, p.amount, p.output_hash.as_deref()), (PaymentStatus::Escrowed, 10, None));
    assert_balanced(&*s).await;

    s.commit(&capture_tx(payer, 10, "r1")).await.unwrap();
    assert_eq!(s.balances(payer).await.unwrap(), bal(40, 0, 0));
    assert_eq!(s.balances(addr(0xc1)).await.unwrap().available, 7);
    let p = s.payment("r1").await.unwrap().unwrap();
    assert_eq!(p.status, PaymentStatus::Captured);
    assert_eq!(p.output_hash.as_deref(), Some("0xout"));
    assert!(p.settle_tx.is_some() && p.settled_at_ms.is_some());
    assert_eq!(s.earnings(addr(0xc1)).await.unwrap().get(&Role::Creator), Some(&7));
    // Captured is spent; what is merely escrowed or refunded is not.
    assert_eq!(s.spent(payer).await.unwrap(), 10);
    assert_eq!(s.spent(addr(0xc1)).await.unwrap(), 0);
    assert_eq!(s.earnings(addr(0x0a)).await.unwrap().get(&Role::Operator), Some(&2));
    assert_eq!(s.request_txs("r1").await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
    assert_balanced(&*s).await;
}

/// A refund gives the escrow back; a closed payment cannot be closed again either way.
pub async fn refund_returns_escrow_and_closes_once(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 50).await;
    s.commit(&escrow_tx(payer, 10, "r1", &nonce(1))).await.unwrap();
    s.commit(&refund_tx(payer, 10, "r1")).await.unwrap();
    assert_eq!(s.balances(payer).await.unwrap(), bal(50, 0, 0));
    let p = s.payment("r1").await.unwrap().unwrap();
    assert_eq!((p.status, p.reason.as_deref()), (PaymentStatus::Refunded, Some("execution failed")));
    // Neither a capture nor a second refund of a refunded request moves money.
    for again in [capture_tx(payer, 10, "r1"), refund_tx(payer, 10, "r1")] {
        match s.commit(&again).await {
            Err(StoreError::PaymentState { found, .. }) => assert_eq!(found, "refunded"),
            other => panic!("expected PaymentState, got {other:?}"),
        }
    }
    match s.commit(&refund_tx(payer, 10, "never-opened")).await {
        Err(StoreError::PaymentState { found, .. }) => assert_eq!(found, "absent"),
        other => panic!("expected PaymentState, got {other:?}"),
    }
    assert_eq!(s.balances(payer).await.unwrap(), bal(50, 0, 0));
    assert_eq!(s.request_txs("r1").await.unwrap(), vec![TxKind::Escrow, TxKind::Refund]);
    assert_balanced(&*s).await;
}

/// What an escrow holds is spoken for until it closes, whatever the store does with it in the
/// meantime: other transactions cannot spend the payer's escrowed funds or claim its nonce, and
/// every read shows it (balances, the payment, its transactions, the totals).
pub async fn escrowed_funds_and_nonces_are_spoken_for(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 10).await;
    s.commit(&escrow_tx(payer, 6, "r1", &nonce(1))).await.unwrap();
    let transfer = |amount: i128, n: Option<String>| {
        let mut t = tx(TxKind::Transfer, vec![Posting::new(payer, Bucket::Available, -amount), Posting::earned(addr(2), Role::Payee, amount)]);
        t.nonce = n.map(|nonce| NonceClaim { payer, nonce });
        t
    };
    assert!(matches!(s.commit(&transfer(5, None)).await, Err(StoreError::Insufficient { .. })));
    assert!(matches!(s.commit(&transfer(1, Some(nonce(1)))).await, Err(StoreError::NonceUsed { .. })));
    assert!(s.nonce_used(payer, &nonce(1)).await.unwrap());
    assert_eq!(s.balances(payer).await.unwrap(), bal(4, 6, 0));
    assert_eq!(s.payment("r1").await.unwrap().unwrap().status, PaymentStatus::Escrowed);
    assert_eq!(s.request_txs("r1").await.unwrap(), vec![TxKind::Escrow]);
    let totals = s.totals().await.unwrap();
    assert_eq!((totals.available, totals.escrow), (4, 6));
    s.commit(&transfer(4, Some(nonce(2)))).await.unwrap();
    s.commit(&capture_tx(payer, 6, "r1")).await.unwrap();
    assert_eq!(s.balances(payer).await.unwrap(), bal(0, 0, 0));
    assert_eq!(s.request_txs("r1").await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
    assert_balanced(&*s).await;
}

/// A nonce pays once: the replay is refused and nothing moves or is recorded.
pub async fn replayed_nonce_changes_nothing(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 50).await;
    s.commit(&escrow_tx(payer, 10, "r1", &nonce(7))).await.unwrap();
    // Same nonce, other case of hex digits: still the same nonce.
    let replay = escrow_tx(payer, 10, "r2", &nonce(7).to_uppercase().replace("0X", "0x"));
    assert!(matches!(s.commit(&replay).await, Err(StoreError::NonceUsed { .. })));
    assert_eq!(s.balances(payer).await.unwrap(), bal(40, 10, 0));
    assert!(s.payment("r2").await.unwrap().is_none());
    assert!(s.request_txs("r2").await.unwrap().is_empty());
    // Another payer may use the same nonce value.
    mint(&*s, addr(2), 10).await;
    s.commit(&escrow_tx(addr(2), 10, "r3", &nonce(7))).await.unwrap();
    assert_balanced(&*s).await;
}

/// Overspending is refused with the amounts, and the nonce stays unclaimed for a retry.
pub async fn insufficient_balance_changes_nothing(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 5).await;
    match s.commit(&escrow_tx(payer, 10, "r1", &nonce(1))).await {
        Err(StoreError::Insufficient { account, needed, available, .. }) => {
            assert_eq!((account, needed, available), (payer, 10, 5));
        }
        other => panic!("expected Insufficient, got {other:?}"),
    }
    assert_eq!(s.balances(payer).await.unwrap(), bal(5, 0, 0));
    assert!(s.payment("r1").await.unwrap().is_none());
    mint(&*s, payer, 5).await;
    s.commit(&escrow_tx(payer, 10, "r1", &nonce(1))).await.unwrap();
    assert_balanced(&*s).await;
}

/// Postings that create or destroy money, or mint from a user account, are refused.
pub async fn unbalanced_postings_are_refused(s: Arc<dyn LedgerStore>) {
    let bad = tx(TxKind::Mint, vec![Posting::new(addr(1), Bucket::Available, 10)]);
    assert!(matches!(s.commit(&bad).await, Err(StoreError::Invalid(_))));
    let fake_mint = tx(TxKind::Mint, vec![
        Posting::new(addr(2), Bucket::Minted, -10),
        Posting::new(addr(1), Bucket::Available, 10),
    ]);
    assert!(matches!(s.commit(&fake_mint).await, Err(StoreError::Invalid(_))));
    assert_eq!(s.balances(addr(1)).await.unwrap(), Balances::default());
    assert_eq!(s.totals().await.unwrap().minted, 0);
}

/// Many concurrent escrows against one balance: exactly as many succeed as it can pay.
pub async fn concurrent_escrows_never_overspend(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 5).await;
    let tasks = (0..16u64).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.commit(&escrow_tx(payer, 1, &format!("r{i}"), &nonce(i))).await })
    });
    let results = futures::future::join_all(tasks).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    for r in &results {
        match r {
            Ok(Ok(())) | Ok(Err(StoreError::Insufficient { .. })) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(s.balances(payer).await.unwrap(), bal(0, 5, 0));
    assert_balanced(&*s).await;
}

/// Payers whose balances cover their requests exactly, one after another, each paying with
/// four paced requests in flight: every request is paid and nothing is left. A store that counted an
/// escrow twice while writing it (held, and already in the database) would refuse a payer's
/// last requests.
pub async fn a_balance_that_covers_every_request_pays_them_all(s: Arc<dyn LedgerStore>) {
    const PAYERS: u8 = 8;
    const EACH: u64 = 40;
    const AMOUNT: u128 = 10;
    let payer = |p: u8| Address::repeat_byte(0x40 + p);
    for p in 0..PAYERS {
        mint(&*s, payer(p), u128::from(EACH) * AMOUNT).await;
    }
    for p in 0..PAYERS {
        let next = Arc::new(AtomicU64::new(0));
        let workers = (0..4).map(|_| {
            let (s, next) = (s.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= EACH {
                        return;
                    }
                    let id = format!("payer{p}-{i}");
                    let n = nonce(u64::from(p) * EACH + i);
                    s.commit(&escrow_tx(payer(p), AMOUNT, &id, &n)).await.unwrap_or_else(|e| panic!("escrow {id}: {e}"));
                    s.commit(&capture_tx(payer(p), AMOUNT, &id)).await.unwrap_or_else(|e| panic!("capture {id}: {e}"));
                    // Paced, so that a store writing in groups writes some while others come.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
        });
        for worker in futures::future::join_all(workers).await {
            worker.expect("a worker panicked");
        }
        assert_eq!(s.balances(payer(p)).await.unwrap(), bal(0, 0, 0));
    }
    assert_balanced(&*s).await;
}

/// Many concurrent escrows with one nonce: exactly one pays.
pub async fn concurrent_same_nonce_has_one_winner(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 100).await;
    let tasks = (0..8u64).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.commit(&escrow_tx(payer, 1, &format!("r{i}"), &nonce(42))).await })
    });
    let results = futures::future::join_all(tasks).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(ok, 1, "{results:?}");
    assert_eq!(s.balances(payer).await.unwrap(), bal(99, 1, 0));
    assert_balanced(&*s).await;
}

/// Racing capture and refund of one escrow: exactly one closes it.
pub async fn concurrent_closes_capture_once(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 100).await;
    s.commit(&escrow_tx(payer, 10, "r1", &nonce(1))).await.unwrap();
    let tasks = (0..8).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            let t = if i % 2 == 0 { capture_tx(payer, 10, "r1") } else { refund_tx(payer, 10, "r1") };
            s.commit(&t).await
        })
    });
    let results = futures::future::join_all(tasks).await;
    assert_eq!(results.iter().filter(|r| matches!(r, Ok(Ok(())))).count(), 1);
    assert_eq!(s.request_txs("r1").await.unwrap().len(), 2);
    assert_eq!(s.balances(payer).await.unwrap().escrow, 0);
    assert_balanced(&*s).await;
}

/// A session pays up to its cap and not after expiry; its nonce makes one session per signature.
pub async fn session_budget_caps_spending(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 100).await;
    let session = SpendingSession {
        id: "s1".into(),
        token_hash: "0xhash".into(),
        payer,
        max_total: 3,
        spent: 0,
        expires_at: 10,
        models: vec!["digits".into()],
        nonce: nonce(5),
        created_at_ms: 1,
    };
    s.insert_session(&session).await.unwrap();
    assert!(matches!(s.insert_session(&SpendingSession { id: "s2".into(), token_hash: "0xother".into(), ..session.clone() }).await,
        Err(StoreError::NonceUsed { .. })));
    assert_eq!(s.session_by_token("0xhash").await.unwrap().unwrap().models, vec!["digits".to_owned()]);
    let spend = |i: u64, at_ms: i64| {
        let mut t = escrow_tx(payer, 1, &format!("r{i}"), &nonce(100 + i));
        t.nonce = None;
        t.session_spend = Some(SessionSpend { id: "s1".into(), amount: 1, released: 0 });
        t.at_ms = at_ms;
        t
    };
    for i in 0..3 {
        s.commit(&spend(i, 1_000)).await.unwrap();
    }
    assert!(matches!(s.commit(&spend(3, 1_000)).await, Err(StoreError::Budget { .. })));
    assert_eq!(s.session_by_token("0xhash").await.unwrap().unwrap().spent, 3);
    assert_eq!(s.balances(payer).await.unwrap(), bal(97, 3, 0));

    let later = SpendingSession { id: "s3".into(), token_hash: "0xh3".into(), nonce: nonce(6), max_total: 50, ..session };
    s.insert_session(&later).await.unwrap();
    let mut expired = spend(4, 10_000);
    expired.session_spend = Some(SessionSpend { id: "s3".into(), amount: 1, released: 0 });
    assert!(matches!(s.commit(&expired).await, Err(StoreError::Budget { .. })));
    assert_eq!(s.balances(payer).await.unwrap(), bal(97, 3, 0));

    // The unused part of an escrow goes back to the budget, also after the expiry, never
    // below zero.
    let release = |released: u128| {
        let mut t = tx(TxKind::Refund, vec![Posting::new(payer, Bucket::Escrow, -1), Posting::new(payer, Bucket::Available, 1)]);
        t.session_spend = Some(SessionSpend { id: "s1".into(), amount: 0, released });
        t.at_ms = 10_000;
        t
    };
    s.commit(&release(1)).await.unwrap();
    assert_eq!(s.session_by_token("0xhash").await.unwrap().unwrap().spent, 2);
    assert!(matches!(s.commit(&release(5)).await, Err(StoreError::Budget { .. })));
    assert_eq!(s.session_by_token("0xhash").await.unwrap().unwrap().spent, 2);
    assert_eq!(s.balances(payer).await.unwrap(), bal(98, 2, 0));
    assert_balanced(&*s).await;
}

/// Apps register once per id and read back.
pub async fn apps_register_once(s: Arc<dyn LedgerStore>) {
    let app = App { id: "app-1".into(), name: "Chat".into(), owner: addr(3), markup: 5, created_at_ms: 1 };
    s.insert_app(&app).await.unwrap();
    assert_eq!(s.app("app-1").await.unwrap(), Some(app.clone()));
    assert!(matches!(s.insert_app(&app).await, Err(StoreError::AppExists(_))));
    assert!(s.app("nope").await.unwrap().is_none());
    // An owner's apps, newest first, bounded; nobody else's.
    let second = App { id: "app-2".into(), name: "Search".into(), created_at_ms: 2, ..app.clone() };
    s.insert_app(&second).await.unwrap();
    s.insert_app(&App { id: "app-3".into(), owner: addr(4), ..app.clone() }).await.unwrap();
    assert_eq!(s.apps_by_owner(addr(3), 10).await.unwrap(), vec![second.clone(), app]);
    assert_eq!(s.apps_by_owner(addr(3), 1).await.unwrap(), vec![second]);
    assert!(s.apps_by_owner(addr(5), 10).await.unwrap().is_empty());
}

/// Recovery finds a gateway's own escrows older than a time, and only those.
pub async fn stale_escrows_are_found_per_gateway(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 100).await;
    s.commit(&escrow_tx(payer, 1, "mine-old", &nonce(1))).await.unwrap();
    let mut other = escrow_tx(payer, 1, "theirs", &nonce(2));
    if let Some(PaymentChange::Open(p)) = &mut other.payment {
        p.gateway = addr(0xdd);
    }
    s.commit(&other).await.unwrap();
    let mut new = escrow_tx(payer, 1, "mine-new", &nonce(3));
    new.at_ms = 5_000;
    s.commit(&new).await.unwrap();
    let stale = s.payments_with_status(PaymentStatus::Escrowed, addr(0xee), 2_000).await.unwrap();
    assert_eq!(stale.iter().map(|p| p.request_id.as_str()).collect::<Vec<_>>(), vec!["mine-old"]);
}

/// A capture keeps the answer it paid for and its receipt, in its own transaction: found again
/// by the payer's authorization until the retention window clears the answer (the payment row
/// and the receipt stay). A capture refused (closed before) keeps nothing.
pub async fn a_capture_keeps_its_answer_and_receipt(s: Arc<dyn LedgerStore>) {
    let payer = addr(1);
    mint(&*s, payer, 50).await;
    s.commit(&escrow_tx(payer, 10, "r1", &nonce(1))).await.unwrap();
    let (open, kept) = s.payment_by_reference(payer, &nonce(1)).await.unwrap().unwrap();
    assert_eq!((open.status, kept), (PaymentStatus::Escrowed, None));
    assert!(s.payment_by_reference(addr(2), &nonce(1)).await.unwrap().is_none());

    let receipt = ReceiptRecord {
        request_id: "r1".into(),
        node: addr(0xee),
        digest: "0xd1".into(),
        body: "{\"receipt\":1}".into(),
        batch_id: None,
        created_at_ms: 1_000,
    };
    let mut t = capture_tx(payer, 10, "r1");
    if let Some(PaymentChange::Close { kept, .. }) = &mut t.payment {
        *kept = Some(Box::new(Kept { answer: "{\"outputs\":[1]}".into(), charged: 10, receipt: receipt.clone() }));
    }
    s.commit(&t).await.unwrap();
    let (p, kept) = s.payment_by_reference(payer, &nonce(1)).await.unwrap().unwrap();
    assert_eq!((p.request_id.as_str(), p.status), ("r1", PaymentStatus::Captured));
    let kept = kept.expect("the answer is kept with the capture");
    assert_eq!((kept.answer.as_str(), kept.charged), ("{\"outputs\":[1]}", 10));

    // Not yet past the window: kept. Past it: cleared, the payment stays captured.
    let settled = p.settled_at_ms.unwrap();
    assert_eq!(s.forget_answers(settled).await.unwrap(), 0);
    assert_eq!(s.forget_answers(settled + 1).await.unwrap(), 1);
    let (p, kept) = s.payment_by_reference(payer, &nonce(1)).await.unwrap().unwrap();
    assert_eq!((p.status, kept), (PaymentStatus::Captured, None));
    assert_balanced(&*s).await;
}


/// The receipt a capture kept is in the receipt store, unbatched (for stores that keep both;
/// `s` and `r` are the same store).
pub async fn kept_receipt_is_stored(s: Arc<dyn LedgerStore>, r: Arc<dyn ReceiptStore>) {
    a_capture_keeps_its_answer_and_receipt(s).await;
    let stored = r.receipt("r1").await.unwrap().expect("the capture stored its receipt");
    assert_eq!((stored.digest.as_str(), stored.batch_id), ("0xd1", None));
}

/// The audit reads the same facts as the ledger: totals, accounts, open escrows and their
/// amount and age, payments per status, and no negative balance.
pub async fn audit_sees_what_the_ledger_holds(s: Arc<dyn LedgerStore>) {
    let empty = s.audit().await.unwrap();
    assert_eq!((empty.accounts, empty.open_escrows, empty.totals.minted), (0, 0, 0));
    let payer = addr(1);
    mint(&*s, payer, 50).await;
    for (i, id) in ["a1", "a2", "a3"].into_iter().enumerate() {
        s.commit(&escrow_tx(payer, 10, id, &nonce(100 + i as u64))).await.unwrap();
    }
    s.commit(&capture_tx(payer, 10, "a1")).await.unwrap();
    s.commit(&refund_tx(payer, 10, "a2")).await.unwrap();
    let a = s.audit().await.unwrap();
    assert!(a.totals.balanced(), "{a:?}");
    assert_eq!((a.totals.minted, a.totals.escrow), (50, 10));
    assert_eq!((a.open_escrows, a.open_escrow_amount, a.oldest_open_escrow_ms), (1, 10, Some(1_000)));
    assert_eq!(a.negative_balances, 0);
    // The payer, the mint account and the three payees of the capture.
    assert_eq!(a.accounts, 5);
    let n = |k: &str| a.payments.get(k).copied().unwrap_or(0);
    assert_eq!((n("escrowed"), n("captured"), n("refunded")), (1, 1, 1));
}
