use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use verinet_store::{EventRecord, EventStore, PendingWrites, StoreError, TallyRecord};

use crate::report::Window;
use crate::{Event, RequestEvent, Tallies, Tally, TallyKey};

/// How long each kind of usage data is kept (docs/flywheel.md, "Roll-ups").
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Per-second roll-ups (windows up to [`Window::FINE_MAX_SECS`] read them).
    pub seconds: Duration,
    /// Per-minute roll-ups.
    pub minutes: Duration,
    /// Raw events other than requests (publishes, executors joining).
    pub events: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            seconds: Duration::from_secs(3600),
            minutes: Duration::from_secs(61 * 24 * 3600),
            events: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A minute is compacted once it ended this long ago (flushes run every half second).
const COMPACT_GRACE_MS: i64 = 5_000;
/// Each compaction also rewrites the minutes this far back, to take in late flushes.
const COMPACT_LOOKBACK_MS: i64 = 5 * 60_000;
/// Compaction and pruning run this often.
const COMPACT_EVERY: Duration = Duration::from_secs(20);
/// Raw events deleted per statement.
const PRUNE_ROUND: u32 = 2048;

/// Usage off the request path: request events counted in memory and written as per-second
/// roll-ups in batches (other events as rows), then compacted into per-minute roll-ups and
/// aged out (a crash loses at most one flush interval of analytics, never money).
pub struct EventLog {
    store: Arc<dyn EventStore>,
    pending: PendingWrites<EventRecord>,
    requests: PendingWrites<(i64, Box<RequestEvent>)>,
    /// Flush at least this often.
    pub interval: Duration,
    /// How long roll-ups and events are kept.
    pub retention: Retention,
    /// False: events are dropped (only for measuring what they cost; see BENCHMARKS.md).
    enabled: bool,
    started_ms: i64,
}

fn parse(tier_ms: i64, rows: &[TallyRecord], into: &mut Tallies) {
    for r in rows {
        match (serde_json::from_str::<TallyKey>(&r.key), serde_json::from_str::<Tally>(&r.data)) {
            (Ok(k), Ok(t)) => into.merge(r.bucket_ms.div_euclid(tier_ms) * tier_ms, k, &t),
            _ => debug!(bucket = r.bucket_ms, "skipping an unreadable roll-up row"),
        }
    }
}

