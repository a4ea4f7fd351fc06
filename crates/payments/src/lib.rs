//! Payments for verinet: x402 v2, scheme `exact`, EIP-3009 authorizations settled on the node's
//! double-entry ledger, and spending sessions for clients that cannot sign per request.
//!
//! - [`wire`]: the x402 JSON shapes and header encoding (`PAYMENT-REQUIRED`,
//!   `PAYMENT-SIGNATURE`, legacy `X-PAYMENT`, `PAYMENT-RESPONSE`, facilitator bodies).
//! - [`X402Config`]: a node's terms (chain, token, payee) -> requirements, and
//!   [`X402Config::verify`]: every check of a payload that needs no database.
//! - [`Facilitator`]: `verify` and `settle` of the x402 facilitator API over the ledger.
//! - [`SpendingCap`]: an EIP-712 signed budget exchanged for a bearer token.
//! - [`PaymentError`]: each refusal with a stable code and its x402 reason.

mod error;
mod exact;
mod facilitator;
mod session;
pub mod wire;

pub use error::PaymentError;
pub use exact::{VerifiedPayment, X402Config, authorization_hash, devnet_asset, recover, sign_payment};
pub use facilitator::{Facilitator, from_ledger_error, unix_now};
pub use session::{SpendingCap, new_session_token, token_hash};
