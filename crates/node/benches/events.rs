//! What usage events cost the request path: the same model and input through two nodes in one
//! process, one recording events and one not, interleaved, free and paid.
//!
//! cargo bench -p verinet-node --bench events

use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use verinet_client::Client;
use verinet_node::{Config, Node};
use verinet_primitives::wire::InferRequest;
use verinet_payments::{sign_payment, unix_now, wire::{PAYMENT_SIGNATURE, encode_header}};

mod common;
use common::{Stats, drive, infer_call, load_model, ms};

/// One table row: events off (`o`) against on (`e`).
fn row(round: usize, conc: usize, o: &Stats, e: &Stats) {
    println!(
        "| run {} | {conc} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        round + 1,
        o.rps,
        e.rps,
        ms(o.p50),
        ms(e.p50),
        ms(o.p99),
        ms(e.p99),
        e.rps / o.rps
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(async {
        let dirs = [tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp")];
        let start = |dir: &tempfile::TempDir, events: bool| {
            let mut c = Config::default();
            c.storage.data_dir = dir.path().to_path_buf();
            c.server.listen = "127.0.0.1:0".parse().expect("addr");
            c.verification.workers = 1;
            c.payments.operator_fee = "100".into();
            c.flywheel.events = events;
            c
        };
        let on = Node::spawn(&start(&dirs[0], true)).await.expect("node");
        let off = Node::spawn(&start(&dirs[1], false)).await.expect("node");
        let (con, coff) = (Client::new(on.url()), Client::new(off.url()));
        let (_, inputs) = load_model("digits").expect("digits");
        let req = Arc::new(InferRequest::new("digits", inputs));
        let payer = PrivateKeySigner::random();
        for c in [&con, &coff] {
            c.faucet(payer.address(), None).await.expect("faucet");
        }
        println!("| POST /v1/infer digits, paid (x402, signed ahead) | in flight | events off req/s | events on req/s | off p50 ms | on p50 ms | off p99 ms | on p99 ms | on/off throughput |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for round in 0..2 {
            for conc in [1usize, 4] {
                const N: usize = 1200;
                let mut results = Vec::new();
                for client in [&coff, &con] {
                    let accepted = client.quote(&req).await.expect("402").accepts[0].clone();
                    let headers: Vec<String> = (0..N + 40)
                        .map(|_| encode_header(&sign_payment(&accepted, None, &payer, unix_now()).expect("sign")))
                        .collect();
                    let headers = Arc::new(std::sync::Mutex::new(headers));
                    let f = {
                        let (c, r, h) = (client.clone(), req.clone(), headers.clone());
                        move || {
                            let (c, r, h) = (c.clone(), r.clone(), h.clone());
                            async move {
                                let header = h.lock().expect("headers").pop().expect("a header");
                                c.infer_with_header(&r, PAYMENT_SIGNATURE, &header).await.expect("paid");
                            }
                        }
                    };
                    drive(2, 20, f.clone()).await;
                    results.push(drive(conc, N, f).await);
                }
                row(round, conc, &results[0], &results[1]);
            }
        }
        on.stop().await.expect("stop");
        off.stop().await.expect("stop");

        // Free calls: the cheapest request path, where any cost of events would show most.
        let free_dirs = [tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp")];
        let free = |dir: &tempfile::TempDir, events: bool| {
            let mut c = start(dir, events);
            c.payments.operator_fee = "0".into();
            c
        };
        let on = Node::spawn(&free(&free_dirs[0], true)).await.expect("node");
        let off = Node::spawn(&free(&free_dirs[1], false)).await.expect("node");
        let (con, coff) = (Client::new(on.url()), Client::new(off.url()));
        println!("\n| POST /v1/infer digits, free | in flight | events off req/s | events on req/s | off p50 ms | on p50 ms | off p99 ms | on p99 ms | on/off throughput |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for round in 0..2 {
            for conc in [1usize, 4] {
                let mut results = Vec::new();
                for client in [&coff, &con] {
                    let f = infer_call(client, &req);
                    drive(2, 20, f.clone()).await;
                    results.push(drive(conc, 3000, f).await);
                }
                row(round, conc, &results[0], &results[1]);
            }
        }
        on.stop().await.expect("stop");
        off.stop().await.expect("stop");
    });
}
