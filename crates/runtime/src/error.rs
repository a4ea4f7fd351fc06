use std::time::Duration;

use thiserror::Error;
use verinet_primitives::InputMismatch;

/// Result alias for this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Why a model could not be compiled or run.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The bytes are not a model this backend can run (garbage, truncated, unsupported operator
    /// or dtype); the reason is meant for the publisher.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The request's inputs do not fit the model's signature.
    #[error("input mismatch: {0}")]
    Input(#[from] InputMismatch),
    /// The backend failed while running valid inputs.
    #[error("execution failed: {0}")]
    Execution(String),
    /// Queueing plus compute took longer than the configured timeout.
    #[error("inference timed out after {0:?}")]
    Timeout(Duration),
    /// Too many requests are already waiting for a slot.
    #[error("runtime overloaded: {queued} requests already queued")]
    Overloaded {
        /// Requests waiting when this one was turned away.
        queued: usize,
    },
    /// The model bytes (or the backend's library) could not be loaded.
    #[error("load failed: {0}")]
    Load(String),
}
