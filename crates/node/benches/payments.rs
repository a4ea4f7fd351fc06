//! What payments cost, measured side by side in one process:
//!
//! 1. x402 payload verification (EIP-712 hash + secp256k1 recovery), on one thread and on every
//!    core;
//! 2. settlement on the ledger, on SQLite (file, WAL) and, when VERINET_TEST_POSTGRES_URL is
//!    set, on PostgreSQL: facilitator `settle` (verify + one transfer transaction) and the
//!    inference pair escrow + capture, at concurrency 1 and 8;
//! 3. the request path: the same model and input through a node that charges (x402 header
//!    signed ahead, or a session token) and through a node that does not, interleaved.
//!
//! cargo bench -p verinet-node --bench payments [-- verify|ledger|request ...]   (default: all three)
//! (VERINET_TEST_POSTGRES_URL=postgres://verinet:verinet@127.0.0.1:5433/postgres for PostgreSQL rows)
//! (CAPTURE_FLUSH_MS=5: the paid node answers captures before writing them, `[payments] capture_flush_ms`)

use std::sync::Arc;
use std::time::Instant;

use alloy_signer_local::PrivateKeySigner;
use verinet_client::Client;
use verinet_ledger::{EscrowRequest, FeeSchedule, Ledger, PaidBy, Payees};
use verinet_node::{Config, Node};
use verinet_payments::{
    Facilitator, X402Config, sign_payment, unix_now,
    wire::{FacilitatorRequest, PAYMENT_SIGNATURE, PaymentPayload, encode_header},
};
use verinet_primitives::{Address, TensorMap, wire::{InferRequest, VerificationMode}};
use verinet_store::SqlStore;

mod common;
use common::{drive, infer_call, ms, open_session};

fn terms(pay_to: Address) -> X402Config {
    X402Config { max_timeout_secs: 3600, ..X402Config::devnet(pay_to) }
}

fn sample() -> TensorMap {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    serde_json::from_str(&std::fs::read_to_string(root.join("fixtures/digits/sample.json")).expect("sample")).expect("json")
}

async fn verify_rates(config: &X402Config, payers: &[PrivateKeySigner]) {
    const N: usize = 4000;
    let req = config.requirements(1000);
    let payloads: Arc<Vec<PaymentPayload>> = Arc::new(
        (0..N).map(|i| sign_payment(&req, None, &payers[i % payers.len()], unix_now()).expect("sign")).collect(),
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("| x402 verify (EIP-712 + ecrecover) | threads | payloads/s |");
    println!("|---|---|---|");
    for threads in [1, cores] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (payloads, config, req) = (payloads.clone(), config.clone(), req.clone());
                s.spawn(move || {
                    for p in payloads.iter().skip(t).step_by(threads) {
                        config.verify(p, &req, unix_now()).expect("valid");
                    }
                });
            }
        });
        println!("| verify | {threads} | {:.0} |", N as f64 / start.elapsed().as_secs_f64());
    }
    // The same payloads through the previous recovery (alloy's pure-Rust k256), side by side:
    // EIP-712 hash + recovery + the signer check, on one thread.
    let start = Instant::now();
    for p in payloads.iter() {
        let hash = verinet_payments::authorization_hash(config, &p.payload.authorization).expect("hash");
        let bytes = hex::decode(p.payload.signature.trim_start_matches("0x")).expect("hex");
        let sig = alloy_primitives::Signature::try_from(bytes.as_slice()).expect("signature");
        let signer = sig.recover_address_from_prehash(&hash).expect("recover");
        assert_eq!(signer.to_string().to_lowercase(), p.payload.authorization.from.to_lowercase());
    }
    println!("| verify, alloy k256 recovery (before) | 1 | {:.0} |", N as f64 / start.elapsed().as_secs_f64());
}

