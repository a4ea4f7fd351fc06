//! Shared by the process-level tests.

use verinet_primitives::TensorMap;

/// The digit the quick start prints (`fixtures/digits/sample.json`).
pub fn sample() -> TensorMap {
    serde_json::from_str(include_str!("../../../../fixtures/digits/sample.json")).expect("sample.json is a tensor map")
}
