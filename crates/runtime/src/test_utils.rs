//! Test helpers shared by every crate's tests (feature `test-utils`): reference outputs that
//! onnxruntime wrote at fixture time, and their comparison with an explicit tolerance.

#![allow(missing_docs)]

use std::path::Path;

use serde::Deserialize;
use verinet_primitives::{Tensor, TensorMap};

/// Cases of a `reference.json`: inputs and onnxruntime's outputs.
#[derive(Deserialize)]
pub struct Reference {
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub inputs: TensorMap,
    pub outputs: TensorMap,
}

/// Reads a `reference.json` written by the fixture scripts (extra fields are ignored).
pub fn parse_reference(path: &Path) -> Reference {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Float tolerance: `|got - want| <= abs + rel * |want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

pub const DIGITS_TOL: Tolerance = Tolerance { abs: 1e-5, rel: 0.0 };
pub const MODEL_TOL: Tolerance = Tolerance { abs: 1e-4, rel: 1e-4 };

/// Every expected output is present with the same dtype and shape; integers equal, floats
/// within `tol`. `what` names the case in failures.
pub fn assert_outputs(what: &str, got: &TensorMap, want: &TensorMap, tol: Tolerance) {
    let names = |m: &TensorMap| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: output names");
    for (name, w) in want {
        assert_tensor(&format!("{what}: {name}"), &got[name], w, tol);
    }
}

pub fn assert_tensor(what: &str, got: &Tensor, want: &Tensor, tol: Tolerance) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    if !want.dtype().is_float() {
        assert!(got.raw() == want.raw(), "{what}: {:?} != {:?}", got.to_f64_vec(), want.to_f64_vec());
        return;
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst = (0.0f64, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let excess = (a - b).abs() - (tol.abs + tol.rel * b.abs());
        assert!(!a.is_nan() || b.is_nan(), "{what}[{i}]: NaN, expected {b}");
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 0.0, "{what}[{i}]: {} vs {} is beyond {tol:?}", g[i], w[i]);
}

