//! The conformance suite and PostgreSQL specifics, each test on a fresh database of the server
//! named by `VERINET_TEST_POSTGRES_URL`, dropped afterwards.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use futures::FutureExt;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use verinet_store::{ModelStore, SqlStore, conformance};

const ENV: &str = "VERINET_TEST_POSTGRES_URL";

/// The server URL. Missing is a failure, not a skip: a green run must mean PostgreSQL was tested.
fn server_url() -> String {
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{ENV} is not set: the PostgreSQL tests need a server. Start one and export its URL with\n\
             \n    export {ENV}=$(bash scripts/postgres.sh | tail -n 1)\n\n\
             or run the whole suite the README way: bash scripts/test.sh"
        ),
    }
}

/// A database created for one test, dropped by [`TestDb::drop_db`].
struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let server = server_url();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let name = format!(
            "verinet_test_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {ENV}={server}: {e} (run scripts/postgres.sh)"));
        // A collation that skips punctuation, as glibc's en_US.UTF-8 (a common server default)
        // does, so the suite catches SQL that relies on byte-order text comparison.
        let icu = format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted' LOCALE 'C'"
        );
        if let Err(e) = admin.execute(AssertSqlSafe(icu)).await {
            eprintln!("server without ICU ({e}); test database uses the server's default collation");
            admin.execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await.expect("create database");
        }
        admin.close().await.ok();
        let mut url = url::Url::parse(&server).expect("server url");
        url.set_path(&name);
        Self { server, name, url: url.to_string() }
    }

    async fn drop_db(self) {
        let mut admin = PgConnection::connect(&self.server).await.expect("connect to drop");
        admin
            .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
            .await
            .expect("drop database");
    }
}

/// Runs `test` against a store on a fresh database; drops the database even if the test panics.
async fn on_fresh_db<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDb::create().await;
    let keep = TestDb { server: db.server.clone(), name: db.name.clone(), url: db.url.clone() };
    let outcome = AssertUnwindSafe(test(db)).catch_unwind().await;
    keep.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
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
