//! Receipt log: receipts buffered off the request path, stored in bulk, sealed into signed
//! Merkle batches every N receipts or T seconds; inclusion proofs on demand.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolStruct, sol};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, warn};
use verinet_primitives::wire::SignedReceipt;
use verinet_store::{BatchRecord, ReceiptRecord, ReceiptStore, StoreError};

use crate::{VerifyError, merkle::MerkleTree, receipt_domain};

sol! {
    /// The EIP-712 message a node signs for each sealed batch.
    #[derive(Debug)]
    struct ReceiptBatch {
        bytes32 root;
        uint256 size;
        uint64 timestamp;
    }
}

/// When to seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Seal as soon as this many receipts wait (and at most this many per batch).
    pub max_receipts: u32,
    /// Seal whatever waits at least this often.
    pub interval: Duration,
    /// Keep a sealed receipt's body this long, then keep only what its inclusion proof needs
    /// (checked at every seal tick); `None`: keep every body forever.
    pub retention: Option<Duration>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_receipts: 256, interval: Duration::from_secs(5), retention: Some(Duration::from_secs(24 * 3600)) }
    }
}

/// Receipts pruned per statement round: short write transactions that never hold the
/// database long.
const PRUNE_ROUND: u32 = 2048;

/// Where a receipt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// Signed and returned, not yet in a sealed batch.
    Pending,
    /// In a sealed, signed batch (mode `none`: nothing left to check).
    Final,
    /// A result for this request was refuted (the receipt shown is the checker's); the
    /// refuted worker was slashed. See `disputes`.
    Disputed,
}

/// `GET /v1/receipts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptInfo {
    /// Status.
    pub status: ReceiptStatus,
    /// The signed receipt.
    pub receipt: SignedReceipt,
    /// The sealing batch id.
    pub batch_id: Option<String>,
    /// Refuted results of this request, with both output hashes.
    pub disputes: Vec<verinet_store::DisputeRecord>,
}

/// A sealed batch as published: root, size, time and the node's EIP-712 signature over
/// `ReceiptBatch(bytes32 root,uint256 size,uint64 timestamp)` in the receipt domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchInfo {
    /// Batch id.
    pub id: String,
    /// The sealing node.
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub node: Address,
    /// Merkle root (OpenZeppelin StandardMerkleTree, leaf encoding `["bytes32"]`).
    #[schema(value_type = verinet_primitives::schema::Bytes32Schema)]
    pub root: B256,
    /// Receipts sealed.
    pub size: u64,
    /// Sealed at, unix ms.
    pub timestamp: u64,
    /// EIP-712 chain id.
    pub chain_id: u64,
    /// The node's signature over the batch.
    pub signature: String,
}

/// `GET /v1/receipts/{id}/proof`: everything needed to check inclusion offline, e.g. with
/// `StandardMerkleTree.verify(root, ["bytes32"], [digest], proof)` or MerkleProof.sol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InclusionProof {
    /// Request id.
    pub request_id: String,
    /// The leaf value: the receipt's EIP-712 digest.
    #[schema(value_type = verinet_primitives::schema::Bytes32Schema)]
    pub digest: B256,
    /// OpenZeppelin leaf encoding.
    pub leaf_encoding: Vec<String>,
    /// The leaf hash (double keccak of the ABI-encoded value).
    #[schema(value_type = verinet_primitives::schema::Bytes32Schema)]
    pub leaf: B256,
    /// Sibling hashes, bottom-up.
    #[schema(value_type = Vec<verinet_primitives::schema::Bytes32Schema>)]
    pub proof: Vec<B256>,
    /// The signed batch.
    pub batch: BatchInfo,
}

/// The batch message's signing hash.
pub fn batch_hash(root: B256, size: u64, timestamp: u64, chain_id: u64) -> B256 {
    ReceiptBatch { root, size: U256::from(size), timestamp }.eip712_signing_hash(&receipt_domain(chain_id))
}


/// How often a seal searches the store for unsealed receipts it was not handed.
pub const SEARCH_EVERY: Duration = Duration::from_secs(60);

