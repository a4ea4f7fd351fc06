//! The money rules of verinet, over the double-entry [`LedgerStore`](verinet_store::LedgerStore).
//!
//! - [`FeeSchedule`], [`Quote`]: the price of one call (creator royalty + operator compute fee +
//!   verification fee + protocol fee + app markup) and who receives each part.
//! - [`Ledger`]: faucet mints, escrow of a paid request, capture (the fee split, with the result
//!   hash) or refund, plain transfers (x402 settle), staking, account views, crash recovery.
//! - [`LedgerError`] and [`Result`].
//!
//! Amounts are integer base units (18 decimals) as `u128`; on the wire they are decimal strings.

mod error;
mod ledger;
mod pricing;

pub use error::{LedgerError, Result};
pub use ledger::{AccountView, Escrow, EscrowRequest, Keep, Ledger, PaidBy, SessionTerms, new_tx_id};
pub use pricing::{FeeSchedule, Payees, Quote};