async fn settle_rates(config: &X402Config, payers: &[PrivateKeySigner], db: &str, url: &str) {
    const N: usize = 1200;
    let store = SqlStore::connect(url).await.expect("db");
    let ledger = Ledger::new(Arc::new(store));
    for p in payers {
        ledger.mint(p.address(), 1 << 100).await.expect("mint");
    }
    let facilitator = Facilitator::new(config.clone(), ledger.clone());
    let req = config.requirements(1000);
    for conc in [1usize, 8] {
        let bodies: Vec<FacilitatorRequest> = (0..N)
            .map(|i| FacilitatorRequest {
                x402_version: 2,
                payment_payload: sign_payment(&req, None, &payers[i % payers.len()], unix_now()).expect("sign"),
                payment_requirements: req.clone(),
            })
            .collect();
        let queue = Arc::new(std::sync::Mutex::new(bodies));
        let f = facilitator.clone();
        let s = drive(conc, N, move || {
            let (f, queue) = (f.clone(), queue.clone());
            async move {
                let body = queue.lock().expect("queue").pop().expect("a body");
                assert!(f.settle(&body).await.expect("settle").success);
            }
        })
        .await;
        println!("| {db} | x402 settle (verify + transfer tx) | {conc} | {:.0} | {:.3} | {:.3} |", s.rps, ms(s.p50), ms(s.p99));

        let fees = FeeSchedule { operator_fee: 300, protocol_fee_bps: 1000, ..FeeSchedule::default() };
        let payees = Payees { creator: Address::repeat_byte(1), operator: Address::repeat_byte(2), protocol: Address::repeat_byte(3), app: None };
        let quote = Arc::new(fees.quote(1000, VerificationMode::None, 0, payees));
        let (ledger, payers) = (ledger.clone(), Arc::new(payers.to_vec()));
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = drive(conc, N, move || {
            let (ledger, quote, payers, counter) = (ledger.clone(), quote.clone(), payers.clone(), counter.clone());
            async move {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = format!("bench-{conc}-{i}");
                let escrow = ledger
                    .escrow(EscrowRequest {
                        request_id: &id,
                        payer: payers[i % payers.len()].address(),
                        quote: &quote,
                        model: "sha256:bench",
                        app: None,
                        gateway: Address::repeat_byte(9),
                        input_hash: "0x",
                        paid_by: PaidBy::Authorization { nonce: format!("0x{:064x}", i + conc * 1_000_000) },
                    })
                    .await
                    .expect("escrow");
                ledger.capture(&escrow, "0x", None).await.expect("capture");
            }
        })
        .await;
        println!("| {db} | escrow + capture (2 txs, 3-way split) | {conc} | {:.0} | {:.3} | {:.3} |", s.rps, ms(s.p50), ms(s.p99));
    }
}

