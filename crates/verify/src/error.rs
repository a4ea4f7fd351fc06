use alloy_primitives::{Address, B256};

/// Why a receipt or proof does not check out, or the receipt log failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A Merkle tree needs at least one value (OZ: "Expected non-zero number of leaves").
    #[error("cannot build a Merkle tree over no values")]
    EmptyBatch,
    /// The receipt store failed.
    #[error(transparent)]
    Store(#[from] verinet_store::StoreError),
    /// A field does not parse.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The stated digest is not the EIP-712 hash of the stated body.
    #[error("digest {got} is not the EIP-712 hash of the receipt ({expected})")]
    DigestMismatch {
        /// Stated.
        got: B256,
        /// Recomputed.
        expected: B256,
    },
    /// The signature does not parse or recover.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Signed by someone other than the node the receipt names.
    #[error("signed by {got}, the receipt names node {expected}")]
    WrongSigner {
        /// Recovered signer.
        got: Address,
        /// The node named.
        expected: Address,
    },
}
