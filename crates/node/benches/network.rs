//! The network's costs, side by side in one run:
//!
//! 1. the gateway hop: the same model behind an in-process worker (`verinet up`) and behind a
//!    worker reached over signed loopback HTTP (`--role gateway` + `--role worker`);
//! 2. scaling: one gateway routing to 1, 2 and 3 remote workers, each running one job at a
//!    time, at 8 requests in flight.
//!
//! Workers here are in-process `WorkerNode`s on loopback HTTP (the same code as `verinet up
//! --role worker`, without process start-up in the timing). On this 2-core machine, expect
//! compute-bound models to stop scaling at 2 workers.
//!
//! cargo bench -p verinet-node --bench network
//! (VERINET_TEST_MODELS=$PWD/target/test-models for MiniLM rows)

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use verinet_client::Client;
use verinet_node::{Config, Node, Role, RunningNode, WorkerNode};
use verinet_primitives::wire::InferRequest;

mod common;
use common::{Stats, drive, infer_call, load_model, ms, publish};

fn base(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.runtime.max_concurrency = 1;
    c.flywheel.events = true;
    c
}

async fn worker(dir: &std::path::Path, gateway: &str) -> RunningNode {
    let mut c = base(dir);
    c.network.role = Role::Worker;
    c.network.gateways = vec![gateway.to_owned()];
    c.network.heartbeat_ms = 200;
    WorkerNode::spawn(&c).await.expect("worker")
}

/// Waits until the gateway routes to `n` remote workers.
async fn routed(client: &Client, n: usize) {
    let started = Instant::now();
    loop {
        let v = client.get_json("/v1/nodes").await.expect("nodes");
        let active = v["nodes"].as_array().into_iter().flatten().filter(|x| x["endpoint"].is_string() && x["active"] == true).count();
        if active >= n {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{active} of {n} workers joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(client: &Client, model: &str, inputs: &verinet_primitives::TensorMap, conc: usize, total: usize) -> Stats {
    let req = Arc::new(InferRequest::new(model, inputs.clone()));
    let f = infer_call(client, &req);
    // Warm: every worker fetches and compiles the model.
    drive(conc.max(4), conc.max(4) * 4, f.clone()).await;
    drive(conc, total, f).await
}

async fn bench() {
    let key = PrivateKeySigner::random();
    let models: Vec<(&str, usize)> = vec![("digits", 1200), ("minilm", 90)];
    let loaded: Vec<_> = models.iter().filter_map(|(n, t)| load_model(n).map(|(b, i)| (*n, *t, b, i))).collect();
    if loaded.len() < models.len() {
        println!("(MiniLM rows skipped: set VERINET_TEST_MODELS)");
    }

    // 1. The gateway hop.
    let d_local = tempfile::tempdir().expect("tempdir");
    let mut c = base(d_local.path());
    c.verification.workers = 1;
    c.verification.validators = 0;
    let local = Node::spawn(&c).await.expect("node");
    let local_client = Client::new(local.url());
    let d_gw = tempfile::tempdir().expect("tempdir");
    let mut c = base(d_gw.path());
    c.network.role = Role::Gateway;
    let gw = Node::spawn(&c).await.expect("gateway");
    let gw_client = Client::new(gw.url());
    let worker_dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut workers = vec![worker(worker_dirs[0].path(), &gw.url()).await];
    routed(&gw_client, 1).await;
    for (name, _, bytes, _) in &loaded {
        publish(&local_client, &key, &format!("bench-{name}"), bytes.clone()).await;
        publish(&gw_client, &key, &format!("bench-{name}"), bytes.clone()).await;
    }
    println!("| model | worker | in flight | req/s | p50 ms | p99 ms | added p50 ms | throughput vs in-process |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, total, _, inputs) in &loaded {
        let model = format!("bench-{name}");
        for round in 0..2 {
            let a = run(&local_client, &model, inputs, 1, *total / 2).await;
            let b = run(&gw_client, &model, inputs, 1, *total / 2).await;
            for (label, s) in [("in-process", &a), ("remote (HTTP hop)", &b)] {
                println!(
                    "| {name} (round {}) | {label} | 1 | {:.0} | {:.3} | {:.3} | {:+.3} | {:.2}x |",
                    round + 1,
                    s.rps,
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.p50) - ms(a.p50),
                    s.rps / a.rps
                );
            }
        }
    }
    local.stop().await.expect("stop");

    // 2. Scaling with workers.
    println!("\n| model | workers | in flight | req/s | p50 ms | p99 ms | throughput vs 1 worker |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows: Vec<(String, usize, Stats)> = Vec::new();
    for n in 1..=3 {
        while workers.len() < n {
            workers.push(worker(worker_dirs[workers.len()].path(), &gw.url()).await);
        }
        routed(&gw_client, n).await;
        for (name, total, _, inputs) in &loaded {
            let s = run(&gw_client, &format!("bench-{name}"), inputs, 8, *total).await;
            rows.push((name.to_string(), n, s));
        }
    }
    for (name, n, s) in &rows {
        let one = rows.iter().find(|(m, k, _)| m == name && *k == 1).map_or(s.rps, |r| r.2.rps);
        println!("| {name} | {n} | 8 | {:.0} | {:.3} | {:.3} | {:.2}x |", s.rps, ms(s.p50), ms(s.p99), s.rps / one);
    }
    for w in workers {
        w.stop().await.expect("stop worker");
    }
    gw.stop().await.expect("stop");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}
