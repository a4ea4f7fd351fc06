use verinet_store::StoreError;

/// Result alias for this crate.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Why a money operation did not happen. Nothing moved in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An amount the ledger refuses (zero where it must be positive, out of range).
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// The store refused or failed (insufficient funds, nonce used, payment state, database).
    #[error(transparent)]
    Store(#[from] StoreError),
}
