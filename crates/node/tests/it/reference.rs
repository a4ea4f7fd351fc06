//! Reference outputs from onnxruntime (written at fixture time by Python).

use std::path::Path;

use serde::Deserialize;
use verinet_primitives::TensorMap;

#[derive(Deserialize)]
pub struct Reference {
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub inputs: TensorMap,
    pub outputs: TensorMap,
}

pub fn load(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every expected output is present with the same dtype and shape; integers equal exactly,
/// floats within `abs + rel * |expected|`.
pub fn assert_close(got: &TensorMap, expected: &TensorMap, abs: f64, rel: f64) {
    for (name, want) in expected {
        let g = got.get(name).unwrap_or_else(|| panic!("output {name} missing; got {:?}", got.keys()));
        assert_eq!(g.dtype(), want.dtype(), "dtype of {name}");
        assert_eq!(g.shape(), want.shape(), "shape of {name}");
        let (gv, wv) = (g.to_f64_vec(), want.to_f64_vec());
        if want.dtype().is_float() {
            for (i, (a, b)) in gv.iter().zip(&wv).enumerate() {
                assert!((a - b).abs() <= abs + rel * b.abs(), "{name}[{i}]: got {a}, onnxruntime {b}");
            }
        } else {
            assert_eq!(gv, wv, "{name} must match exactly ({})", want.dtype());
        }
    }
}
