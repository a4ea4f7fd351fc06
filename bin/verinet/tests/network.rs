//! The network as separate processes: `verinet devnet` with 2 gateways on one PostgreSQL,
//! 3 workers and 1 validator. A stream of paid requests through both gateways; one worker is
//! SIGKILLed mid-stream. Every request either succeeds once (captured once, with the hash of
//! the outputs the client got) or fails uncharged; no payment is lost or doubled; the dead
//! worker leaves routing on both gateways within the heartbeat window.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use serde_json::Value;
use verinet_client::{Client, ClientError};
use verinet_primitives::{Address, TensorMap, tensors_hash, wire::InferRequest, wire::VerificationMode};
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

fn sample() -> TensorMap {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits/sample.json")).unwrap();
    serde_json::from_str(&text).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_three_workers_one_validator_survive_a_worker_sigkill() {
    PgTestDb::with(|db| async move {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("gateway.toml");
        std::fs::write(&config, "[payments]\noperator_fee = \"300\"\n").unwrap();
        let dir = tmp.path().join("devnet");
        let devnet = start_devnet(&dir, &db.url, &config);
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
        const FUNDS: u128 = 10_000_000;
        Client::new(&gateways[0]).faucet(payer.address(), Some(FUNDS)).await.unwrap();
        let req = InferRequest {
            model: "digits".into(),
            inputs: sample(),
            app: None,
            verification: VerificationMode::Sampled,
            sample_rate: Some(0.25),
            output_encoding: Default::default(),
        };

        // Four clients, alternating gateways, until told to stop.
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let (gateways, payer, req) = (gateways.clone(), payer.clone(), req.clone());
                let (answered, stop, killed_at) = (answered.clone(), stop.clone(), killed_at.clone());
                tokio::spawn(async move {
                    let mut ok = Vec::new();
                    let mut failed = Vec::new();
                    let mut n = i;
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let client = Client::new(&gateways[n % 2]);
                        n += 1;
                        match client.infer_paid(&req, &payer).await {
                            Ok((resp, settled)) => {
                                assert!(settled.unwrap().success);
                                answered.fetch_add(1, Ordering::SeqCst);
                                ok.push(resp);
                            }
                            Err(ClientError::Api { status, code, message }) => {
                                // Uncharged failures only, and only around the kill.
                                assert_ne!(status, 402, "{code}: {message}");
                                let k = *killed_at.lock().unwrap();
                                assert!(k.is_some(), "failure before any kill: {status} {code}: {message}");
                                failed.push((started, code, message));
                            }
                            Err(e) => panic!("transport failure talking to a live gateway: {e}"),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();

        while answered.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Kill the worker that has served the most so far: it is in the middle of the stream.
        let v = nodes(&gateways[0]).await;
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
        let pid = procs.iter().find(|p| p["url"] == victim_url).unwrap()["pid"].as_u64().unwrap();
        assert!(victim["stats"]["served"].as_u64().unwrap() > 0);
        let kill_time = Instant::now();
        *killed_at.lock().unwrap() = Some(kill_time);
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());

        // Out of routing on both gateways within the heartbeat window (plus polling slack).
        for g in &gateways {
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
        let after_kill = answered.load(Ordering::SeqCst);
        while answered.load(Ordering::SeqCst) < after_kill + 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        for c in clients {
            let (ok, failed) = c.await.unwrap();
            answers.extend(ok);
            failures.extend(failed);
        }
        eprintln!(
            "answered {}, failed {} (uncharged), dead worker out of routing after {left_routing:?}",
            answers.len(),
            failures.len()
        );
        // A request that starts once the dead worker is out of routing never fails.
        for (started, code, message) in &failures {
            assert!(*started < kill_time + left_routing, "failed after the worker left routing: {code}: {message}");
        }

        // The books, read from the shared database.
        let store = SqlStore::connect(&db.url).await.unwrap();
        let totals = store.totals().await.unwrap();
        assert!(totals.balanced(), "ledger invariant broken: {totals:?}");
        assert_eq!(totals.escrow, 0, "escrow left: {totals:?}");
        let mut charged = 0u128;
        let mut validated = 0;
        for resp in &answers {
            let p = store.payment(&resp.request_id).await.unwrap().expect("a payment record for every answer");
            assert_eq!(p.status, PaymentStatus::Captured);
            assert_eq!(p.output_hash, Some(format!("{:#x}", tensors_hash(&resp.tensors().unwrap()))));
            assert_eq!(store.request_txs(&resp.request_id).await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
            // Signed by the worker that computed it, for this payer at this price.
            let receipt = resp.receipt.as_ref().unwrap();
            let signer = verinet_verify::verify_receipt(receipt).unwrap();
            assert_eq!(signer, receipt.receipt.node);
            assert_eq!(receipt.receipt.payer, payer.address());
            assert_eq!(receipt.receipt.price, resp.payment.as_ref().unwrap().amount);
            assert!(workers.contains(&signer), "{signer} is not a worker");
            charged += resp.payment.as_ref().unwrap().amount.parse::<u128>().unwrap();
            validated += usize::from(resp.check.as_ref().unwrap().status == "passed");
        }
        assert!(validated > 0, "the validator process checked none of {} answers", answers.len());
        let account = store.balances(payer.address()).await.unwrap();
        assert_eq!(FUNDS - account.available, charged, "charged exactly the answers, once each");
        // Every payment either gateway opened: captured with a result or refunded without one.
        for g in &gateways {
            let gw: Address = nodes(g).await["gateway"].as_str().unwrap().parse().unwrap();
            assert!(store.payments_with_status(PaymentStatus::Escrowed, gw, i64::MAX).await.unwrap().is_empty());
            for p in store.payments_with_status(PaymentStatus::Refunded, gw, i64::MAX).await.unwrap() {
                assert_eq!(store.request_txs(&p.request_id).await.unwrap(), vec![TxKind::Escrow, TxKind::Refund]);
                assert!(p.output_hash.is_none());
            }
        }
        store.close().await;
        drop(devnet);
        let retried: usize = (0..2)
            .map(|i| std::fs::read_to_string(dir.join(format!("gateway-{i}.log"))).unwrap_or_default().matches("trying another").count())
            .sum();
        eprintln!("requests moved to another worker after a failure: {retried}");
    })
    .await;
}
