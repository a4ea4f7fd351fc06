use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use verinet_primitives::Address;

use crate::Result;

/// Signed receipts and the Merkle batches that seal them.
///
/// Receipts arrive in bulk from a buffer (the signed copy is already with the client; storage is
/// for lookups and proofs). Sealing is one transaction: the batch row and the batch id of each
/// of its receipts commit together, and only receipts still unbatched are taken, so concurrent
/// sealers never put one receipt in two batches.
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Stores receipts; a request id stored before is left as it was.
    async fn insert_receipts(&self, receipts: &[ReceiptRecord]) -> Result<()>;

    /// One receipt.
    async fn receipt(&self, request_id: &str) -> Result<Option<ReceiptRecord>>;

    /// Up to `limit` of `node`'s unbatched receipts, oldest first.
    async fn unbatched(&self, node: Address, limit: u32) -> Result<Vec<ReceiptRecord>>;

    /// Seals `batch` over `fresh` receipts, stored now already sealed in `batch` whatever their
    /// own `batch_id` says (the sealer's own, never stored before), and the stored unsealed
    /// receipts `stored_ids` (those committed with a capture). [`crate::StoreError::Invalid`], and nothing written, if a fresh one is stored
    /// already or a stored one is unknown or sealed, or the batch's size is not their count.
    async fn seal_batch(&self, batch: &BatchRecord, fresh: &[ReceiptRecord], stored_ids: &[String]) -> Result<()>;

    /// One batch.
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>>;

    /// The digests sealed in a batch, pruned receipts' included (in no particular order; the
    /// tree sorts them).
    async fn batch_digests(&self, id: &str) -> Result<Vec<String>>;

    /// Where a sealed receipt sits, whether its body is kept or pruned: `(batch id, digest)`.
    /// `None` if unknown or not sealed yet.
    async fn sealed_leaf(&self, request_id: &str) -> Result<Option<(String, String)>>;

    /// Retention: drops the bodies of up to about `limit` sealed receipts created before
    /// `before_ms`, oldest first, keeping each one's request id, batch and digest, so its
    /// inclusion proof still verifies. Receipts not sealed yet are never pruned. Returns how
    /// many were pruned (a few over `limit` when many share one millisecond).
    async fn prune_receipts(&self, before_ms: i64, limit: u32) -> Result<u64>;

    /// Records a proven mismatch (once per request and worker).
    async fn insert_dispute(&self, d: &DisputeRecord) -> Result<()>;

    /// Disputes of one request (one per refuted worker).
    async fn request_disputes(&self, request_id: &str) -> Result<Vec<DisputeRecord>>;

    /// Disputes against `worker`, or all when `None`, newest first.
    async fn disputes(&self, worker: Option<Address>, limit: u32) -> Result<Vec<DisputeRecord>>;
}

/// A proven mismatch with both results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DisputeRecord {
    /// The request.
    pub request_id: String,
    /// The worker whose result was wrong.
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub worker: Address,
    /// Who caught it (a validator, or a quorum peer of the majority).
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub validator: Address,
    /// `sampled` or `quorum`.
    pub mode: String,
    /// Canonical hash of the worker's outputs.
    pub worker_output: String,
    /// Canonical hash of the validator's (majority's) outputs.
    pub validator_output: String,
    /// Where they differ (the tolerance mismatch).
    pub detail: String,
    /// Stake slashed, base units.
    pub slashed: u128,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// A stored receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// Request id.
    pub request_id: String,
    /// Signing node.
    pub node: Address,
    /// EIP-712 digest, `0x` hex (the Merkle leaf value).
    pub digest: String,
    /// The signed receipt JSON.
    pub body: String,
    /// The sealing batch, if sealed.
    pub batch_id: Option<String>,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// A sealed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Batch id.
    pub id: String,
    /// Sealing node.
    pub node: Address,
    /// Merkle root, `0x` hex.
    pub root: String,
    /// Number of receipts.
    pub size: u64,
    /// The node's signature over the root.
    pub signature: String,
    /// Unix ms.
    pub created_at_ms: i64,
}
