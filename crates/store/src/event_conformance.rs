//! What every [`EventStore`] must do with events and roll-ups; run against SQLite and
//! PostgreSQL by the store's integration tests.

#![allow(clippy::unwrap_used, reason = "conformance checks: a panic is the failure report")]

use std::sync::Arc;

use crate::{EventRecord, EventStore, TallyRecord};

fn row(bucket_ms: i64, key: &str, n: u32) -> TallyRecord {
    TallyRecord { bucket_ms, key: key.into(), data: format!("{{\"n\":{n}}}") }
}

fn sorted(mut v: Vec<TallyRecord>) -> Vec<TallyRecord> {
    v.sort_by(|a, b| (a.bucket_ms, &a.key, &a.data).cmp(&(b.bucket_ms, &b.key, &b.data)));
    v
}

/// Roll-up rows are appended (repeats kept), read by tier and range, replaced atomically and
/// pruned by age; raw events are pruned oldest first, in rounds.
pub async fn tallies_and_events_age_out(store: Arc<dyn EventStore>) {
    assert_eq!(store.tally_span(1).await.unwrap(), None);
    // Two flushes of the same second and key: both rows stay, readers add them.
    store.add_tallies(1, &[row(1_000, "a", 1), row(1_000, "a", 2), row(2_000, "b", 1)]).await.unwrap();
    // More rows than one statement holds.
    let many: Vec<TallyRecord> = (0..450).map(|i| row(60_000 + i * 1000, "c", 1)).collect();
    store.add_tallies(1, &many).await.unwrap();
    store.add_tallies(60, &[row(0, "a", 3)]).await.unwrap();
    assert_eq!(store.tally_span(1).await.unwrap(), Some((1_000, 60_000 + 449_000)));
    assert_eq!(store.tally_span(60).await.unwrap(), Some((0, 0)));
    assert_eq!(sorted(store.tallies(1, 0, 60_000).await.unwrap()), vec![row(1_000, "a", 1), row(1_000, "a", 2), row(2_000, "b", 1)]);
    assert_eq!(store.tallies(1, 1_500, 2_000).await.unwrap(), vec![]);
    assert_eq!(store.tallies(1, 60_000, 1_000_000).await.unwrap().len(), 450);
    assert_eq!(store.tallies(60, 0, 60_000).await.unwrap(), vec![row(0, "a", 3)]);

    // Replacing a range leaves the rows outside it and other tiers alone.
    store.replace_tallies(1, 0, 60_000, &[row(0, "a", 3), row(0, "b", 1)]).await.unwrap();
    assert_eq!(sorted(store.tallies(1, 0, 60_000).await.unwrap()), vec![row(0, "a", 3), row(0, "b", 1)]);
    assert_eq!(store.tallies(1, 60_000, 1_000_000).await.unwrap().len(), 450);
    // Two replacements racing leave one copy.
    let (a, b) = (store.clone(), store.clone());
    let rows = vec![row(0, "x", 1)];
    let (ra, rb) = tokio::join!(a.replace_tallies(1, 0, 60_000, &rows), b.replace_tallies(1, 0, 60_000, &rows));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(store.tallies(1, 0, 60_000).await.unwrap(), rows);

    assert_eq!(store.prune_tallies(1, 60_000 + 100_000).await.unwrap(), 101);
    assert_eq!(store.tally_span(1).await.unwrap(), Some((160_000, 509_000)));
    assert_eq!(store.tallies(60, 0, 60_000).await.unwrap().len(), 1);

    let events: Vec<EventRecord> = (0..30)
        .map(|i| EventRecord { id: format!("e{i:02}"), at_ms: i * 10, kind: "publish".into(), data: "{}".into() })
        .collect();
    store.insert_events(&events).await.unwrap();
    assert_eq!(store.prune_events(200, 8).await.unwrap(), 8);
    assert_eq!(store.prune_events(200, 8).await.unwrap(), 8);
    assert_eq!(store.prune_events(200, 8).await.unwrap(), 4);
    assert_eq!(store.prune_events(200, 8).await.unwrap(), 0);
    let left = store.events_since(0, 100).await.unwrap();
    assert_eq!(left.first().map(|e| e.at_ms), Some(200));
    assert_eq!(left.len(), 10);
}
