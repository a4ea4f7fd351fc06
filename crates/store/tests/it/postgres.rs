//! The conformance suite and PostgreSQL specifics, each test on a fresh database of the server
//! named by `VERINET_TEST_POSTGRES_URL`, dropped afterwards.

use std::{future::Future, sync::Arc};

use verinet_store::{LedgerStore, ReceiptStore, ModelStore, PgTestDb, SqlStore, conformance};

async fn on_fresh_db<F, Fut>(test: F)
where
    F: FnOnce(PgTestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    PgTestDb::with(test).await
}

async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn ModelStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_fresh_db(|db| async move {
        let store = SqlStore::connect(&db.url).await.expect("connect postgres");
        assert_eq!(store.backend(), "postgres");
        test(Arc::new(store.clone())).await;
        store.close().await;
    })
    .await;
}

mod conformance_postgres {
    use super::with_store;
    verinet_store::model_store_conformance!(with_store);
}

async fn with_ledger<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn LedgerStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_fresh_db(|db| async move {
        let store = SqlStore::connect(&db.url).await.expect("connect postgres");
        test(Arc::new(store.clone())).await;
        store.close().await;
    })
    .await;
}

async fn with_receipts<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn ReceiptStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    on_fresh_db(|db| async move {
        let store = SqlStore::connect(&db.url).await.expect("connect postgres");
        test(Arc::new(store.clone())).await;
        store.close().await;
    })
    .await;
}