fn records(t: &Tallies) -> Vec<TallyRecord> {
    t.0.iter()
        .map(|((b, k), v)| TallyRecord {
            bucket_ms: *b,
            key: serde_json::to_string(k).unwrap_or_default(),
            data: serde_json::to_string(v).unwrap_or_default(),
        })
        .collect()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl EventLog {
    /// A log over `store`.
    pub fn new(store: Arc<dyn EventStore>, interval: Duration) -> Self {
        Self {
            store,
            pending: PendingWrites::default(),
            requests: PendingWrites::default(),
            interval,
            retention: Retention::default(),
            enabled: true,
            started_ms: verinet_primitives::unix_ms(),
        }
    }

    /// A log that drops every event (the "events off" side of the benchmark).
    pub fn disabled(store: Arc<dyn EventStore>) -> Self {
        Self { enabled: false, ..Self::new(store, Duration::from_secs(3600)) }
    }

    /// The store below.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Queues an event that happens now (never waits on the database).
    pub fn emit(&self, e: Event) {
        self.emit_at(verinet_primitives::unix_ms(), e);
    }

    /// Queues an event that happened at `at_ms`.
    pub fn emit_at(&self, at_ms: i64, e: Event) {
        if !self.enabled {
            return;
        }
        match e {
            Event::Request(r) => {
                self.requests.push((at_ms, r));
            }
            other => {
                self.pending.push(EventRecord {
                    // Time-ordered: the table's key index grows at one end as events are flushed.
                    id: verinet_primitives::time_ordered_id(12),
                    at_ms,
                    kind: other.kind().to_owned(),
                    data: serde_json::to_string(&other).unwrap_or_default(),
                });
            }
        }
    }

    /// Writes what is buffered: requests as per-second roll-ups, other events as rows.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let store = &self.store;
        self.requests
            .flush(|batch| async move {
                let mut t = Tallies::default();
                for (at, r) in &batch {
                    t.add(*at, Window::SECOND_MS, r);
                }
                store.add_tallies(1, &records(&t)).await.map_err(|e| (batch, e))
            })
            .await?;
        self.pending.flush(|batch| async move { store.insert_events(&batch).await.map_err(|e| (batch, e)) }).await
    }

    /// Rewrites closed minutes as per-minute roll-ups from the per-second ones, then ages out
    /// what is past its retention. `now_ms`: the time to act as of.
    pub async fn compact(&self, now_ms: i64) -> Result<(), StoreError> {
        let to = (now_ms - COMPACT_GRACE_MS).div_euclid(Window::MINUTE_MS) * Window::MINUTE_MS;
        let from = match (self.store.tally_span(60).await?, self.store.tally_span(1).await?) {
            (Some((_, hi)), _) => (hi + Window::MINUTE_MS).min(to - COMPACT_LOOKBACK_MS),
            (None, Some((lo, _))) => lo.div_euclid(Window::MINUTE_MS) * Window::MINUTE_MS,
            (None, None) => to,
        };
        if from < to {
            let mut secs = Tallies::default();
            parse(Window::SECOND_MS, &self.store.tallies(1, from, to).await?, &mut secs);
            self.store.replace_tallies(60, from, to, &records(&secs.coarsen(Window::MINUTE_MS))).await?;
        }
        // Per-second rows go only once their minute is compacted.
        self.store.prune_tallies(1, (now_ms - ms(self.retention.seconds)).min(to)).await?;
        self.store.prune_tallies(60, now_ms - ms(self.retention.minutes)).await?;
        let before = now_ms - ms(self.retention.events);
        for _ in 0..16 {
            if self.store.prune_events(before, PRUNE_ROUND).await? < u64::from(PRUNE_ROUND) {
                break;
            }
        }
        Ok(())
    }

    /// Flushes every `interval` and compacts every 20 s until `stop` resolves, then flushes once
    /// more.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut compacted = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if let Err(e) = self.flush().await {
                warn!(error = %e, "writing usage events failed; retrying");
            }
            if self.enabled && compacted.elapsed() >= COMPACT_EVERY {
                compacted = Instant::now();
                if let Err(e) = self.compact(verinet_primitives::unix_ms()).await {
                    warn!(error = %e, "compacting usage roll-ups failed; retrying");
                }
            }
        }
        if let Err(e) = self.flush().await {
            warn!(error = %e, "writing the last usage events failed");
        }
    }

    /// The roll-ups a report over `w` reads (flushes first): the window and the one before, in
    /// `w`'s buckets; and since when there is data (unix ms).
    pub async fn tallies(&self, w: &Window) -> Result<(Tallies, i64), StoreError> {
        self.flush().await?;
        let (from, to) = (w.previous_start_ms(), w.end_ms);
        let mut t = Tallies::default();
        let minutes = self.store.tally_span(60).await?;
        let seconds = self.store.tally_span(1).await?;
        if w.bucket_ms == Window::SECOND_MS {
            parse(Window::SECOND_MS, &self.store.tallies(1, from, to).await?, &mut t);
        } else {
            // Closed minutes from the per-minute rows, the rest from the per-second ones.
            let compacted = minutes.map_or(from, |(_, hi)| (hi + Window::MINUTE_MS).clamp(from, to));
            parse(Window::MINUTE_MS, &self.store.tallies(60, from, compacted).await?, &mut t);
            parse(Window::MINUTE_MS, &self.store.tallies(1, compacted, to).await?, &mut t);
        }
        let since = [minutes.map(|s| s.0), seconds.map(|s| s.0), Some(self.started_ms)].into_iter().flatten().min().unwrap_or(0);
        Ok((t, since))
    }

    /// Raw events (publishes, executors joining) since `since_ms`, decoded; unreadable rows are
    /// skipped.
    pub async fn events_since(&self, since_ms: i64) -> Result<Vec<(i64, Event)>, StoreError> {
        self.flush().await?;
        let rows = self.store.events_since(since_ms, 100_000).await?;
        Ok(rows.into_iter().filter_map(|r| serde_json::from_str(&r.data).ok().map(|e| (r.at_ms, e))).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use verinet_primitives::Address;
    use verinet_store::SqlStore;

    use super::*;
    use crate::{Inventory, Report};

    /// Traffic over two hours and a half: payers coming and going, paid, free, refused,
    /// checked and refuted calls, at uneven times.
    fn traffic(end_ms: i64) -> Vec<(i64, Event)> {
        (0..3000u64)
            .map(|i| {
                let at = end_ms - 9_000_000 + ((i * i * 7919) % 9_000_000) as i64;
                let payer = (i % 17) as u8 + if at > end_ms - 3_600_000 { 5 } else { 0 };
                let status = [200, 200, 200, 402, 503][(i % 5) as usize];
                let error = match status {
                    402 if i % 2 == 0 => Some("payment_required".to_string()),
                    402 => Some("insufficient_funds".to_string()),
                    503 => Some("overloaded".to_string()),
                    _ => None,
                };
                let charged = if status == 200 && i % 3 != 0 { 100 } else { 0 };
                (at, Event::Request(Box::new(RequestEvent {
                    model: Some(format!("m{}", i % 4)),
                    app: (i % 3 == 1).then(|| format!("app{}", i % 2)),
                    payer: (error.as_deref() != Some("payment_required")).then(|| Address::repeat_byte(payer + 1)),
                    mode: ["none", "sampled", "quorum"][(i % 3) as usize].into(),
                    status,
                    error,
                    price: 100,
                    charged,
                    payment_attempted: status != 503,
                    earnings: BTreeMap::from([("operator".to_string(), charged / 2), ("validator".to_string(), charged / 10)]),
                    check: Some(["unchecked", "passed", "disputed", "quorum"][(i % 4) as usize].into()),
                    disputed: if i % 4 == 2 { vec![Address::repeat_byte((i % 3) as u8 + 90)] } else { vec![] },
                    queue_ms: (i % 7) as f64 * 0.3,
                    total_ms: 0.5 + (i % 13) as f64 * 1.7,
                    prompt_tokens: i % 11,
                    completion_tokens: i % 5,
                    ..Default::default()
                })))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_over_stored_rollups_equal_reports_over_raw_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqlStore::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display())).await.unwrap());
        let log = EventLog::new(store.clone(), Duration::from_secs(3600));
        let now = verinet_primitives::unix_ms();
        let events = traffic(now);
        let inventory = Inventory { hosted_models: 5, history_since_ms: 0, ..Default::default() };
        // Written in time order in flushes of a few minutes each, compacted as a running node
        // does (a flush lands within seconds; one more than 5 minutes late reaches the per-second
        // roll-ups only, docs/flywheel.md).
        let mut sorted = events.clone();
        sorted.sort_by_key(|(at, _)| *at);
        for chunk in sorted.chunk_by(|a, b| a.0 / 200_000 == b.0 / 200_000) {
            for (at, e) in chunk {
                log.emit_at(*at, e.clone());
            }
            log.flush().await.unwrap();
            log.compact(chunk[chunk.len() - 1].0 + 1_000).await.unwrap();
        }
        log.compact(now).await.unwrap();
        // An hour and more of per-second rows went, compacted into minutes first.
        let (lo, _) = store.tally_span(1).await.unwrap().unwrap();
        assert!(lo >= now - 3_600_000, "per-second roll-ups older than an hour remain");
        assert!(store.tally_span(60).await.unwrap().unwrap().0 <= now - 9_000_000 + 60_000);

        for secs in [60, 600, 900, 3600, 3601] {
            let w = Window::new(secs, now);
            let (tallies, _) = log.tallies(&w).await.unwrap();
            let stored = Report::compute(&tallies, &inventory, w);
            let raw = Report::from_events(&events, &inventory, secs, now);
            assert!(raw.compute.requests > 0 && raw.users.previous.unwrap_or(0) > 0, "window {secs}: no traffic");
            assert_eq!(stored, raw, "window {secs}");
        }
    }
}
