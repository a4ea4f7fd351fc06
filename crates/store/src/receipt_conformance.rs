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
        $crate::receipt_store_conformance!(@tests $harness; receipts_store_and_seal_once, concurrent_seals_never_share_a_receipt, pruned_receipts_keep_their_leaves, batches_larger_than_one_statement, fresh_receipts_are_stored_sealed);
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
    s.seal_batch(&batch("b1", me, 3), &[], &ids).await.unwrap();
    assert_eq!(s.receipt("r001").await.unwrap().unwrap().batch_id.as_deref(), Some("b1"));
    let mut digests = s.batch_digests("b1").await.unwrap();
    digests.sort();
    assert_eq!(digests, pending.iter().map(|r| r.digest.clone()).collect::<Vec<_>>());
    assert_eq!(s.batch("b1").await.unwrap().unwrap().size, 3);
    assert_eq!(s.unbatched(me, 10).await.unwrap().len(), 2);

    // Resealing a sealed receipt writes nothing, not even the batch row.
    let again = vec!["r003".to_string(), "r000".to_string()];
    assert!(matches!(s.seal_batch(&batch("b2", me, 2), &[], &again).await, Err(StoreError::Invalid(_))));
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
        tokio::spawn(async move { s.seal_batch(&batch(&format!("b{k}"), me, 20), &[], &ids).await })
    });
    let ok = futures::future::join_all(tasks).await.into_iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(ok, 1);
}

/// Retention: sealed receipts past the cutoff lose their bodies in bounded rounds, oldest
/// first, and keep their leaves; unsealed and recent ones are untouched.
pub async fn pruned_receipts_keep_their_leaves(s: Arc<dyn ReceiptStore>) {
    let me = Address::repeat_byte(1);
    let all: Vec<_> = (0..10).map(|i| record(i, me)).collect();
    s.insert_receipts(&all).await.unwrap();
    let sealed: Vec<String> = (0..8).map(|i| format!("r{i:03}")).collect();
    s.seal_batch(&batch("b1", me, 8), &[], &sealed).await.unwrap();
    let mut before = s.batch_digests("b1").await.unwrap();
    before.sort();

    // Created at 0..=9 ms: before 7 ms, the sealed r000..r006 are due, two per round.
    assert_eq!(s.prune_receipts(7, 2).await.unwrap(), 2);
    assert!(s.receipt("r000").await.unwrap().is_none() && s.receipt("r001").await.unwrap().is_none());
    assert!(s.receipt("r002").await.unwrap().is_some(), "a round takes the oldest first, no more than its limit");
    let mut total = 2;
    loop {
        let n = s.prune_receipts(7, 2).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 7);
    assert!(s.receipt("r006").await.unwrap().is_none());
    assert!(s.receipt("r007").await.unwrap().is_some(), "a receipt inside the window keeps its body");

    // Unsealed receipts are never pruned, however old.
    assert_eq!(s.prune_receipts(1_000, 100).await.unwrap(), 1, "only r007, the last sealed one");
    assert!(s.receipt("r008").await.unwrap().is_some() && s.receipt("r009").await.unwrap().is_some());

    // What proofs need is all there.
    let mut after = s.batch_digests("b1").await.unwrap();
    after.sort();
    assert_eq!(after, before, "the batch's leaves survive pruning");
    assert_eq!(s.sealed_leaf("r003").await.unwrap(), Some(("b1".to_owned(), all[3].digest.clone())));
    assert_eq!(s.sealed_leaf("r009").await.unwrap(), None, "not sealed");
    assert_eq!(s.sealed_leaf("nope").await.unwrap(), None);
}

/// Inserts and seals span several statements: every receipt lands once, and a batch naming a
/// sealed receipt in a later chunk writes nothing, its earlier chunks included.
pub async fn batches_larger_than_one_statement(s: Arc<dyn ReceiptStore>) {
    let me = Address::repeat_byte(1);
    let all: Vec<_> = (0..1200).map(|i| ReceiptRecord { request_id: format!("r{i:05}"), ..record(i, me) }).collect();
    s.insert_receipts(&all).await.unwrap();
    assert_eq!(s.unbatched(me, 5000).await.unwrap().len(), 1200);
    let ids = |range: std::ops::Range<usize>| all[range].iter().map(|r| r.request_id.clone()).collect::<Vec<_>>();
    s.seal_batch(&batch("big", me, 600), &[], &ids(0..600)).await.unwrap();
    assert_eq!(s.batch_digests("big").await.unwrap().len(), 600);
    assert_eq!(s.unbatched(me, 5000).await.unwrap().len(), 600);

    // 600 unsealed ids, then one sealed: the refusal comes in the second statement.
    let mut late = ids(600..1200);
    late.push(all[0].request_id.clone());
    assert!(matches!(s.seal_batch(&batch("late", me, 601), &[], &late).await, Err(StoreError::Invalid(_))));
    assert!(s.batch("late").await.unwrap().is_none());
    assert_eq!(s.unbatched(me, 5000).await.unwrap().len(), 600, "nothing of the refused batch was written");
}

/// The sealer's own receipts are stored already sealed, beside stored unsealed ones in the same
/// batch; one that is stored already refuses the whole batch.
pub async fn fresh_receipts_are_stored_sealed(s: Arc<dyn ReceiptStore>) {
    let me = Address::repeat_byte(1);
    let captured: Vec<_> = (0..3).map(|i| record(i, me)).collect();
    s.insert_receipts(&captured).await.unwrap();
    let fresh: Vec<_> = (10..15).map(|i| record(i, me)).collect();
    let stored = vec!["r000".to_string(), "r001".to_string()];
    s.seal_batch(&batch("b1", me, 7), &fresh, &stored).await.unwrap();
    let r = s.receipt("r012").await.unwrap().unwrap();
    assert_eq!((r.batch_id.as_deref(), r.digest.as_str()), (Some("b1"), fresh[2].digest.as_str()));
    let mut digests = s.batch_digests("b1").await.unwrap();
    digests.sort();
    let mut want: Vec<String> = captured[..2].iter().chain(&fresh).map(|r| r.digest.clone()).collect();
    want.sort();
    assert_eq!(digests, want);
    assert_eq!(s.unbatched(me, 10).await.unwrap().iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["r002"]);
    assert_eq!(s.sealed_leaf("r014").await.unwrap(), Some(("b1".to_owned(), fresh[4].digest.clone())));

    // A fresh receipt stored already (sealed or not) refuses the batch: nothing is written.
    for dup in [record(11, me), record(2, me)] {
        let again = vec![record(20, me), dup];
        assert!(matches!(s.seal_batch(&batch("b2", me, 2), &again, &[]).await, Err(StoreError::Invalid(_))));
        assert!(s.batch("b2").await.unwrap().is_none());
        assert!(s.receipt("r020").await.unwrap().is_none(), "nothing of the refused batch was written");
    }
    assert!(matches!(s.seal_batch(&batch("b3", me, 3), &fresh[..1], &[]).await, Err(StoreError::Invalid(_))), "size must match");
}
