//! Storage for verinet: traits at the I/O boundary and their implementations.
//!
//! - [`ModelStore`]: published model versions, their owners and usage counters, with the
//!   records [`NewModelVersion`], [`ModelVersion`], [`ModelSummary`], [`Usage`] and the list
//!   query [`ModelQuery`] / [`ModelSort`]; [`ModelWatch`] reports other processes' publications.
//! - [`SqlStore`]: the SQL implementation, one code path over SQLite (embedded default) and
//!   PostgreSQL, with the schema migrations in `migrations/`.
//! - [`LedgerStore`]: the money store: a double-entry ledger whose one write path,
//!   [`LedgerStore::commit`], applies a [`LedgerTx`] (postings, a claimed nonce, a paid request
//!   opened or closed, a session debit) atomically; plus apps and spending sessions.
//! - [`ReceiptStore`]: signed receipts ([`ReceiptRecord`]) and the Merkle batches that seal
//!   them ([`BatchRecord`]).
//! - [`EventStore`]: usage events ([`EventRecord`]) in batches, read by window.
//! - [`PendingWrites`]: records queued off the request path and written in bulk, kept on a
//!   failed write.
//! - [`BlobStore`]: content-addressed model bytes; [`ObjectBlobStore`] implements it over any
//!   `object_store` (local directory by default, S3-compatible at scale).
//! - [`StoreError`] and [`Result`]: the one error type of the crate.
//! - `conformance` (feature `test-utils`): the behaviour every [`ModelStore`] must show, run
//!   against SQLite and PostgreSQL; `PgTestDb`, throwaway PostgreSQL databases for tests.

mod blob;
#[cfg(any(test, feature = "test-utils"))]
pub mod conformance;
mod error;
mod event;
#[cfg(any(test, feature = "test-utils"))]
pub mod event_conformance;
mod held;
mod ledger;
mod ledger_commit;
#[cfg(any(test, feature = "test-utils"))]
pub mod ledger_conformance;
mod model;
mod pending;
mod pg_ledger;
mod receipt;
#[cfg(any(test, feature = "test-utils"))]
pub mod receipt_conformance;
#[cfg(any(test, feature = "test-utils"))]
mod pg_test;
mod sql;
mod sql_event;
mod sql_ledger;
mod sql_receipt;
mod sqlite_ledger;

pub use blob::{BlobStore, ObjectBlobStore};
pub use error::{Result, StoreError};
pub use event::{EventRecord, EventStore, TallyRecord};
pub use ledger::{
    App, Balances, Bucket, Kept, KeptAnswer, LedgerAudit, LedgerStore, LedgerTotals, LedgerTx, MINT_ACCOUNT, NewPayment, NonceClaim, PaymentChange,
    PaymentRecord, PaymentStatus, Posting, Role, SessionSpend, SpendingSession, TxKind,
};
pub use pending::PendingWrites;
pub use receipt::{BatchRecord, DisputeRecord, ReceiptRecord, ReceiptStore};
pub use model::{ModelQuery, ModelSort, ModelStore, ModelSummary, ModelVersion, ModelWatch, NewModelVersion, Usage};
pub use sql::{SqlStore, StoreOptions};
#[cfg(any(test, feature = "test-utils"))]
pub use pg_test::{PG_ENV, PgTestDb, pg_server_url};
