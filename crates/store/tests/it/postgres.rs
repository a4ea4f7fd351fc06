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
