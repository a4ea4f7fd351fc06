//! Output comparison for re-execution: exact for integers and booleans, absolute + relative
//! tolerance for floats, so two honest backends (tract, onnxruntime) never disagree.

use serde::{Deserialize, Serialize};
use verinet_primitives::TensorMap;

/// Float tolerance: `|got - expected| <= abs + rel * |expected|`, element by element.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Absolute slack.
    pub abs: f64,
    /// Relative slack.
    pub rel: f64,
}

impl Default for Tolerance {
    /// 1e-4 both ways: tract and onnxruntime agree within ~3e-6 on the test models; kernels
    /// that sum in another order drift further on long reductions.
    fn default() -> Self {
        Self { abs: 1e-4, rel: 1e-4 }
    }
}

/// Where two output sets first differ.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// Different output names.
    #[error("outputs differ in names: got {got:?}, expected {expected:?}")]
    Names {
        /// Names in the checked outputs.
        got: Vec<String>,
        /// Names in the reference outputs.
        expected: Vec<String>,
    },
    /// Same name, another dtype or shape.
    #[error("output {name:?}: got {got}, expected {expected}")]
    Layout {
        /// Output name.
        name: String,
        /// dtype and shape got.
        got: String,
        /// dtype and shape expected.
        expected: String,
    },
    /// An element beyond tolerance (or unequal, for exact dtypes).
    #[error("output {name:?}[{index}]: got {got}, expected {expected} (beyond tolerance)")]
    Value {
        /// Output name.
        name: String,
        /// Flat element index.
        index: usize,
        /// Value got.
        got: f64,
        /// Value expected.
        expected: f64,
    },
}

impl Tolerance {
    /// Compares `got` against `expected`: same names, dtypes and shapes; integers and booleans
    /// exactly; floats within the tolerance, NaN matching NaN only.
    pub fn compare(&self, got: &TensorMap, expected: &TensorMap) -> Result<(), Mismatch> {
        if !got.keys().eq(expected.keys()) {
            return Err(Mismatch::Names { got: got.keys().cloned().collect(), expected: expected.keys().cloned().collect() });
        }
        for (name, e) in expected {
            let g = &got[name];
            if g.dtype() != e.dtype() || g.shape() != e.shape() {
                return Err(Mismatch::Layout {
                    name: name.clone(),
                    got: format!("{}{:?}", g.dtype(), g.shape()),
                    expected: format!("{}{:?}", e.dtype(), e.shape()),
                });
            }
            if !e.dtype().is_float() {
                // Bit-exact: the raw little-endian bytes must be equal.
                if g.raw() != e.raw() {
                    let (gv, ev) = (g.to_f64_vec(), e.to_f64_vec());
                    let index = gv.iter().zip(&ev).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(Mismatch::Value { name: name.clone(), index, got: gv[index], expected: ev[index] });
                }
                continue;
            }
            for (index, (a, b)) in g.to_f64_vec().into_iter().zip(e.to_f64_vec()).enumerate() {
                let ok = if a.is_nan() || b.is_nan() {
                    a.is_nan() && b.is_nan()
                } else {
                    (a - b).abs() <= self.abs + self.rel * b.abs()
                };
                if !ok {
                    return Err(Mismatch::Value { name: name.clone(), index, got: a, expected: b });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use verinet_primitives::Tensor;

    use super::*;

    fn map(t: Tensor) -> TensorMap {
        TensorMap::from([("y".to_string(), t)])
    }

    #[test]
    fn floats_within_tolerance_integers_exactly() {
        let tol = Tolerance::default();
        let e = map(Tensor::from_f32(vec![3], &[1.0, -2.0, f32::NAN]).unwrap());
        assert!(tol.compare(&map(Tensor::from_f32(vec![3], &[1.00005, -2.0001, f32::NAN]).unwrap()), &e).is_ok());
        let far = tol.compare(&map(Tensor::from_f32(vec![3], &[1.0, -2.01, f32::NAN]).unwrap()), &e);
        assert!(matches!(far, Err(Mismatch::Value { index: 1, .. })), "{far:?}");
        assert!(tol.compare(&map(Tensor::from_f32(vec![3], &[1.0, -2.0, 0.0]).unwrap()), &e).is_err(), "NaN only matches NaN");

        let ints = map(Tensor::from_i64(vec![2], &[7, 8]).unwrap());
        assert!(tol.compare(&ints, &ints).is_ok());
        let off_by_one = tol.compare(&map(Tensor::from_i64(vec![2], &[7, 9]).unwrap()), &ints);
        assert!(matches!(off_by_one, Err(Mismatch::Value { index: 1, .. })));
        assert!(matches!(
            tol.compare(&map(Tensor::from_i64(vec![1, 2], &[7, 8]).unwrap()), &ints),
            Err(Mismatch::Layout { .. })
        ));
        let other_name = TensorMap::from([("z".to_string(), Tensor::from_i64(vec![2], &[7, 8]).unwrap())]);
        assert!(matches!(tol.compare(&other_name, &ints), Err(Mismatch::Names { .. })));
    }
}