mod receipt_conformance_postgres {
    use super::with_receipts;
    verinet_store::receipt_store_conformance!(with_receipts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_receipt_is_stored_with_its_capture() {
    on_fresh_db(|db| async move {
        let store = Arc::new(SqlStore::connect(&db.url).await.expect("connect postgres"));
        verinet_store::ledger_conformance::kept_receipt_is_stored(store.clone(), store.clone()).await;
        store.close().await;
    })
    .await;
}

mod ledger_conformance_postgres {
    use super::with_ledger;
    verinet_store::ledger_store_conformance!(with_ledger);
}

#[tokio::test]
async fn reconnecting_keeps_data_and_migrations_are_idempotent() {
    on_fresh_db(|db| async move {
        let v = conformance::sample("persisted", "1.0.0", conformance::owner(1));
        let first = SqlStore::connect(&db.url).await.unwrap();
        first.insert_version(&v).await.unwrap();
        first.close().await;
        let second = SqlStore::connect(&db.url).await.unwrap();
        assert_eq!(second.latest("persisted").await.unwrap().unwrap().id, v.id);
        second.close().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_connects_migrate_once() {
    on_fresh_db(|db| async move {
        let connects = (0..4).map(|_| SqlStore::connect(&db.url));
        let stores = futures::future::try_join_all(connects).await.expect("all connect");
        stores[0].insert_version(&conformance::sample("m", "1.0.0", conformance::owner(1))).await.unwrap();
        for s in &stores {
            assert!(s.owner("m").await.unwrap().is_some());
            s.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tallies_and_events_age_out() {
    on_fresh_db(|db| async move {
        let store = Arc::new(SqlStore::connect(&db.url).await.expect("connect postgres"));
        verinet_store::event_conformance::tallies_and_events_age_out(store.clone()).await;
        store.close().await;
    })
    .await;
}

/// The rows of every ledger table, each column as text, in a fixed order.
async fn ledger_rows(url: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::{AnyConnection, Connection, Row};
    sqlx::any::install_default_drivers();
    let mut c = AnyConnection::connect(url).await.expect("connect");
    let queries = [
        "SELECT id, kind, request_id, memo, CAST(created_at AS TEXT) FROM ledger_txs ORDER BY id",
        "SELECT tx_id, CAST(idx AS TEXT), account, bucket, delta, role FROM ledger_entries ORDER BY tx_id, idx",
        "SELECT account, bucket, amount FROM ledger_balances ORDER BY account, bucket",
        "SELECT payer, nonce, tx_id, CAST(created_at AS TEXT) FROM payment_nonces ORDER BY payer, nonce",
        "SELECT request_id, payer, amount, quote, model, app, gateway, method, reference, status, input_hash, escrow_tx, \
         CAST(created_at AS TEXT), output_hash, reason, settle_tx, CAST(settled_at AS TEXT), charged \
         FROM payments ORDER BY request_id",
        "SELECT request_id, answer FROM payment_answers ORDER BY request_id",
        "SELECT request_id, node, digest, body, batch_id, CAST(created_at AS TEXT) FROM receipts ORDER BY request_id",
    ];
    let mut out = Vec::new();
    for q in queries {
        for r in sqlx::query(q).fetch_all(&mut c).await.expect(q) {
            out.push((0..r.len()).map(|i| r.try_get::<Option<String>, _>(i).expect("text")).collect());
        }
        out.push(vec![Some(format!("-- end of {q}"))]);
    }
    out
}

/// The SQLite writer writes a held escrow with its close in fewer statements than two
/// transactions (the payment inserted closed, balances and legs once for the pair): the rows
/// must be exactly those the sqlx path writes for the same transactions on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_writer_writes_an_escrow_and_its_close_as_the_sqlx_path_does() {
    use verinet_primitives::Address;
    use verinet_store::{Kept, PaymentChange, ReceiptRecord, ledger_conformance::{capture_tx, escrow_tx, mint_tx, refund_tx}};
    let payer = Address::repeat_byte(0x31);
    let nonce = |n: u8| format!("0x{n:064x}");
    let mut kept_capture = capture_tx(payer, 10, "r-kept");
    if let Some(PaymentChange::Close { kept, .. }) = &mut kept_capture.payment {
        let receipt = ReceiptRecord {
            request_id: "r-kept".into(),
            node: Address::repeat_byte(0xee),
            digest: "0xd1".into(),
            body: "{\"receipt\":1}".into(),
            batch_id: None,
            created_at_ms: 1_000,
        };
        *kept = Some(Box::new(Kept { answer: "{\"outputs\":{}}".into(), charged: 10, receipt }));
    }
    let txs = [
        mint_tx(payer, 100),
        escrow_tx(payer, 10, "r-kept", &nonce(1)),
        kept_capture,
        escrow_tx(payer, 20, "r-captured", &nonce(2)),
        capture_tx(payer, 20, "r-captured"),
        escrow_tx(payer, 30, "r-refunded", &nonce(3)),
        refund_tx(payer, 30, "r-refunded"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display());
    let sqlite = SqlStore::connect(&file).await.expect("sqlite");
    on_fresh_db(|db| async move {
        let pg = SqlStore::connect(&db.url).await.expect("postgres");
        for tx in &txs {
            sqlite.commit(tx).await.expect("sqlite commit");
            pg.commit(tx).await.expect("postgres commit");
        }
        sqlite.close().await;
        pg.close().await;
        let (a, b) = (ledger_rows(&file).await, ledger_rows(&db.url).await);
        assert!(a.len() > 20, "{a:?}");
        assert_eq!(a, b);
    })
    .await;
}

/// `spending_sessions`' budgets, for comparing two databases.
async fn session_rows(url: &str) -> Vec<(String, String)> {
    use sqlx::{AnyConnection, Connection, Row};
    let mut c = AnyConnection::connect(url).await.expect("connect");
    let rows = sqlx::query("SELECT id, spent FROM spending_sessions ORDER BY id").fetch_all(&mut c).await.expect("sessions");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// PostgreSQL's group committer writes the escrows and closes waiting on a gateway as one
/// statement (`pg_group`): the rows must be exactly those each transaction writes on its own,
/// and a group any of whose checks refuses (a nonce used, a payment not escrowed, a balance or
/// a session's budget short) must write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_statement_writes_what_its_transactions_write_one_by_one() {
    use verinet_primitives::Address;
    use verinet_store::{
        Kept, LedgerTx, PaymentChange, ReceiptRecord, SessionSpend, SpendingSession,
        ledger_conformance::{capture_tx, escrow_tx, mint_tx, refund_tx},
    };
    let (payer, holder) = (Address::repeat_byte(0x31), Address::repeat_byte(0x32));
    let nonce = |n: u8| format!("0x{n:064x}");
    let session = SpendingSession {
        id: "s1".into(),
        token_hash: "0xhash".into(),
        payer: holder,
        max_total: 12,
        spent: 0,
        expires_at: 10,
        models: vec![],
        nonce: nonce(99),
        created_at_ms: 1,
    };
    let by_session = |mut t: LedgerTx, amount: u128, released: u128| {
        t.nonce = None;
        t.session_spend = Some(SessionSpend { id: "s1".into(), amount, released });
        t
    };
    let mut kept_capture = capture_tx(payer, 10, "r-kept");
    if let Some(PaymentChange::Close { kept, .. }) = &mut kept_capture.payment {
        let receipt = ReceiptRecord {
            request_id: "r-kept".into(),
            node: Address::repeat_byte(0xee),
            digest: "0xd1".into(),
            body: "{\"receipt\":1}".into(),
            batch_id: None,
            created_at_ms: 1_000,
        };
        *kept = Some(Box::new(Kept { answer: "{\"outputs\":{}}".into(), charged: 10, receipt }));
    }
    let setup = [mint_tx(payer, 100), mint_tx(holder, 50)];
    let escrows = [
        escrow_tx(payer, 10, "r-kept", &nonce(1)),
        escrow_tx(payer, 20, "r-captured", &nonce(2)),
        escrow_tx(payer, 30, "r-refunded", &nonce(3)),
        by_session(escrow_tx(holder, 5, "r-s1", &nonce(4)), 5, 0),
        by_session(escrow_tx(holder, 6, "r-s2", &nonce(5)), 6, 0),
    ];
    let closes = [
        kept_capture,
        capture_tx(payer, 20, "r-captured"),
        refund_tx(payer, 30, "r-refunded"),
        by_session(capture_tx(holder, 5, "r-s1"), 0, 0),
        by_session(refund_tx(holder, 6, "r-s2"), 0, 6),
    ];
    on_fresh_db(|alone| async move {
        on_fresh_db(|grouped| async move {
            let (one, group) = (SqlStore::connect(&alone.url).await.expect("pg"), SqlStore::connect(&grouped.url).await.expect("pg"));
            for s in [&one, &group] {
                s.insert_session(&session).await.expect("session");
                for tx in &setup {
                    s.commit(tx).await.expect("mint");
                }
            }
            for tx in escrows.iter().chain(&closes) {
                one.commit(tx).await.expect("alone");
            }
            assert!(group.commit_as_one_group(&escrows).await.expect("escrows"), "the escrows' group was refused");
            assert!(group.commit_as_one_group(&closes).await.expect("closes"), "the closes' group was refused");
            let rows = ledger_rows(&grouped.url).await;
            assert!(rows.len() > 40, "{rows:?}");
            assert_eq!(ledger_rows(&alone.url).await, rows);
            assert_eq!(session_rows(&alone.url).await, session_rows(&grouped.url).await);
            assert_eq!(session_rows(&grouped.url).await, vec![("s1".to_owned(), "5".to_owned())]);

            // Groups one of whose transactions is refused: nothing of them is written.
            let fine = escrow_tx(payer, 1, "r-fine", &nonce(20));
            let refused = [
                ("a nonce used", escrow_tx(payer, 1, "r-again", &nonce(1))),
                ("a nonce claimed twice in the group", escrow_tx(payer, 1, "r-twin", &nonce(20))),
                ("a balance short", escrow_tx(payer, 1_000, "r-big", &nonce(21))),
                ("a session's budget short", by_session(escrow_tx(holder, 8, "r-s3", &nonce(22)), 8, 0)),
                ("a payment closed twice", capture_tx(payer, 20, "r-captured")),
                ("a session released below zero", by_session(refund_tx(holder, 5, "r-s1"), 0, 6)),
            ];
            for (why, tx) in refused {
                assert!(!group.commit_as_one_group(&[fine.clone(), tx]).await.expect(why), "{why}: the group was written");
                assert_eq!(ledger_rows(&grouped.url).await, rows, "{why}: the refused group wrote rows");
            }
            assert_eq!(session_rows(&grouped.url).await, vec![("s1".to_owned(), "5".to_owned())]);
            one.close().await;
            group.close().await;
        })
        .await;
    })
    .await;
}

/// Concurrent payments on one gateway go through the group committer: groups form, every
/// payment is written once, a nonce sent twice pays once, and the ledger balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payments_are_written_in_groups() {
    use verinet_primitives::Address;
    use verinet_store::{PaymentStatus, StoreError, ledger_conformance::{capture_tx, escrow_tx, mint_tx}};
    on_fresh_db(|db| async move {
        let store = SqlStore::connect(&db.url).await.expect("pg");
        let payer = Address::repeat_byte(0x41);
        store.commit(&mint_tx(payer, 10_000)).await.expect("mint");
        // 64 payments of 7; every eighth one's nonce is sent by a second request too.
        let tasks: Vec<_> = (0..72u64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let n = if i < 64 { i } else { (i - 64) * 8 };
                    let id = format!("r{i}");
                    match store.commit(&escrow_tx(payer, 7, &id, &format!("0x{n:064x}"))).await {
                        Ok(()) => {
                            store.commit(&capture_tx(payer, 7, &id)).await.expect("capture");
                            Some(n)
                        }
                        Err(StoreError::NonceUsed { .. }) => None,
                        Err(e) => panic!("{id}: {e}"),
                    }
                })
            })
            .collect();
        let mut paid = Vec::new();
        for t in tasks {
            paid.extend(t.await.expect("task"));
        }
        paid.sort_unstable();
        assert_eq!(paid, (0..64).collect::<Vec<_>>(), "each nonce pays once");
        assert!(store.ledger_grouped() > 0, "no group of two or more was written");
        let b = store.balances(payer).await.expect("balances");
        assert_eq!((b.available, b.escrow), (10_000 - 64 * 7, 0));
        assert_eq!(store.payments_with_status(PaymentStatus::Captured, Address::repeat_byte(0xee), i64::MAX).await.expect("captured").len(), 64);
        assert!(store.totals().await.expect("totals").balanced());
        store.close().await;
    })
    .await;
}