/// The request path with both nodes on SQLite files, then on PostgreSQL when configured.
async fn request_paths() {
    println!("\n| POST /v1/infer digits | database | concurrency | free req/s | x402 req/s | session req/s | free p50 ms | x402 p50 ms | session p50 ms | x402 p99 ms | x402 adds p50 ms | free/x402 throughput | x402/free | session/free |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // DB=postgres: PostgreSQL alone (for a profile of it); DB=sqlite: SQLite alone.
    let db = std::env::var("DB").unwrap_or_default();
    if db != "postgres" {
        request_path("SQLite", None).await;
    }
    if std::env::var(verinet_store::PG_ENV).is_ok() && db != "sqlite" {
        let dbs = (verinet_store::PgTestDb::create().await, verinet_store::PgTestDb::create().await);
        request_path("PostgreSQL 15", Some((dbs.0.url.clone(), dbs.1.url.clone()))).await;
        dbs.0.drop_db().await;
        dbs.1.drop_db().await;
    }
}

async fn request_path(db: &str, urls: Option<(String, String)>) {
    let dirs = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let node = |dir: &tempfile::TempDir, fee: &str, url: Option<&String>| {
        let mut c = Config::default();
        c.storage.data_dir = dir.path().to_path_buf();
        c.storage.database_url = url.cloned();
        c.server.listen = "127.0.0.1:0".parse().expect("addr");
        c.payments.operator_fee = fee.into();
        // CAPTURE_FLUSH_MS: answer captures before writing them (BENCHMARKS.md, issue 13).
        c.payments.capture_flush_ms = std::env::var("CAPTURE_FLUSH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        c
    };
    let free = Node::spawn(&node(&dirs.0, "0", urls.as_ref().map(|u| &u.0))).await.expect("free node");
    let paid = Node::spawn(&node(&dirs.1, "300", urls.as_ref().map(|u| &u.1))).await.expect("paid node");
    let (free_client, paid_client) = (Client::new(free.url()), Client::new(paid.url()));
    let req = Arc::new(InferRequest::new("digits", sample()));
    let payer = PrivateKeySigner::random();
    paid_client.faucet(payer.address(), None).await.expect("faucet");
    let accepted = paid_client.quote(&req).await.expect("402").accepts[0].clone();
    let bearer = Arc::new(open_session(&paid_client, &payer).await);

    // REQUESTS: calls per cell (default 1500); more for a profile of one cell.
    let n: usize = std::env::var("REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    for conc in [1usize, 4] {
        // Headers signed ahead: the bench measures what the node does with a payment. A profile
        // of another path signs none, so a profiler sees only the path it measures.
        let signed = std::env::var("PROFILE").map_or(n + 40, |p| if p == "x402" { n } else { 0 });
        let headers: Vec<String> =
            (0..signed).map(|_| encode_header(&sign_payment(&accepted, None, &payer, unix_now()).expect("sign"))).collect();
        let headers = Arc::new(std::sync::Mutex::new(headers));
        let f = infer_call(&free_client, &req);
        let x = {
            let (c, r, h) = (paid_client.clone(), req.clone(), headers.clone());
            move || {
                let (c, r, h) = (c.clone(), r.clone(), h.clone());
                async move {
                    let header = h.lock().expect("headers").pop().expect("a header");
                    c.infer_with_header(&r, PAYMENT_SIGNATURE, &header).await.expect("x402");
                }
            }
        };
        let s = {
            let (c, r, b) = (paid_client.clone(), req.clone(), bearer.clone());
            move || {
                let (c, r, b) = (c.clone(), r.clone(), b.clone());
                async move {
                    c.infer_with_header(&r, "authorization", &b).await.expect("session");
                }
            }
        };
        // PROFILE=free|x402|session: only that path at INFLIGHT (default 4) in flight, for a
        // profiler to attach to.
        if let Ok(path) = std::env::var("PROFILE") {
            let inflight: usize = std::env::var("INFLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
            let cpu = process_cpu_secs();
            let st = match path.as_str() {
                "free" => drive(inflight, n, f).await,
                "x402" => drive(inflight, n, x).await,
                "session" => drive(inflight, n, s).await,
                other => panic!("PROFILE={other}: free, x402 or session"),
            };
            let cpu_us = (process_cpu_secs() - cpu) / n as f64 * 1e6;
            println!("| {path} at {inflight} | {db} | {:.0} req/s | p50 {:.3} ms | {cpu_us:.0} us CPU per call (client and node) |", st.rps, ms(st.p50));
            break;
        }
        drive(2, 20, f.clone()).await;
        drive(2, 20, x.clone()).await;
        drive(2, 20, s.clone()).await;
        let (fr, xr, sr) = (drive(conc, n, f).await, drive(conc, n, x).await, drive(conc, n, s).await);
        println!(
            "| digits | {db} | {conc} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} |",
            fr.rps,
            xr.rps,
            sr.rps,
            ms(fr.p50),
            ms(xr.p50),
            ms(sr.p50),
            ms(xr.p99),
            ms(xr.p50) - ms(fr.p50),
            fr.rps / xr.rps,
            xr.rps / fr.rps,
            sr.rps / fr.rps
        );
    }
    free.stop().await.expect("stop");
    paid.stop().await.expect("stop");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    // Parts named on the command line (cargo bench passes `--bench`), or all of them.
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let part = |p: &str| named.is_empty() || named.iter().any(|n| n == p);
    rt.block_on(async {
        let payers: Vec<PrivateKeySigner> = (0..64).map(|_| PrivateKeySigner::random()).collect();
        let config = terms(Address::repeat_byte(0xee));
        if part("verify") {
            verify_rates(&config, &payers).await;
        }
        if part("ledger") {
            ledger_rates(&config, &payers).await;
        }
        if part("request") {
            request_paths().await;
        }
    });
}

async fn ledger_rates(config: &X402Config, payers: &[PrivateKeySigner]) {
    println!("\n| database | ledger operation | concurrency | operations/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    settle_rates(config, payers, "SQLite (WAL)", &sqlite).await;
    // PostgreSQL too when a server is configured (scripts/test.sh starts one on 5433).
    if std::env::var(verinet_store::PG_ENV).is_ok() {
        let db = verinet_store::PgTestDb::create().await;
        settle_rates(config, payers, "PostgreSQL 15", &db.url).await;
        db.drop_db().await;
    } else {
        println!("| PostgreSQL | (skipped: set {}) | | | | |", verinet_store::PG_ENV);
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}
