//! Times MiniLM int8 on the tract backend (compile, plan memory, ms per run of reference case 0).
//! `VERINET_TEST_MODELS=$PWD/target/test-models cargo run --release -p verinet-runtime --example minilm_time`
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a timing tool: a panic is the error report")]
use verinet_runtime::{InferenceBackend, TractBackend};
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("VERINET_TEST_MODELS").unwrap()).join("minilm");
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let inputs: verinet_primitives::TensorMap = serde_json::from_value(reference["cases"][0]["inputs"].clone()).unwrap();
    let t = std::time::Instant::now();
    let plan = TractBackend::new().prepare(&bytes).unwrap();
    println!("compile {:?} memory {} MiB", t.elapsed(), plan.memory_bytes() >> 20);
    for _ in 0..5 { plan.run(&inputs).unwrap(); }
    let n = 40;
    let t = std::time::Instant::now();
    for _ in 0..n { plan.run(&inputs).unwrap(); }
    println!("run {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
}
