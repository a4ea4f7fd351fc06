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

/// The ledger on a fresh file opened with `options`.
async fn with_ledger_opened<F, Fut>(options: verinet_store::StoreOptions, test: F)
where
    F: FnOnce(Arc<dyn LedgerStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::connect_with(&url(&dir), &options).await.expect("connect sqlite");
    test(Arc::new(store)).await;
}

/// The node's opt-in `[payments] capture_flush_ms`: captures and refunds of held escrows are
/// answered first and written with the next group commit, up to 50 ms later here (long enough
/// that the suite's reads meet them in memory).
async fn with_ledger_closing_late<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn LedgerStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    with_ledger_opened(closing_late(), test).await;
}

fn closing_late() -> verinet_store::StoreOptions {
    verinet_store::StoreOptions { close_delay: std::time::Duration::from_millis(50), ..Default::default() }
}

mod ledger_conformance_sqlite_closing_late {
    use super::with_ledger_closing_late;
    verinet_store::ledger_store_conformance!(with_ledger_closing_late);
}

/// The same with a 1 ms delay: groups of closes are nearly always being written by the
/// committer thread while the suite's escrows, closes and reads arrive. Each commit is
/// reported 3 ms after it lands: escrows checked in between meet the escrows it wrote both in
/// the file and still held.
async fn with_ledger_closing_soon<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn LedgerStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let soon = verinet_store::StoreOptions {
        close_delay: std::time::Duration::from_millis(1),
        commit_report_pause: std::time::Duration::from_millis(3),
    };
    with_ledger_opened(soon, test).await;
}

mod ledger_conformance_sqlite_closing_soon {
    use super::with_ledger_closing_soon;
    verinet_store::ledger_store_conformance!(with_ledger_closing_soon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_receipt_is_stored_with_its_capture_answered_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::connect_with(&url(&dir), &closing_late()).await.unwrap());
    verinet_store::ledger_conformance::kept_receipt_is_stored(store.clone(), store).await;
}

/// What `sql` (a count) reads from the file itself, through a connection of its own.
async fn count_on_disk(dir: &tempfile::TempDir, sql: &'static str) -> i64 {
    let mut conn = SqliteConnection::connect(&url(dir)).await.unwrap();
    sqlx::query(sql).fetch_one(&mut conn).await.unwrap().get::<i64, _>(0)
}

/// A capture answered before it is written: reads see it at once; it reaches the file with the
/// next group commit (the delay, or a flush); a process that dies first loses escrow and
/// capture together, so the payer keeps the money and the nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_capture_is_written_within_the_delay_or_lost_whole() {
    use verinet_store::{PaymentStatus, TxKind, ledger_conformance::{capture_tx, escrow_tx, mint_tx}};
    let dir = tempfile::tempdir().unwrap();
    let payer = verinet_primitives::Address::repeat_byte(1);
    // capture_tx's creator.
    let creator = verinet_primitives::Address::repeat_byte(0xc1);
    let on_disk = |sql: &'static str| count_on_disk(&dir, sql);
    let (n1, n2) = (format!("0x{:064x}", 7), format!("0x{:064x}", 8));
    let slow = verinet_store::StoreOptions { close_delay: std::time::Duration::from_secs(3600), ..Default::default() };
    {
        let store = SqlStore::connect_with(&url(&dir), &slow).await.unwrap();
        store.commit(&mint_tx(payer, 10)).await.unwrap();
        store.commit(&escrow_tx(payer, 6, "r1", &n1)).await.unwrap();
        store.commit(&capture_tx(payer, 6, "r1")).await.unwrap();
        // Answered: every read sees it, the file does not have it.
        assert_eq!(store.payment("r1").await.unwrap().unwrap().status, PaymentStatus::Captured);
        assert_eq!(store.balances(creator).await.unwrap().available, 3);
        assert_eq!(store.balances(payer).await.unwrap().available, 4);
        assert!(store.nonce_used(payer, &n1).await.unwrap());
        assert_eq!(store.request_txs("r1").await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
        assert_eq!(store.spent(payer).await.unwrap(), 6);
        assert!(store.totals().await.unwrap().balanced());
        assert!(store.commit(&capture_tx(payer, 6, "r1")).await.is_err(), "a payment closes once");
        assert_eq!(on_disk("SELECT COUNT(*) FROM ledger_txs").await, 1, "only the mint is on disk");
        // Dropped with the capture in memory, as a killed process would be (the writer
        // thread is stopped before it can write: the store is forgotten, not dropped).
        std::mem::forget(store);
    }
    let store = SqlStore::connect_with(&url(&dir), &slow).await.unwrap();
    assert!(store.payment("r1").await.unwrap().is_none(), "escrow and capture are lost together");
    assert_eq!(store.balances(payer).await.unwrap().available, 10);
    assert!(!store.nonce_used(payer, &n1).await.unwrap(), "the payer may send the authorization again");

    // Written by a flush (a graceful stop), or by the next transaction that is not a close.
    store.commit(&escrow_tx(payer, 6, "r2", &n2)).await.unwrap();
    store.commit(&capture_tx(payer, 6, "r2")).await.unwrap();
    assert_eq!(on_disk("SELECT COUNT(*) FROM ledger_txs").await, 1);
    // The audit writes what waits before it reads.
    let audit = store.audit().await.unwrap();
    // The mint account, the payer and the capture's three payees.
    assert_eq!((audit.open_escrows, audit.payments.get("captured").copied(), audit.accounts), (0, Some(1), 5));
    assert_eq!(on_disk("SELECT COUNT(*) FROM ledger_txs").await, 3);
    LedgerStore::flush(&store).await.unwrap();
    assert_eq!(on_disk("SELECT COUNT(*) FROM payments WHERE status = 'captured'").await, 1);
    assert_eq!(store.balances(creator).await.unwrap().available, 3, "seen once, from the file");
    assert!(store.totals().await.unwrap().balanced());
}

