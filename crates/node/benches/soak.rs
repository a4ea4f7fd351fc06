//! Soak: a release node at a steady rate for a long time, with a mix of free, paid (x402 and
//! session) and sampled calls. Prints per slice: requests, errors, p50/p99, the node's RSS and
//! its data dir; at the end, storage per request and the slowest background write the node
//! logged.
//!
//! cargo build --release --locked -p verinet
//! SOAK_MINUTES=30 cargo bench -p verinet-node --bench soak
//!
//! Knobs (environment): SOAK_MINUTES (30), SOAK_SLICE_SECS (300), SOAK_RATE (total req/s, 400),
//! SOAK_CONC (connections, 8), SOAK_MIX (`mixed`, or `free` for free calls only),
//! SOAK_RETENTION_SECS (the node's receipt and per-second roll-up retention, 300, so pruning
//! runs inside the soak),
//! VERINET_BIN (default target/release/verinet), ORT_DYLIB_PATH (passed to the node).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use verinet_client::Client;
use verinet_payments::{
    sign_payment, unix_now,
    wire::{PAYMENT_SIGNATURE, encode_header},
};
use verinet_primitives::{TensorMap, wire::{InferRequest, VerificationMode}};

mod common;
use common::{load_model, ms, open_session, publish_priced};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Free,
    X402,
    Session,
    Sampled,
}

const KINDS: [Kind; 4] = [Kind::Free, Kind::X402, Kind::Session, Kind::Sampled];

/// The i-th call's kind: of every 20, 16 free, 2 x402, 1 session, 1 sampled (or all free).
fn kind_of(i: u64, mixed: bool) -> Kind {
    if !mixed {
        return Kind::Free;
    }
    match i % 20 {
        16 | 17 => Kind::X402,
        18 => Kind::Session,
        19 => Kind::Sampled,
        _ => Kind::Free,
    }
}

#[derive(Default)]
struct Slice {
    latencies: Vec<Duration>,
    per_kind: [u64; 4],
    errors: u64,
    first_error: Option<String>,
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let minutes = env_num("SOAK_MINUTES", 30);
    let slice = Duration::from_secs(env_num("SOAK_SLICE_SECS", 300));
    let rate = env_num("SOAK_RATE", 400).max(1);
    let conc = env_num("SOAK_CONC", 8).max(1);
    let retention = env_num("SOAK_RETENTION_SECS", 300);
    let mixed = std::env::var("SOAK_MIX").map_or(true, |m| m != "free");
    let bin = std::env::var_os("VERINET_BIN").map_or_else(|| root.join("target/release/verinet"), PathBuf::from);
    assert!(bin.exists(), "{} missing: cargo build --release --locked -p verinet", bin.display());