/// Plain data, never left half-changed by a panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts `records` at the head of `queue`, in their order.
fn push_front_all(queue: &mut VecDeque<ReceiptRecord>, records: Vec<ReceiptRecord>) {
    for r in records.into_iter().rev() {
        queue.push_front(r);
    }
}

/// Buffers this node's receipts, seals them into batches, stores them, serves proofs.
///
/// A receipt queued here ([`ReceiptLog::record`]) waits in memory and is written once, already
/// sealed: its batch is built from memory, so the database never reads it back or updates it.
/// Receipts committed with a capture (the ledger stores those, unsealed) are sealed in the same
/// batches, by id: the capture hands this log their id and digest
/// ([`ReceiptLog::record_stored`]), so a seal does not read them back. The store is searched
/// for unsealed receipts this log was not handed (a run before this one) at the first seal,
/// then every [`SEARCH_EVERY`], and again after a search that found some.
pub struct ReceiptLog {
    store: Arc<dyn ReceiptStore>,
    key: Arc<PrivateKeySigner>,
    chain_id: u64,
    config: BatchConfig,
    pending: Mutex<VecDeque<ReceiptRecord>>,
    /// Receipts their capture stored unsealed, without their bodies (a seal needs the id and
    /// the digest).
    stored: Mutex<VecDeque<ReceiptRecord>>,
    /// When the store was last searched for unsealed receipts; `None`: at the next seal.
    searched: Mutex<Option<std::time::Instant>>,
    /// Held while a seal writes: the receipts it took from memory are in neither place until
    /// it is done, so a reader waits for it.
    sealing: tokio::sync::Mutex<()>,
    wake: Notify,
}

impl ReceiptLog {
    /// A log for receipts signed by `key` in `chain_id`'s domain.
    pub fn new(store: Arc<dyn ReceiptStore>, key: Arc<PrivateKeySigner>, chain_id: u64, config: BatchConfig) -> Self {
        Self {
            store,
            key,
            chain_id,
            config,
            pending: Mutex::default(),
            stored: Mutex::default(),
            searched: Mutex::default(),
            sealing: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        }
    }

    /// The store below (disputes are recorded there too).
    pub fn store(&self) -> &Arc<dyn ReceiptStore> {
        &self.store
    }

    /// A signed receipt as this node stores it (to queue, or to commit with a capture).
    pub fn record_of(&self, r: &SignedReceipt) -> ReceiptRecord {
        ReceiptRecord {
            request_id: r.receipt.request_id.clone(),
            // Batches are per gateway: the worker that signed is in the receipt itself.
            node: self.key.address(),
            digest: format!("{:#x}", r.digest),
            body: serde_json::to_string(r).unwrap_or_default(),
            batch_id: None,
            created_at_ms: i64::try_from(r.receipt.timestamp).unwrap_or(i64::MAX),
        }
    }

    /// Queues a signed receipt (never waits on the database).
    pub fn record(&self, r: &SignedReceipt) {
        let record = self.record_of(r);
        let waiting = {
            let mut pending = self.pending();
            pending.push_back(record);
            pending.len()
        };
        if waiting >= self.config.max_receipts as usize {
            self.wake.notify_one();
        }
    }

    /// What a seal needs of a receipt a capture stores (`record`, as [`ReceiptLog::record_of`]
    /// made it): all but its body. Taken before the capture, which keeps the record.
    pub fn stored_note(record: &ReceiptRecord) -> ReceiptRecord {
        ReceiptRecord {
            request_id: record.request_id.clone(),
            node: record.node,
            digest: record.digest.clone(),
            body: String::new(),
            batch_id: None,
            created_at_ms: record.created_at_ms,
        }
    }

