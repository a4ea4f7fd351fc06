//! The behaviour every [`ReceiptStore`] must show; [`receipt_store_conformance!`](crate::receipt_store_conformance)
//! turns it into `#[tokio::test]`s like the other suites.

#![allow(clippy::unwrap_used, reason = "a test suite: a panic is how it reports a violation")]

use std::sync::Arc;

use verinet_primitives::Address;

use crate::{BatchRecord, ReceiptRecord, ReceiptStore, StoreError};

/// Generates the receipt-store tests, run through `$harness` (an `async fn(test)` giving `test`
/// a fresh `Arc<dyn ReceiptStore>`).
#[macro_export]
macro_rules! receipt_store_conformance {
    ($harness:path) => {
        $crate::receipt_store_conformance!(@tests $harness; receipts_store_and_seal_once, concurrent_seals_never_share_a_receipt);
    };
    (@tests $harness:path; $($test:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                $harness($crate::receipt_conformance::$test).await;
            }
        )*
    };
}

fn record(i: u32, node: Address) -> ReceiptRecord {
    ReceiptRecord {
        request_id: format!("r{i:03}"),
        node,
        digest: format!("0x{i:064x}"),
        body: "{}".into(),
        batch_id: None,
        created_at_ms: i64::from(i),
    }
}

fn batch(id: &str, node: Address, size: u64) -> BatchRecord {
    BatchRecord { id: id.into(), node, root: "0xroot".into(), size, signature: "0xsig".into(), created_at_ms: 9 }
}

/// Receipts store idempotently, list unbatched oldest first per node, and seal exactly once.
pub async fn receipts_store_and_seal_once(s: Arc<dyn ReceiptStore>) {
    let (me, other) = (Address::repeat_byte(1), Address::repeat_byte(2));
    let mine: Vec<_> = (0..5).map(|i| record(i, me)).collect();
    s.insert_receipts(&mine).await.unwrap();
    s.insert_receipts(&[record(9, other), mine[0].clone()]).await.unwrap();
    assert_eq!(s.receipt("r000").await.unwrap(), Some(mine[0].clone()));
    let pending = s.unbatched(me, 3).await.unwrap();
    assert_eq!(pending.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["r000", "r001", "r002"]);

    let ids: Vec<String> = pending.iter().map(|r| r.request_id.clone()).collect();
    s.seal_batch(&batch("b1", me, 3), &ids).await.unwrap();
    assert_eq!(s.receipt("r001").await.unwrap().unwrap().batch_id.as_deref(), Some("b1"));
    let mut digests = s.batch_digests("b1").await.unwrap();
    digests.sort();
    assert_eq!(digests, pending.iter().map(|r| r.digest.clone()).collect::<Vec<_>>());
    assert_eq!(s.batch("b1").await.unwrap().unwrap().size, 3);
    assert_eq!(s.unbatched(me, 10).await.unwrap().len(), 2);

    // Resealing a sealed receipt writes nothing, not even the batch row.
    let again = vec!["r003".to_string(), "r000".to_string()];
    assert!(matches!(s.seal_batch(&batch("b2", me, 2), &again).await, Err(StoreError::Invalid(_))));
    assert!(s.batch("b2").await.unwrap().is_none());
    assert!(s.receipt("r003").await.unwrap().unwrap().batch_id.is_none());
}

/// Two sealers racing over the same pending receipts: each receipt ends in exactly one batch.
pub async fn concurrent_seals_never_share_a_receipt(s: Arc<dyn ReceiptStore>) {
    let me = Address::repeat_byte(1);
    s.insert_receipts(&(0..20).map(|i| record(i, me)).collect::<Vec<_>>()).await.unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("r{i:03}")).collect();
    let tasks = (0..4).map(|k| {
        let (s, ids) = (s.clone(), ids.clone());
        tokio::spawn(async move { s.seal_batch(&batch(&format!("b{k}"), me, 20), &ids).await })
    });
    let ok = futures::future::join_all(tasks).await.into_iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(ok, 1);
}