    let work = tempfile::tempdir().expect("tmp");
    let data = work.path().join("data");
    let config = work.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[receipts]\nretention_secs = {retention}\n\n[flywheel]\nseconds_retention_secs = {retention}\n\n[server]\nlog_summary_secs = 60\n"
        ),
    )
    .expect("config");
    let log = work.path().join("node.log");
    let empty = work.path().join("no-language-models");
    std::fs::create_dir_all(&empty).expect("dir");
    let mut child = Command::new(&bin)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .arg("--language-models")
        .arg(&empty)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn verinet up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("first line").expect("utf8");
    let url = first.strip_prefix("verinet node up at ").expect("node url").to_owned();
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(async {
        let client = Client::new(&url);
        let sample: TensorMap =
            serde_json::from_str(&std::fs::read_to_string(root.join("fixtures/digits/sample.json")).expect("sample")).expect("json");
        let free = Arc::new(InferRequest::new("digits", sample.clone()));
        // Free calls go to the bundled digits; paid ones to a copy with a royalty (the node
        // charges no fees of its own, so one node serves both).
        let (bytes, _) = load_model("digits").expect("digits");
        publish_priced(&client, &PrivateKeySigner::random(), "digits-paid", bytes, "300").await;
        let paid = Arc::new(InferRequest::new("digits-paid", free.inputs.clone()));
        let mut sampled = InferRequest::new("digits", sample);
        sampled.verification = VerificationMode::Sampled;
        sampled.sample_rate = Some(1.0);
        let sampled = Arc::new(sampled);
        let payer = PrivateKeySigner::random();
        client.faucet(payer.address(), None).await.expect("faucet");
        let accepted = client.quote(&paid).await.expect("402").accepts[0].clone();
        let bearer = Arc::new(open_session(&client, &payer).await);
        let (payer, accepted) = (Arc::new(payer), Arc::new(accepted));

        println!("soak: {} for {minutes} min, {rate} req/s over {conc} connections, mix {}, receipt retention {retention} s", bin.display(), if mixed { "16 free : 2 x402 : 1 session : 1 sampled" } else { "free only" });
        println!("\n| slice | minutes | requests | free | x402 | session | sampled | errors | p50 ms | p99 ms | RSS MiB | data dir MB |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");

        let current = Arc::new(Mutex::new(Slice::default()));
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let start = Instant::now();
        let end = start + Duration::from_secs(minutes * 60);
        let period = Duration::from_secs_f64(conc as f64 / rate as f64);
        let workers: Vec<_> = (0..conc)
            .map(|w| {
                let (client, free, paid, sampled, bearer, payer, accepted, current, counter) = (
                    client.clone(),
                    free.clone(),
                    paid.clone(),
                    sampled.clone(),
                    bearer.clone(),
                    payer.clone(),
                    accepted.clone(),
                    current.clone(),
                    counter.clone(),
                );
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval_at(
                        tokio::time::Instant::now() + period.mul_f64(w as f64 / conc as f64),
                        period,
                    );
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while Instant::now() < end {
                        tick.tick().await;
                        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let kind = kind_of(i, mixed);
                        let t = Instant::now();
                        let result = match kind {
                            Kind::Free => client.infer(&free).await.map(drop),
                            Kind::Sampled => client.infer(&sampled).await.map(drop),
                            Kind::Session => client.infer_with_header(&paid, "authorization", &bearer).await.map(drop),
                            Kind::X402 => {
                                let header = encode_header(&sign_payment(&accepted, None, &payer, unix_now()).expect("sign"));
                                client.infer_with_header(&paid, PAYMENT_SIGNATURE, &header).await.map(drop)
                            }
                        };
                        let took = t.elapsed();
                        let mut s = current.lock().expect("slice");
                        s.latencies.push(took);
                        s.per_kind[KINDS.iter().position(|k| *k == kind).unwrap_or(0)] += 1;
                        if let Err(e) = result {
                            s.errors += 1;
                            s.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                })
            })
            .collect();

        let (mut total, mut n) = (0u64, 0u32);
        let mut marks: Vec<(u64, u64)> = Vec::new(); // (requests so far, data dir bytes) per slice
        let mut rss = Vec::new();
        while Instant::now() < end {
            let next = start + slice * (n + 1);
            tokio::time::sleep_until(tokio::time::Instant::from_std(next.min(end))).await;
            n += 1;
            let mut s = std::mem::take(&mut *current.lock().expect("slice"));
            s.latencies.sort();
            let pct = |p: f64| s.latencies.get(((s.latencies.len() as f64 * p) as usize).min(s.latencies.len().saturating_sub(1))).copied().unwrap_or_default();
            total += s.latencies.len() as u64;
            let bytes = dir_bytes(&data);
            let r = rss_mib(pid);
            marks.push((total, bytes));
            rss.push(r);
            println!(
                "| {n} | {:.1} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {r:.0} | {:.1} |",
                start.elapsed().as_secs_f64() / 60.0,
                s.latencies.len(),
                s.per_kind[0],
                s.per_kind[1],
                s.per_kind[2],
                s.per_kind[3],
                s.errors,
                ms(pct(0.5)),
                ms(pct(0.99)),
                bytes as f64 / 1e6
            );
            if let Some(e) = s.first_error {
                println!("  first error of the slice: {e}");
            }
        }
        for w in workers {
            let _ = w.await;
        }

        // Storage: overall, and the growth per request once pruning keeps pace (the slices
        // after the retention window, as the second half of the run or the last slice).
        let (req_end, bytes_end) = *marks.last().expect("a slice");
        println!("\nrequests served: {req_end}");
        println!("data dir: {:.1} MB, {:.0} bytes per request over the whole run", bytes_end as f64 / 1e6, bytes_end as f64 / req_end.max(1) as f64);
        let settled = marks.len() / 2;
        if settled > 0 && settled < marks.len() - 1 {
            let (r0, b0) = marks[settled - 1];
            let grown = bytes_end.saturating_sub(b0) as f64 / (req_end - r0).max(1) as f64;
            println!("growth after slice {settled} (retention {retention} s passed): {grown:.0} bytes per request");
        }
        let warm = rss.get(1).copied().unwrap_or_default();
        let max = rss.iter().skip(1).copied().fold(0.0, f64::max);
        println!("RSS after warm-up (slice 2): {warm:.0} MiB; max afterwards {max:.0} MiB ({:+.1}%)", (max / warm.max(1e-9) - 1.0) * 100.0);
    });

    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let slow: Vec<&str> = text.lines().filter(|l| l.contains("slow statement")).collect();
    println!("slow-statement warnings in the node's log: {}", slow.len());
    for l in slow.iter().take(5) {
        println!("  {}", l.chars().take(300).collect::<String>());
    }
    let warns = text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).count();
    println!("WARN/ERROR lines in the node's log: {warns}; log size {} bytes", text.len());
    for l in text.lines().filter(|l| l.contains("traffic in the last")).take(3) {
        println!("  {}", l.chars().take(300).collect::<String>());
    }
    println!("final data dir after shutdown: {:.1} MB", dir_bytes(&data) as f64 / 1e6);
    // Where the bytes are: SQLite's own page accounting per table and index.
    match rusqlite::Connection::open(data.join("verinet.db")).and_then(|db| {
        let mut q = db.prepare("SELECT name, SUM(pgsize), SUM(unused) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 12")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
        rows.collect::<Result<Vec<_>, _>>()
    }) {
        Ok(rows) => {
            println!("\n| table or index | MB | unused MB |\n|---|---|---|");
            for (name, bytes, unused) in rows {
                println!("| {name} | {:.1} | {:.1} |", bytes as f64 / 1e6, unused as f64 / 1e6);
            }
        }
        Err(e) => println!("(no per-table breakdown: {e})"),
    }
}
