//! Model execution for a verinet node: ONNX bytes in, outputs out, within limits.
//!
//! - [`InferenceBackend`] compiles ONNX bytes into a [`Plan`] that runs tensors; [`TractBackend`]
//!   is pure Rust and always available, [`OrtBackend`] loads `libonnxruntime` at run time (found
//!   by [`find_onnxruntime`]). Both read the [`IoSignature`](verinet_primitives::IoSignature)
//!   from the ONNX graph.
//! - [`Runtime`] puts a backend behind the limits a node needs: a plan cache by model id
//!   (memory-weighted LRU, one compile per id however many callers race), input checks before
//!   queueing, a bounded queue, a concurrency cap on the blocking pool and a per-request timeout.
//!   [`RuntimeConfig`] holds the limits, [`RunOutput`] and [`Timings`] what one run returns,
//!   [`CacheStats`] what the cache did.
//! - [`RuntimeError`] is every way a run can fail.
//! - `test_utils` (feature `test-utils`): onnxruntime reference outputs and their comparison
//!   with a tolerance, shared by the tests of every crate.

mod backend;
mod cache;
mod error;
mod graph;
mod onnx_ml;
mod onnxruntime;
mod runtime;
#[cfg(feature = "test-utils")]
pub mod test_utils;
mod tract;

pub use backend::{InferenceBackend, Plan};
pub use cache::CacheStats;
pub use error::{Result, RuntimeError};
pub use onnxruntime::{OrtBackend, find_onnxruntime};
pub use runtime::{RunOutput, Runtime, RuntimeConfig, Timings};
pub use tract::TractBackend;
