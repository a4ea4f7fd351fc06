//! What verification costs, side by side in one process:
//!
//! 1. receipts signed and verified per second (EIP-712 hash + secp256k1), one thread;
//! 2. each mode against `none` on the same node, model and input: `sampled` at p = 0.1 and
//!    p = 1.0 (every request re-executed by the validator) and `quorum` with k = 3, for the
//!    small digits model and for MiniLM (when VERINET_TEST_MODELS is set), interleaved.
//!
//! cargo bench -p verinet-node --bench verification
//! (VERINET_TEST_MODELS=$PWD/target/test-models for MiniLM rows)

use std::sync::Arc;
use std::time::Instant;

use alloy_signer_local::PrivateKeySigner;
use verinet_client::Client;
use verinet_node::{Config, Node};
use verinet_primitives::{
    Address,
    wire::{InferRequest, ReceiptBody, VerificationMode},
};
use verinet_verify::{sign_receipt, verify_receipt};

mod common;
use common::{drive, infer_call, load_model, ms, publish};

fn receipts() {
    const N: usize = 4000;
    let key = PrivateKeySigner::random();
    let body = |i: usize| ReceiptBody {
        request_id: format!("{i:032x}"),
        model_hash: Default::default(),
        input_hash: Default::default(),
        output_hash: Default::default(),
        node: key.address(),
        mode: "none".into(),
        price: "1430".into(),
        payer: Address::repeat_byte(1),
        timestamp: 1_764_000_000_000,
        completion: None,
    };
    let start = Instant::now();
    let signed: Vec<_> = (0..N).map(|i| sign_receipt(body(i), &key, 31337).expect("sign")).collect();
    let sign_rate = N as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for s in &signed {
        verify_receipt(s).expect("verify");
    }
    let verify_rate = N as f64 / start.elapsed().as_secs_f64();
    println!("| receipts (EIP-712, secp256k1), one thread | per second |");
    println!("|---|---|");
    println!("| sign | {sign_rate:.0} |");
    println!("| verify (hash + recover + compare) | {verify_rate:.0} |");
}

async fn modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.verification.workers = 3;
    config.verification.validators = 1;
    config.verification.quorum_k = 3;
    config.receipts.batch_interval_ms = 1000;
    let node = Node::spawn(&config).await.expect("node");
    let client = Client::new(node.url());
    let key = PrivateKeySigner::random();

    println!("\n| model | mode | in flight | req/s | p50 ms | p99 ms | latency vs none (p50) | throughput vs none |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, total) in [("digits", 1500usize), ("minilm", 120)] {
        let Some((bytes, inputs)) = load_model(name) else {
            println!("| {name} | (skipped: set VERINET_TEST_MODELS) | | | | | | |");
            continue;
        };
        publish(&client, &key, &format!("bench-{name}"), bytes).await;
        let cases = [
            ("none", VerificationMode::None, None),
            ("sampled p=0.1", VerificationMode::Sampled, Some(0.1)),
            ("sampled p=1.0", VerificationMode::Sampled, Some(1.0)),
            ("quorum k=3", VerificationMode::Quorum, None),
        ];
        for conc in [1usize, 4] {
            let mut base = None;
            for (label, mode, p) in cases {
                let req = Arc::new(InferRequest {
                    verification: mode,
                    sample_rate: p,
                    ..InferRequest::new(format!("bench-{name}"), inputs.clone())
                });
                let f = infer_call(&client, &req);
                drive(2, 8, f.clone()).await;
                let s = drive(conc, total, f).await;
                let (b50, brps) = *base.get_or_insert((ms(s.p50), s.rps));
                println!(
                    "| {name} | {label} | {conc} | {:.0} | {:.3} | {:.3} | {:.2}x | {:.2}x |",
                    s.rps,
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.p50) / b50,
                    s.rps / brps
                );
            }
        }
    }
    node.stop().await.expect("stop");
}

fn main() {
    receipts();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(modes());
}
