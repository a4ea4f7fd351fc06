//! Throwaway PostgreSQL databases for tests (feature `test-utils`), on the server named by
//! `VERINET_TEST_POSTGRES_URL`. Used by this crate's suite and by the node's end-to-end tests.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Environment variable holding the test server's URL.
pub const PG_ENV: &str = "VERINET_TEST_POSTGRES_URL";

/// The server URL. Missing is a failure, not a skip: a green run must mean PostgreSQL was tested.
pub fn pg_server_url() -> String {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{PG_ENV} is not set: the PostgreSQL tests need a server. Start one and export its URL with\n\
             \n    export {PG_ENV}=$(bash scripts/postgres.sh | tail -n 1)\n\n\
             or run the whole suite the README way: bash scripts/test.sh"
        ),
    }
}

/// A database created for one test, dropped by [`PgTestDb::drop_db`].
#[derive(Debug, Clone)]
pub struct PgTestDb {
    server: String,
    name: String,
    /// URL of the fresh database.
    pub url: String,
}

impl PgTestDb {
    /// Creates a uniquely named database on the test server.
    pub async fn create() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let server = pg_server_url();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let name = format!(
            "verinet_test_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {PG_ENV}={server}: {e} (run scripts/postgres.sh)"));
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

    /// Drops the database, disconnecting whoever still uses it.
    ///
    /// `WITH (FORCE)` refuses (SQLSTATE 42501) when the database holds a backend that a role
    /// without superuser may not signal: an autovacuum worker, which a test's burst of writes can
    /// start, or a connection still starting. So on a refusal this ends the sessions of its own
    /// role and runs a plain `DROP DATABASE`, which asks autovacuum to stop and waits for it, and
    /// tries again for a few seconds before it fails loudly.
    pub async fn drop_db(self) {
        let mut admin = PgConnection::connect(&self.server).await.expect("connect to drop");
        let force = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let plain = format!("DROP DATABASE IF EXISTS \"{}\"", self.name);
        let mut last = None;
        for _ in 0..20 {
            let Err(refused) = admin.execute(AssertSqlSafe(force.clone())).await else { return };
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()",
            )
            .bind(&self.name)
            .execute(&mut admin)
            .await
            .ok();
            match admin.execute(AssertSqlSafe(plain.clone())).await {
                Ok(_) => return,
                Err(plain) => last = Some((refused, plain)),
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("drop database {}: (force, plain) {last:?}", self.name);
    }

    /// Runs `test` against a fresh database; drops it even if the test panics.
    pub async fn with<F, Fut>(test: F)
    where
        F: FnOnce(PgTestDb) -> Fut,
        Fut: Future<Output = ()>,
    {
        let db = PgTestDb::create().await;
        let keep = db.clone();
        let outcome = AssertUnwindSafe(test(db)).catch_unwind().await;
        keep.drop_db().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
