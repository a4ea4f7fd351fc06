//! Checks every backend must pass, run by `tract.rs` and `onnxruntime.rs` on their backend.

use std::sync::Arc;

use verinet_primitives::{DType, Dim, Tensor, TensorMap};
use verinet_runtime::{InferenceBackend, RuntimeError};

use crate::helpers::*;

/// Every case of the digits reference, including its batch case.
pub fn digits_matches_reference(backend: &dyn InferenceBackend) {
    let plan = prepare(backend, &digits_bytes());
    assert_eq!(*plan.signature(), crate::digits::digits_signature());
    let reference = digits_reference();
    assert!(reference.cases.iter().any(|c| c.inputs["pixels"].shape()[0] > 1), "no batch case");
    for (i, case) in reference.cases.iter().enumerate() {
        let out = plan.run(&case.inputs).unwrap_or_else(|e| panic!("{} digits case {i}: {e}", backend.name()));
        assert_outputs(&format!("{} digits case {i}", backend.name()), &out, &case.outputs, DIGITS_TOL);
    }
}

/// Every case of a `VERINET_TEST_MODELS` model, every output, dtypes exact.
pub fn model_matches_reference(backend: &dyn InferenceBackend, name: &str) {
    let (bytes, reference) = test_model(name);
    let plan = prepare(backend, &bytes);
    assert!(!reference.cases.is_empty(), "{name}: no reference cases");
    for (i, case) in reference.cases.iter().enumerate() {
        let what = format!("{} {name} case {i}", backend.name());
        let out = plan.run(&case.inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_outputs(&what, &out, &case.outputs, MODEL_TOL);
    }
}

/// The signature equals the graph's declaration as `fetch_test_models.py` read it with `onnx`.
pub fn signature_matches_manifest(backend: &dyn InferenceBackend, name: &str) {
    let (bytes, _) = test_model(name);
    let plan = prepare(backend, &bytes);
    let manifest = manifest(name);
    let sig = plan.signature();
    for (role, got, want) in [("input", &sig.inputs, &manifest.inputs), ("output", &sig.outputs, &manifest.outputs)] {
        assert_eq!(got.len(), want.len(), "{name}: {role} count");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.name, w.name, "{name}: {role} name");
            assert_eq!(g.dtype, dtype(&w.dtype), "{name}: {role} {} dtype", w.name);
            assert_eq!(g.shape.len(), w.shape.len(), "{name}: {role} {} rank", w.name);
            for (axis, (gd, wd)) in g.shape.iter().zip(&w.shape).enumerate() {
                let ok = match (gd, wd) {
                    (Dim::Fixed(n), serde_json::Value::Number(m)) => m.as_u64() == Some(*n),
                    (Dim::Symbolic(_), serde_json::Value::String(s)) if s == "?" => true,
                    (Dim::Symbolic(a), serde_json::Value::String(b)) => a == b,
                    _ => false,
                };
                assert!(ok, "{name}: {role} {} dim {axis}: {gd:?} vs {wd}", w.name);
            }
        }
    }
}

/// One tensor of each dtype through Identity comes back bit for bit.
pub fn every_dtype_round_trips(backend: &dyn InferenceBackend) {
    let plan = prepare(backend, &data_model("dtypes.onnx"));
    assert_eq!(plan.signature().inputs.len(), DType::ALL.len());
    let mut inputs = TensorMap::new();
    for dt in DType::ALL {
        let raw: Vec<u8> = (0..5 * dt.size())
            .map(|i| match dt {
                DType::Bool => (i % 2) as u8,
                // finite, non-NaN bit patterns so floats compare equal
                DType::Float16 | DType::Float32 | DType::Float64 if (i + 1) % dt.size() == 0 => 0x3f,
                _ => (i * 37 % 251) as u8,
            })
            .collect();
        inputs.insert(format!("x_{dt}"), Tensor::from_raw(dt, vec![5], raw).expect("tensor"));
    }
    let out = plan.run(&inputs).unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
    for dt in DType::ALL {
        assert_eq!(out[&format!("y_{dt}")], inputs[&format!("x_{dt}")], "{}: {dt}", backend.name());
    }
}

