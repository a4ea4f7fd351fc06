//! The network as separate processes: `verinet devnet` with 2 gateways on one PostgreSQL,
//! 3 workers and 1 validator, and a stream of paid requests through both gateways.
//!
//! - One worker is SIGKILLed mid-stream: every request either succeeds once (captured once,
//!   with the hash of the outputs the client got) or fails uncharged; no payment is lost or
//!   doubled; the dead worker leaves routing on both gateways within the heartbeat window.
//! - One gateway is SIGKILLed mid-stream: the other one serves on without a failure; the killed
//!   one restarts on its data dir and port, refunds what it left in escrow, the workers rejoin
//!   it, and the books still balance.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod common;
use common::sample;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use serde_json::Value;
use verinet_client::{Client, ClientError};
use verinet_primitives::{
    Address, tensors_hash,
    wire::{InferRequest, InferResponse, VerificationMode},
};
use verinet_store::{LedgerStore, PaymentStatus, PgTestDb, SqlStore, TxKind};

const HEARTBEAT_MS: u64 = 200;
/// What the gateways allow before a silent node leaves routing (the devnet sets 3 beats).
const WINDOW_MS: u64 = 3 * HEARTBEAT_MS;

/// The devnet process; on drop it and every process it started are stopped.
struct Devnet {
    child: Child,
    dir: PathBuf,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left (a failed test must not leak processes).
        if let Ok(text) = std::fs::read_to_string(self.dir.join("devnet.json"))
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            for p in v["procs"].as_array().into_iter().flatten() {
                let _ = Command::new("kill").arg("-9").arg(p["pid"].to_string()).stderr(Stdio::null()).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_devnet(dir: &Path, db: &str, config: &Path) -> Devnet {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verinet"))
        .args(["devnet", "--gateways", "2", "--workers", "3", "--validators", "1", "--heartbeat-ms"])
        .arg(HEARTBEAT_MS.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--database-url")
        .arg(db)
        .arg(format!("--gateway-arg=--config={}", config.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn verinet devnet");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let devnet = Devnet { child, dir: dir.to_path_buf() };
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("devnet ready") => break,
            Some(Ok(l)) => seen.push(l),
            _ => panic!("devnet ended before ready:\n{}\n(logs in {})", seen.join("\n"), dir.display()),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    devnet
}

async fn nodes(gateway: &str) -> Value {
    Client::new(gateway).get_json("/v1/nodes").await.unwrap()
}

fn node<'a>(nodes: &'a Value, address: &str) -> Option<&'a Value> {
    nodes["nodes"].as_array().unwrap().iter().find(|n| n["address"].as_str().unwrap().eq_ignore_ascii_case(address))
}


/// A running devnet and what the tests need of it.
struct Net {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    devnet: Devnet,
    procs: Vec<Value>,
    gateways: Vec<String>,
    workers: Vec<Address>,
    payer: PrivateKeySigner,
    req: InferRequest,
}

const FUNDS: u128 = 10_000_000;

async fn setup(db: &str) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("gateway.toml");
    std::fs::write(&config, "[payments]\noperator_fee = \"300\"\n").unwrap();
    let dir = tmp.path().join("devnet");
    let devnet = start_devnet(&dir, db, &config);
    let file: Value = serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).unwrap()).unwrap();
    let procs = file["procs"].as_array().unwrap().clone();
    let gateways: Vec<String> =
        procs.iter().filter(|p| p["role"] == "gateway").map(|p| p["url"].as_str().unwrap().to_owned()).collect();
    assert_eq!(gateways.len(), 2);
    // Both gateways route to all four remote nodes, each staked.
    for g in &gateways {
        let v = nodes(g).await;
        let remote: Vec<&Value> = v["nodes"].as_array().unwrap().iter().filter(|n| n["endpoint"].is_string()).collect();
        assert_eq!(remote.len(), 4, "{v}");
        assert!(remote.iter().all(|n| n["active"] == true && n["stake"] != "0"), "{v}");
        assert_eq!(remote.iter().filter(|n| n["role"] == "validator").count(), 1);
    }
    let workers: Vec<Address> = nodes(&gateways[0]).await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "worker")
        .map(|n| n["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(workers.len(), 3);
    let payer = PrivateKeySigner::random();
    Client::new(&gateways[0]).faucet(payer.address(), Some(FUNDS)).await.unwrap();
    let req = InferRequest {
        verification: VerificationMode::Sampled,
        sample_rate: Some(0.25),
        ..InferRequest::new("digits", sample())
    };
    Net { _tmp: tmp, dir, config, devnet, procs, gateways, workers, payer, req }
}

/// One request of the stream: which gateway, when it started, what came back.
struct Outcome {
    gateway: usize,
    started: Instant,
    result: Result<InferResponse, ClientError>,
}

/// Four clients paying in a loop, alternating gateways, until stopped.
struct Stream {
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Stream {
    fn start(net: &Net) -> Self {
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..4)
            .map(|i| {
                let (gateways, payer, req) = (net.gateways.clone(), net.payer.clone(), net.req.clone());
                let (answered, stop) = (answered.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut n = i;
                    while !stop.load(Ordering::SeqCst) {
                        let (gateway, started) = (n % 2, Instant::now());
                        n += 1;
                        let result = Client::new(&gateways[gateway]).infer_paid(&req, &payer).await.map(|(resp, settled)| {
                            assert!(settled.unwrap().success);
                            answered.fetch_add(1, Ordering::SeqCst);
                            resp
                        });
                        if result.is_err() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        out.push(Outcome { gateway, started, result });
                    }
                    out
                })
            })
            .collect();
        Self { answered, stop, clients }
    }

    async fn wait_for(&self, more: usize) {
        let target = self.answered.load(Ordering::SeqCst) + more;
        let started = Instant::now();
        while self.answered.load(Ordering::SeqCst) < target {
            assert!(started.elapsed() < Duration::from_secs(60), "the stream stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for c in self.clients {
            all.extend(c.await.unwrap());
        }
        all
    }
}

/// The books, read from the shared database: balanced, no escrow left, every answer captured
/// exactly once with the hash of its outputs and a worker's receipt, every refund without a
/// result. Returns how much was captured beyond the answers (captures whose answer a crash
/// kept from the client).
async fn check_books(net: &Net, db: &str, answers: &[&InferResponse], gateway_keys: &[Address]) -> u128 {
    let store = SqlStore::connect(db).await.unwrap();
    let totals = store.totals().await.unwrap();
    assert!(totals.balanced(), "ledger invariant broken: {totals:?}");
    assert_eq!(totals.escrow, 0, "escrow left: {totals:?}");
    let mut charged = 0u128;
    for resp in answers {
        let p = store.payment(&resp.request_id).await.unwrap().expect("a payment record for every answer");
        assert_eq!(p.status, PaymentStatus::Captured);
        assert_eq!(p.output_hash, Some(format!("{:#x}", tensors_hash(&resp.tensors().unwrap()))));
        assert_eq!(store.request_txs(&resp.request_id).await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
        // Signed by the worker that computed it, for this payer at this price.
        let receipt = resp.receipt.as_ref().unwrap();
        let signer = verinet_verify::verify_receipt(receipt).unwrap();
        assert_eq!(signer, receipt.receipt.node);
        assert_eq!(receipt.receipt.payer, net.payer.address());
        assert_eq!(receipt.receipt.price, resp.payment.as_ref().unwrap().amount);
        assert!(net.workers.contains(&signer), "{signer} is not a worker");
        charged += resp.payment.as_ref().unwrap().amount.parse::<u128>().unwrap();
    }
    // Every payment either gateway opened: captured with a result or refunded without one.
    let mut captured = 0u128;
    for gw in gateway_keys {
        assert!(store.payments_with_status(PaymentStatus::Escrowed, *gw, i64::MAX).await.unwrap().is_empty());
        for p in store.payments_with_status(PaymentStatus::Refunded, *gw, i64::MAX).await.unwrap() {
            assert_eq!(store.request_txs(&p.request_id).await.unwrap(), vec![TxKind::Escrow, TxKind::Refund]);
            assert!(p.output_hash.is_none());
        }
        for p in store.payments_with_status(PaymentStatus::Captured, *gw, i64::MAX).await.unwrap() {
            assert_eq!(store.request_txs(&p.request_id).await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
            assert!(p.output_hash.is_some());
            captured += 1;
        }
    }
    let spent = FUNDS - store.balances(net.payer.address()).await.unwrap().available;
    assert!(spent >= charged, "charged {spent} < the answers' {charged}");
    assert!(captured as usize >= answers.len());
    store.close().await;
    spent - charged
}

async fn gateway_keys(net: &Net) -> Vec<Address> {
    let mut keys = Vec::new();
    for g in &net.gateways {
        keys.push(nodes(g).await["gateway"].as_str().unwrap().parse().unwrap());
    }
    keys
}

fn retries(dir: &Path) -> usize {
    (0..2)
        .map(|i| std::fs::read_to_string(dir.join(format!("gateway-{i}.log"))).unwrap_or_default().matches("trying another").count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_three_workers_one_validator_survive_a_worker_sigkill() {
    PgTestDb::with(|db| async move {
        let net = setup(&db.url).await;
        let stream = Stream::start(&net);
        stream.wait_for(40).await;

        // Kill the worker that has served the most so far: it is in the middle of the stream.
        let v = nodes(&net.gateways[0]).await;
        let victim = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "worker")
            .max_by_key(|n| n["stats"]["served"].as_u64().unwrap())
            .unwrap()
            .clone();
        let victim_addr = victim["address"].as_str().unwrap().to_owned();
        let victim_url = victim["endpoint"].as_str().unwrap();
        let pid = net.procs.iter().find(|p| p["url"] == victim_url).unwrap()["pid"].as_u64().unwrap();
        assert!(victim["stats"]["served"].as_u64().unwrap() > 0);
        let kill_time = Instant::now();
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());

        // Out of routing on both gateways within the heartbeat window (plus polling slack).
        for g in &net.gateways {
            loop {
                let v = nodes(g).await;
                let n = node(&v, &victim_addr).unwrap();
                if n["active"] == false {
                    break;
                }
                assert!(kill_time.elapsed() < Duration::from_millis(WINDOW_MS + 1_000), "{g} still routes to the dead worker: {n}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let left_routing = kill_time.elapsed();
        // The stream goes on with the other two.
        stream.wait_for(40).await;
        let outcomes = stream.stop().await;
        let answers: Vec<&InferResponse> = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).collect();
        let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
        eprintln!(
            "answered {}, failed {} (uncharged), dead worker out of routing after {left_routing:?}, retried elsewhere {}",
            answers.len(),
            failures.len(),
            retries(&net.dir)
        );
        for f in &failures {
            let e = f.result.as_ref().err().unwrap();
            // Uncharged API refusals only (never a 402, never a dropped connection), and none
            // for a request that started once the dead worker was out of routing.
            assert!(matches!(e, ClientError::Api { status, .. } if *status != 402), "{e}");
            assert!(f.started < kill_time + left_routing, "failed after the dead worker left routing: {e}");
        }
        let validated = answers.iter().filter(|r| r.check.as_ref().unwrap().status == "passed").count();
        assert!(validated > 0, "the validator process checked none of {} answers", answers.len());
        let keys = gateway_keys(&net).await;
        let extra = check_books(&net, &db.url, &answers, &keys).await;
        assert_eq!(extra, 0, "charged exactly the answers, once each");
        drop(net.devnet);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_sigkill_loses_no_payment_and_its_restart_rejoins_the_network() {
    PgTestDb::with(|db| async move {
        let net = setup(&db.url).await;
        let keys = gateway_keys(&net).await;
        let stream = Stream::start(&net);
        stream.wait_for(40).await;

        // SIGKILL gateway-1 with requests in flight through it.
        let victim = &net.procs.iter().find(|p| p["name"] == "gateway-1").unwrap();
        let killed_url = victim["url"].as_str().unwrap().to_owned();
        let kill_time = Instant::now();
        assert!(Command::new("kill").args(["-9", &victim["pid"].to_string()]).status().unwrap().success());
        // Gateway-0 serves on alone.
        stream.wait_for(30).await;

        // Restart it on its data dir and port: its recovery refunds the escrows it left open.
        let port = killed_url.rsplit(':').next().unwrap();
        let mut restarted = Restarted(
            Command::new(env!("CARGO_BIN_EXE_verinet"))
                .args(["up", "--role", "gateway", "--no-bundled", "--heartbeat-timeout-ms", &WINDOW_MS.to_string()])
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(net.dir.join("gateway-1"))
                .arg("--blobs-dir")
                .arg(net.dir.join("blobs"))
                .arg("--database-url")
                .arg(&db.url)
                .arg("--config")
                .arg(&net.config)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(restarted.0.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert_eq!(first, format!("verinet gateway up at {killed_url}"));
        std::thread::spawn(move || for _ in lines {});
        let restarted_at = kill_time.elapsed();

        // The workers and the validator rejoin it by heartbeat, and it serves paid requests.
        let rejoin = Instant::now();
        loop {
            let v = nodes(&killed_url).await;
            let active = v["nodes"].as_array().unwrap().iter().filter(|n| n["active"] == true).count();
            if active == 4 {
                break;
            }
            assert!(rejoin.elapsed() < Duration::from_secs(10), "nodes did not rejoin the restarted gateway: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rejoined = rejoin.elapsed();
        let back_at = kill_time.elapsed();
        stream.wait_for(30).await;
        let outcomes = stream.stop().await;
        let answers: Vec<&InferResponse> = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).collect();
        let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
        eprintln!(
            "answered {}, failed {} (all through the dead gateway), restarted after {restarted_at:?}, nodes rejoined in {rejoined:?}",
            answers.len(),
            failures.len()
        );
        // Only requests through the dead gateway failed, and only until it was back with its
        // nodes: dropped connections while it was dead, then `503 no_workers` (uncharged, with
        // Retry-After) until the first heartbeats reached the restarted process.
        for f in &failures {
            let e = f.result.as_ref().err().unwrap();
            assert_eq!(f.gateway, 1, "a request through the live gateway failed: {e}");
            assert!(f.started < kill_time + back_at, "failed after the gateway was back: {e}");
            let ok = match e {
                ClientError::Http(_) => true,
                ClientError::Api { status: 503, code, .. } => code == "no_workers",
                _ => false,
            };
            assert!(ok, "{e}");
        }
        assert!(answers.iter().any(|r| r.payment.is_some()), "paid answers");
        // The restarted gateway answered too (requests started after it was back).
        let extra = check_books(&net, &db.url, &answers, &keys).await;
        // A capture that committed as the gateway died reached no client: at most one per
        // client in flight through it.
        let price = answers[0].payment.as_ref().unwrap().amount.parse::<u128>().unwrap();
        eprintln!("captured without reaching a client (in flight as the gateway died): {}", extra / price.max(1));
        assert_eq!(extra % price, 0);
        assert!(extra <= 4 * price, "{extra} charged beyond the answers (price {price}, 4 clients)");
        drop(restarted);
        drop(net.devnet);
    })
    .await;
}

/// The restarted gateway: killed when the test ends, pass or fail.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
