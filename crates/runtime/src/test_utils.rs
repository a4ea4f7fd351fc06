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


/// A cheating worker's backend (test double): runs the real model, then corrupts the outputs of
/// a chosen share of runs (every float output shifted by +1.0, every integer output's first
/// element incremented), decided by a seeded generator so tests are reproducible.
pub struct CorruptingBackend {
    inner: std::sync::Arc<dyn crate::InferenceBackend>,
    share: f64,
    state: std::sync::Arc<std::sync::Mutex<u64>>,
    corrupted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CorruptingBackend {
    /// Corrupts about `share` (0..=1) of the runs of `inner`'s plans, seeded by `seed`.
    pub fn new(inner: std::sync::Arc<dyn crate::InferenceBackend>, share: f64, seed: u64) -> Self {
        Self {
            inner,
            share,
            state: std::sync::Arc::new(std::sync::Mutex::new(seed.max(1))),
            corrupted: Default::default(),
        }
    }

    /// How many runs were corrupted so far.
    pub fn corrupted(&self) -> u64 {
        self.corrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A handle on the corruption counter that outlives the backend's move into a runtime.
    pub fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.corrupted.clone()
    }
}

impl crate::InferenceBackend for CorruptingBackend {
    fn name(&self) -> &'static str {
        "corrupting"
    }

    fn prepare(&self, onnx: &[u8]) -> crate::Result<std::sync::Arc<dyn crate::Plan>> {
        Ok(std::sync::Arc::new(CorruptingPlan {
            inner: self.inner.prepare(onnx)?,
            share: self.share,
            state: self.state.clone(),
            corrupted: self.corrupted.clone(),
        }))
    }
}

struct CorruptingPlan {
    inner: std::sync::Arc<dyn crate::Plan>,
    share: f64,
    state: std::sync::Arc<std::sync::Mutex<u64>>,
    corrupted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CorruptingPlan {
    /// xorshift64*: a uniform draw in [0, 1).
    fn draw(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let x = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl crate::Plan for CorruptingPlan {
    fn signature(&self) -> &verinet_primitives::IoSignature {
        self.inner.signature()
    }

    fn run(&self, inputs: &TensorMap) -> crate::Result<TensorMap> {
        let mut out = self.inner.run(inputs)?;
        if self.draw() >= self.share {
            return Ok(out);
        }
        self.corrupted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for t in out.values_mut() {
            let mut raw = t.raw().to_vec();
            match t.dtype() {
                // Floats: every element +1.0, far beyond any tolerance.
                verinet_primitives::DType::Float32 => {
                    for c in raw.chunks_exact_mut(4) {
                        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) + 1.0;
                        c.copy_from_slice(&x.to_le_bytes());
                    }
                }
                verinet_primitives::DType::Float64 => {
                    for c in raw.chunks_exact_mut(8) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        c.copy_from_slice(&(f64::from_le_bytes(b) + 1.0).to_le_bytes());
                    }
                }
                // Anything else (a class label): flip the lowest bit of the first element.
                _ => {
                    if let Some(b) = raw.first_mut() {
                        *b ^= 1;
                    }
                }
            }
            if let Ok(c) = Tensor::from_raw(t.dtype(), t.shape().to_vec(), raw) {
                *t = c;
            }
        }
        Ok(out)
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

/// A slow worker's backend (test double): runs the real model, after holding its execution slot
/// for `delay` first (an overloaded or underpowered machine).
pub struct SlowBackend {
    inner: std::sync::Arc<dyn crate::InferenceBackend>,
    delay: std::time::Duration,
}

impl SlowBackend {
    /// `inner`, `delay` slower per run.
    pub fn new(inner: std::sync::Arc<dyn crate::InferenceBackend>, delay: std::time::Duration) -> Self {
        Self { inner, delay }
    }
}

impl crate::InferenceBackend for SlowBackend {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn prepare(&self, onnx: &[u8]) -> crate::Result<std::sync::Arc<dyn crate::Plan>> {
        Ok(std::sync::Arc::new(SlowPlan { inner: self.inner.prepare(onnx)?, delay: self.delay }))
    }
}

struct SlowPlan {
    inner: std::sync::Arc<dyn crate::Plan>,
    delay: std::time::Duration,
}

impl crate::Plan for SlowPlan {
    fn signature(&self) -> &verinet_primitives::IoSignature {
        self.inner.signature()
    }

    fn run(&self, inputs: &TensorMap) -> crate::Result<TensorMap> {
        std::thread::sleep(self.delay);
        self.inner.run(inputs)
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}
