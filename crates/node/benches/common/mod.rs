//! Shared by the node benches: drive a closure at a concurrency, report throughput and latency.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Throughput and latency percentiles of one [`drive`].
pub struct Stats {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `total` calls of `f` with `conc` in flight at once; throughput and latency percentiles.
pub async fn drive<F, Fut>(conc: usize, total: usize, f: F) -> Stats
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let per = total / conc;
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    f().await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.expect("bench task"));
    }
    let wall = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Stats { rps: all.len() as f64 / wall.as_secs_f64(), p50: pct(0.5), p99: pct(0.99) }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

