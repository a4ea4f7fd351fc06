//! Payments for verinet: x402 v2, schemes `exact` (EIP-3009 authorizations) and `upto` (Permit2
//! permits for a maximum), settled on the node's double-entry ledger, and spending sessions for
//! clients that cannot sign per request.
//!
//! - [`wire`]: the x402 JSON shapes and header encoding (`PAYMENT-REQUIRED`,
//!   `PAYMENT-SIGNATURE`, legacy `X-PAYMENT`, `PAYMENT-RESPONSE`, facilitator bodies), and
//!   [`wire::decode_payment`], which tells an `exact` payload from an `upto` one.
//! - [`X402Config`]: a node's terms (chain, token, payee) -> requirements, and
//!   [`X402Config::verify`]: every check of an `exact` payload that needs no database.
//! - `upto`: [`X402Config::upto_requirements`] and [`X402Config::verify_upto`], the same for a
//!   Permit2 `PermitWitnessTransferFrom` with x402's witness, and [`sign_upto_payment`].
//! - [`Facilitator`]: `verify` and `settle` of the x402 facilitator API over the ledger.
//! - [`SpendingCap`]: an EIP-712 signed budget exchanged for a bearer token.
//! - [`PaymentError`]: each refusal with a stable code and its x402 reason.

mod error;
mod exact;
mod facilitator;
mod session;
mod upto;
pub mod wire;

pub use error::PaymentError;
pub use exact::{VerifiedPayment, X402Config, authorization_hash, devnet_asset, recover, sign_payment};
pub use facilitator::{Facilitator, from_ledger_error, unix_now};
pub use session::{SpendingCap, new_session_token, token_hash};
pub use upto::{
    PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY, permit2_domain, permit2_nonce_key, sign_upto_payment, upto_signing_hash,
};
