//! The committed digits MLP against onnxruntime's reference outputs.

use verinet_primitives::{DType, Dim, IoSignature, TensorSpec};
use verinet_runtime::RuntimeConfig;

use crate::helpers::*;

pub fn digits_signature() -> IoSignature {
    let batch = || Dim::Symbolic("batch".into());
    let spec = |name: &str, dtype, shape| TensorSpec { name: name.into(), dtype, shape };
    IoSignature {
        inputs: vec![spec("pixels", DType::Float32, vec![batch(), Dim::Fixed(64)])],
        outputs: vec![
            spec("probabilities", DType::Float32, vec![batch(), Dim::Fixed(10)]),
            spec("label", DType::Int64, vec![batch()]),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn inspect_reads_the_declared_signature() {
    let bytes = digits_bytes();
    let rt = tract_runtime(RuntimeConfig::default());
    assert_eq!(rt.backend_name(), "tract");
    let sig = rt.inspect(id(&bytes), bytes.clone()).await.expect("inspect");
    assert_eq!(sig, digits_signature());
}

#[tokio::test]
async fn every_reference_case_matches_onnxruntime() {
    let bytes = digits_bytes();
    let reference = digits_reference();
    assert!(reference.cases.len() >= 2, "the reference has too few cases");
    assert!(reference.cases.iter().any(|c| c.inputs["pixels"].shape()[0] > 1), "the reference needs a batch case");
    let rt = tract_runtime(RuntimeConfig::default());
    for (i, case) in reference.cases.iter().enumerate() {
        let out = rt.run(id(&bytes), loader(&bytes), case.inputs.clone()).await.expect("run");
        assert_outputs(&format!("digits case {i}"), &out.outputs, &case.outputs, DIGITS_TOL);
    }
}

#[tokio::test]
async fn a_batch_equals_its_rows_run_one_by_one() {
    let bytes = digits_bytes();
    let rt = tract_runtime(RuntimeConfig::default());
    let reference = digits_reference();
    let singles: Vec<_> = reference.cases.iter().filter(|c| c.inputs["pixels"].shape()[0] == 1).take(5).collect();
    let pixels: Vec<f32> = singles.iter().flat_map(|c| c.inputs["pixels"].as_f32().expect("f32")).collect();
    let batch = verinet_primitives::Tensor::from_f32(vec![singles.len(), 64], &pixels).expect("tensor");
    let out = rt.run(id(&bytes), loader(&bytes), [("pixels".to_string(), batch)].into()).await.expect("run");

    let labels = out.outputs["label"].as_i64().expect("i64");
    let probs = out.outputs["probabilities"].as_f32().expect("f32");
    assert_eq!(out.outputs["probabilities"].shape(), [singles.len(), 10]);
    for (row, case) in singles.iter().enumerate() {
        assert_eq!(labels[row], case.outputs["label"].as_i64().expect("i64")[0], "row {row} label");
        let want = case.outputs["probabilities"].as_f32().expect("f32");
        for (g, w) in probs[row * 10..row * 10 + 10].iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5, "row {row}: {g} vs {w}");
        }
    }
}

#[tokio::test]
async fn timings_are_reported() {
    let bytes = digits_bytes();
    let rt = tract_runtime(RuntimeConfig::default());
    let first = rt.run(id(&bytes), loader(&bytes), digits_input(2)).await.expect("run");
    assert!(first.timings.load > std::time::Duration::ZERO, "a miss loads and compiles");
    assert!(first.timings.compute > std::time::Duration::ZERO);
    let second = rt.run(id(&bytes), loader(&bytes), digits_input(2)).await.expect("run");
    assert_eq!(second.outputs, first.outputs, "runs are deterministic");
    assert!(second.timings.load < first.timings.load, "a hit does not compile");
}
