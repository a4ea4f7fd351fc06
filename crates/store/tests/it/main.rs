//! Integration tests of verinet-store: the `ModelStore` conformance suite against SQLite and
//! PostgreSQL, backend-specific checks, and the blob store.
//!
//! PostgreSQL tests need a server: `VERINET_TEST_POSTGRES_URL=$(bash scripts/postgres.sh | tail -n 1)`
//! (scripts/test.sh does this). They fail, never skip, without it.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod blob;
mod postgres;
mod sqlite;
