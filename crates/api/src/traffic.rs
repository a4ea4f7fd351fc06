//! What an operator reads in the log: one summary line per interval instead of a line per
//! call, and, when asked for, an access log.
//!
//! Every served request (`/v1/infer`, chat, completions, embeddings) passes through
//! [`served`]: it is counted here, written to the access log if that is on, and queued as a
//! usage event. [`Traffic::run`] logs the interval's totals at INFO.

use std::sync::Mutex;
use std::time::Duration;

use tracing::{debug, info};
use verinet_flywheel::{Event, RequestEvent};

use crate::AppState;

/// Latency buckets: 8 per doubling (each ~9% wide) from 1 µs up to ~2^32 µs (~72 min).
const PER_DOUBLING: f64 = 8.0;
const BUCKETS: usize = 32 * 8;

/// Counts of one interval.
struct Window {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    paid: u64,
    charged: u128,
    latency: Box<[u32; BUCKETS]>,
}

impl Default for Window {
    fn default() -> Self {
        Self { requests: 0, client_errors: 0, server_errors: 0, paid: 0, charged: 0, latency: Box::new([0; BUCKETS]) }
    }
}

impl Window {
    /// The latency at quantile `q` (0..=1), ms: the upper edge of the bucket it falls in.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return 2f64.powf((i + 1) as f64 / PER_DOUBLING) / 1e3;
            }
        }
        2f64.powf(BUCKETS as f64 / PER_DOUBLING) / 1e3
    }
}

fn bucket(ms: f64) -> usize {
    let us = (ms * 1e3).max(1.0);
    ((us.log2() * PER_DOUBLING) as usize).min(BUCKETS - 1)
}

/// One interval's totals, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSummary {
    /// Requests answered (any status).
    pub requests: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Requests that captured a payment.
    pub paid: u64,
    /// What they captured, base units.
    pub charged: u128,
    /// Median latency, ms (within ~9%).
    pub p50_ms: f64,
    /// 99th percentile latency, ms (within ~9%).
    pub p99_ms: f64,
}

/// Request counts since the last summary. One short lock per request.
#[derive(Default)]
pub struct Traffic {
    window: Mutex<Window>,
    /// Log each request at INFO (target `verinet::access`) rather than at DEBUG.
    access_log: bool,
    /// Prometheus counters since the start.
    pub(crate) counters: crate::prom::Counters,
}

impl Traffic {
    /// Counts with the access log on or off.
    pub fn new(access_log: bool) -> Self {
        Self { window: Mutex::default(), access_log, counters: crate::prom::Counters::default() }
    }

    /// Counts one answered request.
    pub fn observe(&self, ev: &RequestEvent) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.requests += 1;
        match ev.status {
            400..=499 => w.client_errors += 1,
            500.. => w.server_errors += 1,
            _ => {}
        }
        if ev.charged > 0 {
            w.paid += 1;
            w.charged += ev.charged;
        }
        w.latency[bucket(ev.total_ms)] += 1;
    }

    /// The totals since the last call, and a fresh interval.
    pub fn take(&self) -> TrafficSummary {
        let w = std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()));
        TrafficSummary {
            requests: w.requests,
            client_errors: w.client_errors,
            server_errors: w.server_errors,
            paid: w.paid,
            charged: w.charged,
            p50_ms: w.quantile_ms(0.5),
            p99_ms: w.quantile_ms(0.99),
        }
    }

    /// Logs a summary every `every` (intervals without requests are skipped) until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(every) => {}
            }
            let s = self.take();
            if s.requests > 0 {
                info!(
                    requests = s.requests,
                    client_errors = s.client_errors,
                    server_errors = s.server_errors,
                    paid = s.paid,
                    charged = %s.charged,
                    p50_ms = format_args!("{:.3}", s.p50_ms),
                    p99_ms = format_args!("{:.3}", s.p99_ms),
                    "traffic in the last {}s",
                    every.as_secs()
                );
            }
        }
    }
}

/// The end of every served request: counted, access-logged, queued as a usage event.
/// The line goes out inside the handler's span, which names the route and the request id.
pub(crate) fn served(st: &AppState, ev: RequestEvent) {
    st.traffic.observe(&ev);
    st.traffic.counters.observe(&ev);
    let model = ev.model.as_deref().unwrap_or("-");
    let error = ev.error.as_deref().unwrap_or("");
    if st.traffic.access_log {
        info!(target: "verinet::access", model, status = ev.status, error, total_ms = format_args!("{:.3}", ev.total_ms), charged = %ev.charged, mode = %ev.mode, "served");
    } else {
        debug!(target: "verinet::access", model, status = ev.status, error, total_ms = format_args!("{:.3}", ev.total_ms), charged = %ev.charged, mode = %ev.mode, "served");
    }
    st.events.emit(Event::Request(Box::new(ev)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(status: u16, ms: f64, charged: u128) -> RequestEvent {
        RequestEvent { status, total_ms: ms, charged, ..RequestEvent::default() }
    }

    #[test]
    fn a_summary_counts_statuses_payments_and_quantiles() {
        let t = Traffic::new(false);
        for i in 0..98 {
            t.observe(&ev(200, 1.0 + f64::from(i) * 0.001, if i % 2 == 0 { 5 } else { 0 }));
        }
        t.observe(&ev(402, 0.2, 0));
        t.observe(&ev(500, 250.0, 0));
        let s = t.take();
        assert_eq!((s.requests, s.client_errors, s.server_errors, s.paid, s.charged), (100, 1, 1, 49, 245));
        assert!((1.0..=1.2).contains(&s.p50_ms), "p50 {}", s.p50_ms);
        // 99 of 100 are at most ~1.1 ms: the 99th is one of them, the 100th is the slow one.
        assert!((1.0..=1.2).contains(&s.p99_ms), "p99 {}", s.p99_ms);
        assert_eq!(t.take().requests, 0, "taking starts a new interval");
    }

    #[test]
    fn quantiles_fall_within_a_bucket_of_the_truth() {
        let t = Traffic::new(false);
        for ms in [0.05, 0.3, 7.0, 40.0, 1500.0] {
            for _ in 0..10 {
                t.observe(&ev(200, ms, 0));
            }
            let s = t.take();
            assert!(s.p50_ms >= ms && s.p50_ms <= ms * 1.1, "{ms} ms read as {}", s.p50_ms);
        }
    }
}
