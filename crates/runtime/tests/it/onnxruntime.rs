//! The backend suite on onnxruntime (feature `ort`), and tract and onnxruntime agreeing.

use std::path::Path;
use std::sync::Arc;

use verinet_runtime::{InferenceBackend, OrtBackend, RuntimeConfig, RuntimeError, TractBackend};

use crate::helpers::*;
use crate::suite;

/// The backend on `ORT_DYLIB_PATH`; never skipped when the feature is on.
fn ort() -> OrtBackend {
    if std::env::var_os("ORT_DYLIB_PATH").is_none_or(|v| v.is_empty()) {
        panic!(
            "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so from the pip `onnxruntime` wheel \
             (version in crates/runtime/ORT_VERSION), e.g. \
             $(python3 -c 'import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))')/capi/libonnxruntime.so.<version>; \
             scripts/test.sh sets it"
        );
    }
    OrtBackend::new(None).unwrap_or_else(|e| panic!("loading onnxruntime from ORT_DYLIB_PATH: {e}"))
}

#[test]
fn digits_matches_reference() {
    suite::digits_matches_reference(&ort());
}

#[test]
fn minilm_matches_reference() {
    suite::model_matches_reference(&ort(), "minilm");
}

#[test]
fn magika_matches_reference() {
    suite::model_matches_reference(&ort(), "magika");
}

#[test]
fn signatures_match_manifests() {
    for name in ["digits", "minilm", "magika"] {
        suite::signature_matches_manifest(&ort(), name);
    }
}

#[test]
fn every_dtype_round_trips() {
    suite::every_dtype_round_trips(&ort());
}

#[test]
fn refuses_invalid_models() {
    suite::refuses_invalid_models(&ort());
}

#[test]
fn infers_undeclared_output_shape() {
    suite::infers_undeclared_output_shape(&ort());
}

#[test]
fn concurrent_runs_agree() {
    suite::concurrent_runs_agree(&ort());
}

#[test]
fn unchecked_bad_inputs_fail_cleanly() {
    suite::unchecked_bad_inputs_fail_cleanly(&ort());
}

#[test]
fn tract_and_onnxruntime_agree() {
    let tract = TractBackend::new();
    let ort = ort();
    let mut models = vec![("digits", digits_bytes(), digits_reference())];
    for name in ["minilm", "magika"] {
        let (bytes, reference) = test_model(name);
        models.push((name, bytes, reference));
    }
    for (name, bytes, reference) in models {
        let (a, b) = (prepare(&tract, &bytes), prepare(&ort, &bytes));
        assert_eq!(a.signature(), b.signature(), "{name}: signatures");
        for (i, case) in reference.cases.iter().enumerate() {
            let (x, y) = (a.run(&case.inputs).expect("tract"), b.run(&case.inputs).expect("onnxruntime"));
            assert_outputs(&format!("{name} case {i}: tract vs onnxruntime"), &x, &y, MODEL_TOL);
        }
    }
    // Inputs no reference has seen.
    let (a, b) = (prepare(&tract, &digits_bytes()), prepare(&ort, &digits_bytes()));
    let input = digits_input(7);
    assert_outputs("digits, fresh batch", &a.run(&input).expect("tract"), &b.run(&input).expect("ort"), DIGITS_TOL);
}

#[tokio::test]
async fn the_runtime_runs_on_onnxruntime() {
    let rt = verinet_runtime::Runtime::new(Arc::new(ort()), RuntimeConfig::default());
    assert_eq!(rt.backend_name(), "onnxruntime");
    let bytes = digits_bytes();
    let sig = rt.inspect(id(&bytes), bytes.clone()).await.expect("inspect");
    assert_eq!(sig, crate::digits::digits_signature());
    for (i, case) in digits_reference().cases.iter().enumerate() {
        let out = rt.run(id(&bytes), loader(&bytes), case.inputs.clone()).await.expect("run");
        assert_outputs(&format!("digits case {i} via the runtime"), &out.outputs, &case.outputs, DIGITS_TOL);
    }
    assert_eq!(rt.cache_stats().misses, 1);
}

#[test]
fn a_missing_library_is_a_load_error() {
    match OrtBackend::new(Some(Path::new("/nonexistent/libonnxruntime.so"))) {
        Err(RuntimeError::Load(m)) => assert!(m.contains("/nonexistent/libonnxruntime.so"), "{m}"),
        other => panic!("expected a load error, got {:?}", other.map(|b| b.name())),
    }
}

#[test]
fn one_library_per_process() {
    let loaded = ort();
    assert_eq!(OrtBackend::new(Some(loaded.library())).expect("same library again").name(), "onnxruntime");
    // Any other existing file is refused rather than silently ignored.
    let other = digits_bytes_path();
    match OrtBackend::new(Some(&other)) {
        Err(RuntimeError::Load(m)) => assert!(m.contains("already loaded"), "{m}"),
        other => panic!("expected a load error, got {:?}", other.map(|b| b.name())),
    }
}

fn digits_bytes_path() -> std::path::PathBuf {
    repo_root().join("models/digits-mlp.onnx")
}

#[test]
fn sklearn_table_matches_reference() {
    suite::sklearn_table_matches_reference(&ort());
}