    /// Takes note of a receipt its capture has stored unsealed (`note`, from
    /// [`ReceiptLog::stored_note`]), to seal it without reading it back.
    pub fn record_stored(&self, note: ReceiptRecord) {
        let stored = {
            let mut stored = lock(&self.stored);
            stored.push_back(note);
            stored.len()
        };
        if stored + self.pending().len() >= self.config.max_receipts as usize {
            self.wake.notify_one();
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<ReceiptRecord>> {
        lock(&self.pending)
    }

    /// Whether a seal searches the store now, and if so, notes the time.
    fn search_due(&self) -> bool {
        let mut searched = lock(&self.searched);
        let due = searched.is_none_or(|at| at.elapsed() >= SEARCH_EVERY);
        if due {
            *searched = Some(std::time::Instant::now());
        }
        due
    }

    /// Seals up to `max_receipts` waiting receipts, those queued here first, then those stored
    /// unsealed with a capture, into one signed batch, written in one transaction.
    pub async fn seal(&self) -> Result<Option<BatchInfo>, VerifyError> {
        let _sealing = self.sealing.lock().await;
        let max = self.config.max_receipts as usize;
        let fresh: Vec<ReceiptRecord> = {
            let mut pending = self.pending();
            let n = pending.len().min(max);
            pending.drain(..n).collect()
        };
        let mut stored: Vec<ReceiptRecord> = {
            let mut stored = lock(&self.stored);
            let n = stored.len().min(max - fresh.len());
            stored.drain(..n).collect()
        };
        let room = max - fresh.len() - stored.len();
        if room > 0 && self.search_due() {
            // The oldest unsealed, which may be those just taken: ask for enough to fill the room.
            match self.store.unbatched(self.key.address(), (room + stored.len()) as u32).await {
                Ok(found) => {
                    let known: HashSet<String> = stored.iter().map(|r| r.request_id.clone()).collect();
                    let others: Vec<ReceiptRecord> = found.into_iter().filter(|r| !known.contains(&r.request_id)).take(room).collect();
                    if !others.is_empty() {
                        // More may wait: search again at the next seal.
                        *lock(&self.searched) = None;
                    }
                    stored.extend(others);
                }
                Err(e) => {
                    self.put_back(fresh);
                    self.put_back_stored(stored);
                    return Err(e.into());
                }
            }
        }
        // A receipt both queued and committed with its capture is sealed once, as stored.
        let ids: HashSet<&str> = stored.iter().map(|r| r.request_id.as_str()).collect();
        let fresh: Vec<ReceiptRecord> = fresh.into_iter().filter(|r| !ids.contains(r.request_id.as_str())).collect();
        if fresh.is_empty() && stored.is_empty() {
            return Ok(None);
        }
        match self.write_batch(&fresh, &stored).await {
            Ok(info) => Ok(Some(info)),
            Err(e) => {
                self.requeue_after(fresh, &e).await;
                self.requeue_stored_after(stored, &e).await;
                Err(e)
            }
        }
    }

    /// Builds, signs and writes the batch over `fresh` and `stored`.
    async fn write_batch(&self, fresh: &[ReceiptRecord], stored: &[ReceiptRecord]) -> Result<BatchInfo, VerifyError> {
        let digests = stored
            .iter()
            .chain(fresh)
            .map(|r| r.digest.parse::<B256>().map_err(|e| VerifyError::Malformed(format!("digest {}: {e}", r.digest))))
            .collect::<Result<Vec<_>, _>>()?;
        let tree = MerkleTree::of(&digests)?;
        let timestamp = verinet_primitives::unix_ms_u64();
        let size = digests.len() as u64;
        let hash = batch_hash(tree.root(), size, timestamp, self.chain_id);
        let sig = self.key.sign_hash_sync(&hash).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let info = BatchInfo {
            id: format!("batch-{}", &hex::encode(hash)[..16]),
            node: self.key.address(),
            root: tree.root(),
            size,
            timestamp,
            chain_id: self.chain_id,
            signature: format!("0x{}", hex::encode(sig.as_bytes())),
        };
        let record = BatchRecord {
            id: info.id.clone(),
            node: info.node,
            root: format!("{:#x}", info.root),
            size,
            signature: info.signature.clone(),
            created_at_ms: i64::try_from(timestamp).unwrap_or(i64::MAX),
        };
        // The store writes `fresh` sealed in `record` (their own `batch_id` is not read).
        let ids: Vec<String> = stored.iter().map(|r| r.request_id.clone()).collect();
        self.store.seal_batch(&record, fresh, &ids).await?;
        debug!(batch = %info.id, size, root = %info.root, "receipts sealed");
        Ok(info)
    }

    /// After a failed seal, queues `fresh` again for the next one, but for receipts the store
    /// already holds (a refusal of the batch): those are sealed or wait there, and queueing
    /// them again would refuse every later batch.
    async fn requeue_after(&self, fresh: Vec<ReceiptRecord>, e: &VerifyError) {
        let mut keep = Vec::with_capacity(fresh.len());
        if matches!(e, VerifyError::Store(StoreError::Invalid(_))) {
            for r in fresh {
                match self.store.receipt(&r.request_id).await {
                    Ok(Some(_)) => warn!(request_id = %r.request_id, "a queued receipt was stored already; sealed as stored"),
                    _ => keep.push(r),
                }
            }
        } else {
            keep = fresh;
        }
        self.put_back(keep);
    }

    /// After a failed seal, takes note of the stored receipts it took again, but for those the
    /// store does not hold unsealed (a refusal of the batch: a capture that never committed,
    /// or a receipt sealed meanwhile), which would refuse every later batch.
    async fn requeue_stored_after(&self, stored: Vec<ReceiptRecord>, e: &VerifyError) {
        let mut keep = Vec::with_capacity(stored.len());
        if matches!(e, VerifyError::Store(StoreError::Invalid(_))) {
            for r in stored {
                match self.store.receipt(&r.request_id).await {
                    Ok(Some(found)) if found.batch_id.is_none() => keep.push(r),
                    Ok(_) => warn!(request_id = %r.request_id, "a stored receipt is sealed already or absent; not sealed again"),
                    Err(_) => keep.push(r),
                }
            }
        } else {
            keep = stored;
        }
        self.put_back_stored(keep);
    }

    fn put_back_stored(&self, records: Vec<ReceiptRecord>) {
        push_front_all(&mut lock(&self.stored), records);
    }

    /// Puts receipts taken for a seal back at the head of the queue, in their order.
    fn put_back(&self, records: Vec<ReceiptRecord>) {
        push_front_all(&mut self.pending(), records);
    }

    /// Seals every `interval`, or sooner when `max_receipts` wait, and prunes what is past the
    /// retention window every `interval`, until `stop` resolves; then seals what is left.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_prune = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = self.wake.notified() => {}
            }
            // Several batches may be due after a burst.
            loop {
                match self.seal().await {
                    Ok(Some(b)) if b.size == u64::from(self.config.max_receipts) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "sealing receipts failed; retrying at the next tick");
                        break;
                    }
                }
            }
            // Retention once per interval, not at every early seal a busy node wakes for.
            if last_prune.elapsed() >= self.config.interval {
                last_prune = std::time::Instant::now();
                if let Err(e) = self.prune().await {
                    warn!(error = %e, "pruning old receipts failed; retrying at the next tick");
                }
            }
        }
        while let Ok(Some(_)) = self.seal().await {}
    }

    /// Drops the bodies of sealed receipts past the retention window, in bounded rounds;
    /// returns how many.
    pub async fn prune(&self) -> Result<u64, VerifyError> {
        let Some(keep) = self.config.retention else { return Ok(0) };
        let before = verinet_primitives::unix_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let mut pruned = 0;
        loop {
            let n = self.store.prune_receipts(before, PRUNE_ROUND).await?;
            pruned += n;
            if n < u64::from(PRUNE_ROUND) {
                break;
            }
        }
        if pruned > 0 {
            debug!(pruned, "receipts past the retention window pruned (their proofs remain)");
        }
        Ok(pruned)
    }

    /// A receipt and its status, a just-answered request's (still queued here) included.
    pub async fn receipt(&self, request_id: &str) -> Result<Option<ReceiptInfo>, VerifyError> {
        let queued = {
            // A seal in progress has its receipts in neither place: wait for it.
            let _sealing = self.sealing.lock().await;
            self.pending().iter().find(|r| r.request_id == request_id).cloned()
        };
        let r = match queued {
            Some(r) => r,
            None => match self.store.receipt(request_id).await? {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        let receipt: SignedReceipt =
            serde_json::from_str(&r.body).map_err(|e| VerifyError::Malformed(format!("stored receipt: {e}")))?;
        let disputes = self.store.request_disputes(request_id).await?;
        let status = if !disputes.is_empty() {
            ReceiptStatus::Disputed
        } else if r.batch_id.is_some() {
            ReceiptStatus::Final
        } else {
            ReceiptStatus::Pending
        };
        Ok(Some(ReceiptInfo { status, receipt, batch_id: r.batch_id, disputes }))
    }

    /// The batch holding a receipt whose body was pruned; `None` if the body is still kept,
    /// the receipt is pending, or unknown.
    pub async fn pruned(&self, request_id: &str) -> Result<Option<String>, VerifyError> {
        if self.store.receipt(request_id).await?.is_some() {
            return Ok(None);
        }
        Ok(self.store.sealed_leaf(request_id).await?.map(|(batch, _)| batch))
    }

    /// The inclusion proof of a sealed receipt (its body kept or pruned); `None` if unknown or
    /// still pending.
    pub async fn proof(&self, request_id: &str) -> Result<Option<InclusionProof>, VerifyError> {
        let Some((batch_id, digest)) = self.store.sealed_leaf(request_id).await? else { return Ok(None) };
        let digest: B256 = digest.parse().map_err(|e| VerifyError::Malformed(format!("digest {digest}: {e}")))?;
        let batch = self
            .store
            .batch(&batch_id)
            .await?
            .ok_or_else(|| VerifyError::Malformed(format!("batch {batch_id} is missing")))?;
        let digests = self
            .store
            .batch_digests(&batch_id)
            .await?
            .iter()
            .map(|d| d.parse::<B256>().map_err(|e| VerifyError::Malformed(format!("digest {d}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let tree = MerkleTree::of(&digests)?;
        let root: B256 = batch.root.parse().map_err(|e| VerifyError::Malformed(format!("root: {e}")))?;
        if tree.root() != root {
            return Err(VerifyError::Malformed(format!("batch {batch_id} no longer hashes to its root")));
        }
        let proof = tree.proof(&digest).ok_or_else(|| VerifyError::Malformed("receipt not in its batch".into()))?;
        Ok(Some(InclusionProof {
            request_id: request_id.to_owned(),
            digest,
            leaf_encoding: vec!["bytes32".into()],
            leaf: crate::merkle::leaf_hash(&digest),
            proof,
            batch: BatchInfo {
                id: batch.id,
                node: batch.node,
                root,
                size: batch.size,
                timestamp: u64::try_from(batch.created_at_ms).unwrap_or_default(),
                chain_id: self.chain_id,
                signature: batch.signature,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use alloy_primitives::{Address, B256};
    use verinet_store::SqlStore;

    use super::*;
    use verinet_primitives::wire::ReceiptBody;

    use crate::sign_receipt;

    fn signed(key: &PrivateKeySigner, i: u8) -> SignedReceipt {
        let body = ReceiptBody {
            request_id: format!("req-{i:03}"),
            model_hash: B256::repeat_byte(1),
            input_hash: B256::repeat_byte(i),
            output_hash: B256::repeat_byte(3),
            node: key.address(),
            mode: "none".into(),
            price: "0".into(),
            payer: Address::ZERO,
            timestamp: 1_764_000_000_000 + u64::from(i),
            completion: None,
        };
        sign_receipt(body, key, 31337).unwrap()
    }

    async fn log(max_receipts: u32) -> (ReceiptLog, Arc<PrivateKeySigner>) {
        let store: Arc<dyn ReceiptStore> = Arc::new(SqlStore::connect("sqlite::memory:").await.unwrap());
        let key = Arc::new(PrivateKeySigner::random());
        let config = BatchConfig { max_receipts, ..BatchConfig::default() };
        (ReceiptLog::new(store, key.clone(), 31337, config), key)
    }

    /// Queued receipts are pending (from memory) until a seal writes them sealed; their proofs
    /// check against the signed root; a full queue seals in batches of at most max_receipts.
    #[tokio::test]
    async fn queued_receipts_are_pending_then_sealed_with_proofs() {
        let (log, key) = log(4).await;
        let receipts: Vec<SignedReceipt> = (0..6).map(|i| signed(&key, i)).collect();
        receipts.iter().for_each(|r| log.record(r));
        let info = log.receipt("req-001").await.unwrap().unwrap();
        assert_eq!((info.status, info.receipt.digest), (ReceiptStatus::Pending, receipts[1].digest));
        assert!(log.proof("req-001").await.unwrap().is_none(), "not sealed yet");
        assert!(log.store().receipt("req-001").await.unwrap().is_none(), "not written before its seal");

        assert_eq!(log.seal().await.unwrap().unwrap().size, 4);
        assert_eq!(log.seal().await.unwrap().unwrap().size, 2);
        assert!(log.seal().await.unwrap().is_none());
        for r in &receipts {
            let id = &r.receipt.request_id;
            let info = log.receipt(id).await.unwrap().unwrap();
            assert_eq!((info.status, &info.receipt), (ReceiptStatus::Final, r));
            let p = log.proof(id).await.unwrap().unwrap();
            assert!(crate::merkle::verify(p.batch.root, &r.digest, &p.proof), "{id}");
        }
    }

    /// A receipt committed with its capture (stored unsealed) is sealed from the store, once,
    /// even when it was queued too; one queued but already sealed is dropped from the queue
    /// rather than refusing every later batch.
    #[tokio::test]
    async fn stored_receipts_are_sealed_once() {
        let (log, key) = log(16).await;
        let (a, b, c) = (signed(&key, 1), signed(&key, 2), signed(&key, 3));
        log.store().insert_receipts(&[log.record_of(&a)]).await.unwrap();
        log.record(&a);
        log.record(&b);
        let first = log.seal().await.unwrap().unwrap();
        assert_eq!(first.size, 2, "a once, as stored, and b");
        assert_eq!(log.store().batch_digests(&first.id).await.unwrap().len(), 2);

        log.record(&b);
        log.record(&c);
        assert!(log.seal().await.is_err(), "b is sealed already");
        let second = log.seal().await.unwrap().unwrap();
        assert_eq!(second.size, 1, "c alone");
        assert_eq!(log.receipt("req-003").await.unwrap().unwrap().batch_id.as_deref(), Some(second.id.as_str()));
        assert!(log.seal().await.unwrap().is_none());
    }

    /// Receipts their capture stored are sealed by id from what the capture handed over, at any
    /// seal. Those it was not handed (stored by a run before this one) are found by searching
    /// the store: at the first seal, then again while a search finds some. One handed over that
    /// the store does not hold unsealed is dropped after the refusal, rather than refusing every
    /// later batch.
    #[tokio::test]
    async fn stored_receipts_are_sealed_from_what_their_capture_handed_over() {
        let (log, key) = log(2).await;
        let earlier: Vec<ReceiptRecord> = (1..=3).map(|i| log.record_of(&signed(&key, i))).collect();
        log.store().insert_receipts(&earlier).await.unwrap();
        assert_eq!(log.seal().await.unwrap().unwrap().size, 2, "found by the first seal's search");
        assert_eq!(log.seal().await.unwrap().unwrap().size, 1, "the search found some, so the next seal searches again");
        assert!(log.seal().await.unwrap().is_none());

        let handed = log.record_of(&signed(&key, 4));
        let unhanded = log.record_of(&signed(&key, 5));
        log.store().insert_receipts(&[handed.clone(), unhanded]).await.unwrap();
        log.record_stored(ReceiptLog::stored_note(&handed));
        let batch = log.seal().await.unwrap().unwrap();
        assert_eq!(batch.size, 1, "the handed one, though no search is due for a minute");
        assert_eq!(log.receipt("req-004").await.unwrap().unwrap().batch_id.as_deref(), Some(batch.id.as_str()));
        assert_eq!(log.receipt("req-005").await.unwrap().unwrap().batch_id, None, "waits for the next search");
        let p = log.proof("req-004").await.unwrap().unwrap();
        assert!(crate::merkle::verify(p.batch.root, &handed.digest.parse().unwrap(), &p.proof));

        log.record_stored(ReceiptLog::stored_note(&log.record_of(&signed(&key, 6))));
        assert!(log.seal().await.is_err(), "handed over, never stored");
        assert!(log.seal().await.unwrap().is_none(), "dropped after the refusal");
    }
}