/// Garbage, truncated, empty and unsupported graphs are refused with a reason.
pub fn refuses_invalid_models(backend: &dyn InferenceBackend) {
    for (what, bytes, word) in crate::invalid::refused_models() {
        let reason = crate::invalid::invalid_reason(backend, &bytes);
        assert!(!reason.is_empty(), "{}: {what}: empty reason", backend.name());
        assert!(reason.contains(word), "{}: {what}: reason {reason:?} does not mention {word:?}", backend.name());
    }
}

/// An output declared without a shape gets the one the backend infers.
pub fn infers_undeclared_output_shape(backend: &dyn InferenceBackend) {
    let plan = prepare(backend, &data_model("undeclared_shape.onnx"));
    let y = &plan.signature().outputs[0];
    assert_eq!((y.name.as_str(), y.dtype), ("y", DType::Float32));
    assert_eq!(y.shape, [Dim::Symbolic("batch".into()), Dim::Fixed(3)], "{}", backend.name());
    let x = Tensor::from_f32(vec![2, 3], &[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]).expect("tensor");
    let out = plan.run(&[("x".to_string(), x)].into()).expect("run");
    assert_eq!(out["y"].as_f32().expect("f32"), [0.0, 2.0, 0.0, 4.0, 0.0, 6.0]);
}

/// Runs on one plan from several threads at once agree with a lone run.
pub fn concurrent_runs_agree(backend: &dyn InferenceBackend) {
    let plan = prepare(backend, &digits_bytes());
    let input = digits_input(3);
    let alone = plan.run(&input).expect("run");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (plan, input) = (Arc::clone(&plan), &input);
                s.spawn(move || (0..5).map(|_| plan.run(input).expect("run")).collect::<Vec<_>>())
            })
            .collect();
        for h in handles {
            for out in h.join().expect("thread") {
                assert_eq!(out, alone);
            }
        }
    });
}

/// `Execution`, not a panic, when a plan is run with inputs that skipped the signature check.
pub fn unchecked_bad_inputs_fail_cleanly(backend: &dyn InferenceBackend) {
    let plan = prepare(backend, &digits_bytes());
    let wrong = Tensor::from_f32(vec![1, 63], &[0.0; 63]).expect("tensor");
    match plan.run(&[("pixels".to_string(), wrong)].into()) {
        Err(RuntimeError::Execution(_)) => {}
        other => panic!("{}: expected Execution, got {other:?}", backend.name()),
    }
    match plan.run(&TensorMap::new()) {
        Err(RuntimeError::Execution(_)) => {}
        other => panic!("{}: expected Execution, got {other:?}", backend.name()),
    }
}

/// One model of `$VERINET_TEST_MODELS/sklearn/index.json` (`fixtures/sklearn/make_sklearn.py`).
#[derive(serde::Deserialize)]
pub struct SklearnModel {
    pub name: String,
    pub ops: Vec<String>,
    pub tolerance: SklearnTolerance,
}

#[derive(serde::Deserialize)]
pub struct SklearnTolerance {
    pub abs: f64,
    pub rel: f64,
}

pub fn sklearn_table() -> Vec<SklearnModel> {
    let path = test_model_root().join("sklearn/index.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; run `python3 fixtures/sklearn/make_sklearn.py target/test-models/sklearn`", path.display())
    });
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every scikit-learn model of the fixture table compiles and answers every reference case
/// within its tolerance of onnxruntime (which ran the bytes as exported, ZipMap included).
pub fn sklearn_table_matches_reference(backend: &dyn InferenceBackend) {
    let table = sklearn_table();
    assert!(table.len() >= 12, "the table has {} models", table.len());
    let mut failures = vec![];
    for model in &table {
        let dir = test_model_root().join("sklearn").join(&model.name);
        let bytes = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
        let reference = parse_reference(&dir.join("reference.json"));
        let tol = Tolerance { abs: model.tolerance.abs, rel: model.tolerance.rel };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let plan = backend.prepare(&bytes).unwrap_or_else(|e| panic!("{}: {e}", model.name));
            assert!(!reference.cases.is_empty(), "{}: no reference cases", model.name);
            for (i, case) in reference.cases.iter().enumerate() {
                let what = format!("{} {} case {i}", backend.name(), model.name);
                let out = plan.run(&case.inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_outputs(&what, &out, &case.outputs, tol);
            }
        }));
        if result.is_err() {
            failures.push(format!("{} ({})", model.name, model.ops.join(" ")));
        }
    }
    assert!(failures.is_empty(), "{}: {} of {} models fail: {failures:#?}", backend.name(), failures.len(), table.len());
}
