use std::sync::Arc;

use verinet_primitives::{IoSignature, TensorMap};

use crate::Result;

/// A backend that compiles ONNX bytes into runnable plans.
///
/// Compiling and running are CPU-heavy and blocking: callers run them on the blocking pool
/// (as [`Runtime`](crate::Runtime) does), never on the async executor.
pub trait InferenceBackend: Send + Sync + 'static {
    /// Short backend name, reported in health and receipts: `"tract"` or `"onnxruntime"`.
    fn name(&self) -> &'static str;

    /// Parses, types and optimises an ONNX model. Bytes that are not a runnable model yield
    /// [`RuntimeError::InvalidModel`](crate::RuntimeError::InvalidModel), never a panic.
    fn prepare(&self, onnx: &[u8]) -> Result<Arc<dyn Plan>>;
}

/// A compiled model, shared by every request for it; runs may overlap.
pub trait Plan: Send + Sync + 'static {
    /// Declared inputs (initialisers excluded) and outputs, symbolic dims kept by name.
    fn signature(&self) -> &IoSignature;

    /// Runs the model on inputs that passed [`IoSignature::check_inputs`]; blocking.
    /// Outputs are keyed by graph output name and carry the declared dtypes.
    fn run(&self, inputs: &TensorMap) -> Result<TensorMap>;

    /// Estimated resident size in bytes, the plan cache's unit of account.
    fn memory_bytes(&self) -> usize;
}
