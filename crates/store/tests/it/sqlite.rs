//! The conformance suite and SQLite specifics, each test on its own database file.

use std::{future::Future, sync::Arc};

use sqlx::{Connection, Row, SqliteConnection};
use verinet_store::{LedgerStore, ReceiptStore, ModelStore, SqlStore, conformance};

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display())
}

async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn ModelStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(&url(&dir)).await.expect("connect sqlite");
    assert_eq!(store.backend(), "sqlite");
    test(Arc::new(store)).await;
}

mod conformance_sqlite {
    use super::with_store;
    verinet_store::model_store_conformance!(with_store);
}

async fn with_ledger<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn LedgerStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(&url(&dir)).await.expect("connect sqlite");
    test(Arc::new(store)).await;
}

async fn with_receipts<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn ReceiptStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect(&url(&dir)).await.expect("connect sqlite");
    test(Arc::new(store)).await;
}

mod receipt_conformance_sqlite {
    use super::with_receipts;
    verinet_store::receipt_store_conformance!(with_receipts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_receipt_is_stored_with_its_capture() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::connect(&url(&dir)).await.unwrap());
    verinet_store::ledger_conformance::kept_receipt_is_stored(store.clone(), store).await;
}

mod ledger_conformance_sqlite {
    use super::with_ledger;
    verinet_store::ledger_store_conformance!(with_ledger);
}

/// On a SQLite file an escrow is held in the writer's memory until its capture or refund
/// writes both: a process that dies first leaves the payer whole, the nonce unclaimed and no
/// payment to recover; one that captures writes the escrow and the capture together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_held_when_the_process_dies_leaves_nothing() {
    use verinet_store::{Bucket, LedgerTx, Posting, TxKind, ledger_conformance::escrow_tx};
    let dir = tempfile::tempdir().unwrap();
    let payer = verinet_primitives::Address::repeat_byte(1);
    let gateway = verinet_primitives::Address::repeat_byte(0xee);
    let nonce = format!("0x{:064x}", 9);
    let mint = LedgerTx {
        id: format!("0x{:064x}", 1),
        kind: TxKind::Mint,
        postings: vec![Posting::new(verinet_store::MINT_ACCOUNT, Bucket::Minted, -10), Posting::new(payer, Bucket::Available, 10)],
        memo: String::new(),
        at_ms: 1,
        nonce: None,
        payment: None,
        session_spend: None,
    };
    {
        let store = SqlStore::connect(&url(&dir)).await.unwrap();
        store.commit(&mint).await.unwrap();
        store.commit(&escrow_tx(payer, 6, "r1", &nonce)).await.unwrap();
        assert_eq!(store.audit().await.unwrap().open_escrows, 1);
        // Dropped without a close, as a killed process would be.
    }
    let store = SqlStore::connect(&url(&dir)).await.unwrap();
    assert_eq!(store.balances(payer).await.unwrap().available, 10);
    assert!(store.payment("r1").await.unwrap().is_none());
    assert!(!store.nonce_used(payer, &nonce).await.unwrap());
    assert!(store.payments_with_status(verinet_store::PaymentStatus::Escrowed, gateway, i64::MAX).await.unwrap().is_empty());
    let on_disk = |sql: &'static str| {
        let url = url(&dir);
        async move {
            let mut conn = SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql).fetch_one(&mut conn).await.unwrap().get::<i64, _>(0)
        }
    };
    assert_eq!(on_disk("SELECT COUNT(*) FROM payments").await, 0);

    // The same authorization sent again opens, and its capture writes both transactions.
    store.commit(&escrow_tx(payer, 6, "r2", &nonce)).await.unwrap();
    assert_eq!(on_disk("SELECT COUNT(*) FROM ledger_txs").await, 1, "only the mint is written while the escrow is held");
    let mut capture = escrow_tx(payer, 6, "r2", &nonce);
    capture.kind = TxKind::Refund;
    capture.id = format!("0x{:064x}", 3);
    capture.nonce = None;
    capture.postings = vec![Posting::new(payer, Bucket::Escrow, -6), Posting::new(payer, Bucket::Available, 6)];
    capture.payment = Some(verinet_store::PaymentChange::Close {
        request_id: "r2".into(),
        to: verinet_store::PaymentStatus::Refunded,
        output_hash: None,
        reason: Some("test".into()),
        kept: None,
    });
    store.commit(&capture).await.unwrap();
    assert_eq!(on_disk("SELECT COUNT(*) FROM ledger_txs").await, 3);
    assert_eq!(store.request_txs("r2").await.unwrap(), vec![TxKind::Escrow, TxKind::Refund]);
    assert!(store.nonce_used(payer, &nonce).await.unwrap());
    assert!(store.totals().await.unwrap().balanced());
}

#[tokio::test]
async fn file_is_wal_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&url(&dir)).await.unwrap();
    let mut conn = SqliteConnection::connect(&url(&dir)).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(mode, "wal");
    // The schema's foreign keys hold: no version without its model.
    let fk: i64 = sqlx::query("PRAGMA foreign_keys").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(fk, 1);
    let orphan = sqlx::query(
        "INSERT INTO model_versions (name, version, major, minor, patch, pre, sha256, size, description, tags, \
         license, price, signature, publish_signature, published_at, search) \
         VALUES ('ghost', '1.0.0', 1, 0, 0, '', 'x', 0, '', '[]', '', '0', '{}', '', 0, '')",
    );
    assert!(orphan.execute(&mut conn).await.is_err(), "foreign key enforced");
    store.close().await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let v = conformance::sample("persisted", "1.0.0", conformance::owner(1));
    {
        let store = SqlStore::connect(&url(&dir)).await.unwrap();
        store.insert_version(&v).await.unwrap();
        store.close().await;
    }
    let store = SqlStore::connect(&url(&dir)).await.unwrap();
    assert_eq!(store.latest("persisted").await.unwrap().unwrap().id, v.id);
}

#[tokio::test]
async fn in_memory_database_works() {
    let store = SqlStore::connect("sqlite::memory:").await.unwrap();
    let v = conformance::sample("memory", "1.0.0", conformance::owner(1));
    store.insert_version(&v).await.unwrap();
    // Reads through the pool see the write: one shared in-memory database, not one per connection.
    for _ in 0..4 {
        assert_eq!(store.owner("memory").await.unwrap(), Some(v.owner));
    }
}

#[tokio::test]
async fn unknown_url_is_refused() {
    match SqlStore::connect("mysql://localhost/x").await {
        Err(verinet_store::StoreError::UnsupportedUrl { url }) => assert_eq!(url, "mysql://localhost/x"),
        other => panic!("expected UnsupportedUrl, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tallies_and_events_age_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::connect(&url(&dir)).await.unwrap());
    verinet_store::event_conformance::tallies_and_events_age_out(store).await;
}
