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