/// With a short delay the capture reaches the file by itself, also when the escrow and the
/// close were answered on the caller's thread while the writer thread slept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_capture_reaches_the_file_after_the_delay() {
    use verinet_store::ledger_conformance::{escrow_tx, mint_tx, refund_tx};
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect_with(&url(&dir), &closing_late()).await.unwrap();
    let payer = verinet_primitives::Address::repeat_byte(1);
    store.commit(&mint_tx(payer, 10)).await.unwrap();
    // The writer thread is done with the mint and waits for work with nothing due: the escrow
    // and its refund are answered on this thread, and only a word from it wakes the writer.
    let idle = std::time::Duration::from_millis(100);
    tokio::time::sleep(idle).await;
    store.commit(&escrow_tx(payer, 6, "r1", &format!("0x{:064x}", 7))).await.unwrap();
    tokio::time::sleep(idle).await;
    let refund = refund_tx(payer, 6, "r1");
    let answered = std::time::Instant::now();
    store.commit(&refund).await.unwrap();
    let mut conn = SqliteConnection::connect(&url(&dir)).await.unwrap();
    loop {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_txs").fetch_one(&mut conn).await.unwrap().get(0);
        if n == 3 {
            break;
        }
        assert!(answered.elapsed() < std::time::Duration::from_secs(5), "the refund was never written");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// On a SQLite file an escrow is held in the writer's memory until its capture or refund
/// writes both: a process that dies first leaves the payer whole, the nonce unclaimed and no
/// payment to recover; one that captures writes the escrow and the capture together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_held_when_the_process_dies_leaves_nothing() {
    // Ids from the conformance helpers' sequence only: a fixed id could meet one of theirs.
    use verinet_store::{TxKind, ledger_conformance::{escrow_tx, mint_tx, refund_tx}};
    let dir = tempfile::tempdir().unwrap();
    let payer = verinet_primitives::Address::repeat_byte(1);
    let gateway = verinet_primitives::Address::repeat_byte(0xee);
    let nonce = format!("0x{:064x}", 9);
    let mint = mint_tx(payer, 10);
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
    let on_disk = |sql: &'static str| count_on_disk(&dir, sql);
    assert_eq!(on_disk("SELECT COUNT(*) FROM payments").await, 0);

    // The same authorization sent again opens, and its refund writes both transactions.
    store.commit(&escrow_tx(payer, 6, "r2", &nonce)).await.unwrap();
    assert_eq!(on_disk("SELECT COUNT(*) FROM ledger_txs").await, 1, "only the mint is written while the escrow is held");
    let refund = refund_tx(payer, 6, "r2");
    store.commit(&refund).await.unwrap();
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

/// Migration 0015 moves the answers kept with captures out of `payments` into a table of their
/// own: a file written before it keeps every answer, and forgets them as before.
#[tokio::test]
async fn answers_kept_before_migration_0015_are_kept_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // The file as the migrations before 0015 leave it, with two captures: one answer kept.
    let before = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0015" {
            std::fs::copy(&path, before.path().join(&name)).unwrap();
        }
    }
    let payer = verinet_primitives::Address::repeat_byte(0x42);
    let mut conn = SqliteConnection::connect(&url(&dir)).await.unwrap();
    sqlx::migrate::Migrator::new(before.path()).await.unwrap().run(&mut conn).await.unwrap();
    for (id, nonce, answer) in [("r1", "0x01", Some("{\"outputs\":[1]}")), ("r2", "0x02", None)] {
        sqlx::query(
            "INSERT INTO payments (request_id, payer, amount, quote, model, gateway, method, reference, status, \
             input_hash, escrow_tx, created_at, settled_at, answer, charged) \
             VALUES ($1, $2, '10', '{}', 'm', $2, 'x402', $3, 'captured', '0xab', 't', 1000, 2000, $4, '10')",
        )
        .bind(id)
        .bind(format!("{payer:#x}"))
        .bind(nonce)
        .bind(answer)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = SqlStore::connect(&url(&dir)).await.unwrap();
    let kept = |found: Option<(verinet_store::PaymentRecord, Option<verinet_store::KeptAnswer>)>| {
        let (record, kept) = found.expect("the payment is found");
        (record.request_id, kept.map(|k| (k.answer, k.charged)))
    };
    let r1 = kept(store.payment_by_reference(payer, "0x01").await.unwrap());
    assert_eq!(r1, ("r1".to_owned(), Some(("{\"outputs\":[1]}".to_owned(), 10))));
    assert_eq!(kept(store.payment_by_reference(payer, "0x02").await.unwrap()), ("r2".to_owned(), None));
    assert_eq!(store.forget_answers(2000).await.unwrap(), 0, "settled at 2000, not before");
    assert_eq!(store.forget_answers(2001).await.unwrap(), 1);
    assert_eq!(kept(store.payment_by_reference(payer, "0x01").await.unwrap()), ("r1".to_owned(), None));
    store.close().await;
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
