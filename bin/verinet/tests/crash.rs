//! SIGKILL in the middle of a stream of paid requests, then a restart on the same data dir:
//! the ledger balances, every captured payment has its result recorded, nothing is captured
//! twice, every escrow left by the crash is refunded, and every answer a client received was
//! paid exactly once.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod common;
use common::sample;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_signer_local::PrivateKeySigner;
use verinet_client::{Client, ClientError};
use verinet_primitives::{tensors_hash, wire::InferRequest};
use verinet_store::{LedgerStore, PaymentStatus, SqlStore, TxKind};

const FEE: u128 = 300;

fn up(data: &Path, config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verinet"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn verinet up");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("verinet node up at ").unwrap_or_else(|| panic!("unexpected {first:?}")).to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("verinet.toml");
    std::fs::write(&config, format!("[payments]\noperator_fee = \"{FEE}\"\n")).unwrap();

    let (mut node, url) = up(&data, &config);
    let client = Client::new(&url);
    let payer = PrivateKeySigner::random();
    const FUNDS: u128 = 1_000_000;
    client.faucet(payer.address(), Some(FUNDS)).await.unwrap();
    let req = InferRequest::new("digits", sample());

    // Four clients pay in a loop until the node dies under them.
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, payer, req, served) = (client.clone(), payer.clone(), req.clone(), served.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut failures = 0usize;
                for _ in 0..500 {
                    match client.infer_paid(&req, &payer).await {
                        Ok((resp, settled)) => {
                            assert!(settled.unwrap().success);
                            served.fetch_add(1, Ordering::SeqCst);
                            answers.push(resp);
                        }
                        Err(ClientError::Http(_)) => {
                            failures += 1;
                            if failures > 3 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("unexpected refusal before the crash: {e}"),
                    }
                }
                answers
            })
        })
        .collect();
    while served.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill().unwrap(); // SIGKILL
    node.wait().unwrap();
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    assert!(answers.len() >= 40);

    // Restart: recovery refunds what the crash left in escrow; the node serves paid calls again.
    let (mut node, url) = up(&data, &config);
    let client = Client::new(&url);
    let (after, _) = client.infer_paid(&req, &payer).await.unwrap();
    answers.push(after);

    let store = SqlStore::connect(&format!("sqlite://{}?mode=rw", data.join("verinet.db").display())).await.unwrap();
    let totals = store.totals().await.unwrap();
    assert!(totals.balanced(), "ledger invariant broken: {totals:?}");
    assert_eq!(totals.escrow, 0, "escrow left after recovery: {totals:?}");

    // Every answer a client received: captured once, with the hash of exactly those outputs.
    for resp in &answers {
        let p = store.payment(&resp.request_id).await.unwrap().expect("a payment record for every answer");
        assert_eq!(p.status, PaymentStatus::Captured);
        assert_eq!(p.output_hash, Some(format!("{:#x}", tensors_hash(&resp.tensors().unwrap()))));
        assert_eq!(store.request_txs(&resp.request_id).await.unwrap(), vec![TxKind::Escrow, TxKind::Capture]);
    }
    // Every payment in the database, answered or not: settled once, captured only with a result.
    let account = store.balances(payer.address()).await.unwrap();
    let spent = FUNDS - account.available;
    assert_eq!(spent % FEE, 0);
    let captured = (spent / FEE) as usize;
    assert!(captured >= answers.len(), "{captured} captured < {} answered", answers.len());
    // A capture the client never saw can only be one that committed as the process died.
    assert!(captured <= answers.len() + 4, "{captured} captured, {} answered", answers.len());
    let node_key = std::fs::read_to_string(data.join("node.key")).unwrap();
    let gateway = node_key.trim().parse::<PrivateKeySigner>().unwrap().address();
    let refunded = store.payments_with_status(PaymentStatus::Refunded, gateway, i64::MAX).await.unwrap().len();
    eprintln!("answered {}, captured {captured}, refunded by recovery {refunded}", answers.len());
    let all = store.payments_with_status(PaymentStatus::Escrowed, gateway, i64::MAX).await.unwrap();
    assert!(all.is_empty(), "escrowed after recovery: {all:?}");
    for status in [PaymentStatus::Captured, PaymentStatus::Refunded] {
        for p in store.payments_with_status(status, gateway, i64::MAX).await.unwrap() {
            let txs = store.request_txs(&p.request_id).await.unwrap();
            let close = if status == PaymentStatus::Captured { TxKind::Capture } else { TxKind::Refund };
            assert_eq!(txs, vec![TxKind::Escrow, close], "{}", p.request_id);
            assert_eq!(p.output_hash.is_some(), status == PaymentStatus::Captured, "{}", p.request_id);
        }
    }
    store.close().await;
    node.kill().unwrap();
    node.wait().unwrap();
}
