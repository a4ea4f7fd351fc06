//! Bytes that are not a runnable model: always `InvalidModel` with a reason, never a panic.

use verinet_runtime::{InferenceBackend, RuntimeConfig, RuntimeError, TractBackend};

use crate::helpers::*;

/// The reason, asserting the error is `InvalidModel`.
pub fn invalid_reason(backend: &dyn InferenceBackend, bytes: &[u8]) -> String {
    match backend.prepare(bytes) {
        Err(RuntimeError::InvalidModel(reason)) => reason,
        Err(other) => panic!("{}: expected InvalidModel, got {other:?}", backend.name()),
        Ok(_) => panic!("{}: accepted an invalid model", backend.name()),
    }
}

/// The cases every backend must refuse, with a word each reason must contain.
pub fn refused_models() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let digits = digits_bytes();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    vec![
        ("empty", vec![], "empty"),
        ("garbage", garbage, ""),
        ("text", b"this is not an onnx model, just some text\n".to_vec(), ""),
        ("truncated digits", digits[..digits.len() / 2].to_vec(), ""),
        ("digits minus its last byte", digits[..digits.len() - 1].to_vec(), ""),
        ("string input", data_model("string_input.onnx"), "string"),
        ("unknown operator", data_model("unknown_op.onnx"), "NoSuchOp"),
    ]
}

#[test]
fn every_prefix_of_the_digits_model_is_refused_or_runs() {
    // Cut at many points: protobuf may parse a prefix, but nothing may panic or hang.
    let digits = digits_bytes();
    for cut in (0..digits.len()).step_by(97) {
        match TractBackend::new().prepare(&digits[..cut]) {
            Err(RuntimeError::InvalidModel(_)) => {}
            Err(other) => panic!("cut {cut}: {other:?}"),
            Ok(plan) => {
                let _ = plan.run(&digits_input(1));
            }
        }
    }
}

#[tokio::test]
async fn the_runtime_reports_invalid_models_and_caches_nothing() {
    let rt = tract_runtime(RuntimeConfig::default());
    let bytes = digits_bytes()[..100].to_vec();
    let err = rt.inspect(id(&bytes), bytes.clone()).await.expect_err("truncated");
    assert!(matches!(err, RuntimeError::InvalidModel(_)), "{err:?}");
    let err = rt.run(id(&bytes), loader(&bytes), digits_input(1)).await.expect_err("truncated");
    assert!(matches!(err, RuntimeError::InvalidModel(_)), "{err:?}");
    assert_eq!(rt.cache_stats().entries, 0);
}
