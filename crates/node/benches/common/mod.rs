//! Shared by the node benches: drive a closure at a concurrency, report throughput and latency.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use verinet_client::{Client, sign_publish};
use verinet_primitives::{
    Address, ModelId, TensorMap,
    wire::{InferRequest, PublishRequest},
};

/// Throughput and latency percentiles of one [`drive`].
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub struct Stats {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `total` calls of `f` with `conc` in flight at once; throughput and latency percentiles.
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
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

/// A free `POST /v1/infer` of `req` through `client`, as the closure [`drive`] runs.
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub fn infer_call(
    client: &Client,
    req: &Arc<InferRequest>,
) -> impl Fn() -> futures::future::BoxFuture<'static, ()> + Clone + Send + Sync + 'static {
    let (c, r) = (client.clone(), req.clone());
    move || {
        let (c, r) = (c.clone(), r.clone());
        Box::pin(async move {
            c.infer(&r).await.expect("free inference");
        })
    }
}

#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}


#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    inputs: TensorMap,
}

/// A model's bytes and its first reference input: `digits` from the repo, others from
/// `VERINET_TEST_MODELS` (fetched by scripts/test.sh); `None` when that is not set.
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub fn load_model(name: &str) -> Option<(Vec<u8>, TensorMap)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (model, reference) = if name == "digits" {
        (root.join("models/digits-mlp.onnx"), root.join("fixtures/digits/reference.json"))
    } else {
        let dir = PathBuf::from(std::env::var("VERINET_TEST_MODELS").ok()?).join(name);
        (dir.join("model.onnx"), dir.join("reference.json"))
    };
    let mut bytes = std::fs::read(&model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    if name == "digits" {
        // The node bundles these very bytes under its own key, and a content hash has one owner:
        // a bench publishes a copy with an ONNX doc_string appended (the same graph).
        let doc = b"a verinet bench copy";
        bytes.extend_from_slice(&[0x32, doc.len() as u8]);
        bytes.extend_from_slice(doc);
    }
    let r: Reference =
        serde_json::from_str(&std::fs::read_to_string(&reference).expect("reference")).expect("reference json");
    Some((bytes, r.cases.into_iter().next().expect("a case").inputs))
}

/// Publishes `bytes` as `name@1.0.0`, free, signed by `key`.
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub async fn publish(client: &Client, key: &PrivateKeySigner, name: &str, bytes: Vec<u8>) {
    publish_priced(client, key, name, bytes, "0").await;
}

/// Publishes `bytes` as `name@1.0.0` at a royalty of `price` base units, signed by `key`.
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub async fn publish_priced(client: &Client, key: &PrivateKeySigner, name: &str, bytes: Vec<u8>, price: &str) {
    let meta = PublishRequest {
        name: name.into(),
        version: "1.0.0".parse().expect("v"),
        description: String::new(),
        tags: vec![],
        license: String::new(),
        price: price.into(),
        owner: Address::ZERO,
        timestamp: 0,
        signature: String::new(),
        sha256: None,
        verification: None,
        kind: None,
        token_prices: None,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let id = ModelId::of_bytes(&bytes);
    client.publish_bytes(&sign_publish(meta, id, key, now).expect("sign"), bytes).await.expect("publish");
}

/// Opens a spending session for `payer` (no cap to speak of, an hour long) and returns its
/// `Authorization` header value.
#[allow(dead_code, reason = "each bench uses a subset of these helpers")]
pub async fn open_session(client: &Client, payer: &PrivateKeySigner) -> String {
    use alloy_signer::SignerSync;
    let mut cap = verinet_payments::SpendingCap {
        payer: payer.address(),
        max_total: (u64::MAX as u128).to_string(),
        expiry: verinet_payments::unix_now() + 3600,
        models: vec![],
        nonce: PrivateKeySigner::random().to_bytes(),
        signature: String::new(),
    };
    let sig = payer.sign_hash_sync(&cap.signing_hash(31337).expect("hash")).expect("sign");
    cap.signature = format!("0x{}", hex::encode(sig.as_bytes()));
    format!("Bearer {}", client.open_session(&cap).await.expect("session").token)
}
