//! The verinet network: gateways, workers and validators as separate processes.
//!
//! - [`auth`]: every internal request and answer is signed (EIP-191 over method, path, time and
//!   body hash), both ways.
//! - [`wire`]: the bodies: [`wire::Registration`] (heartbeat), [`wire::RunRequest`] /
//!   [`wire::RunResponse`] (a job and its signed answer), [`wire::StakeRequest`].
//! - [`RemoteWorker`]: the gateway's side, an `Execute` over HTTP that accepts only answers
//!   signed by the worker with a receipt stating exactly the job and the outputs returned.
//! - [`Worker`]: the worker's side, a small axum service running jobs on its own runtime with
//!   model bytes fetched by sha256 and refused if they hash otherwise.
//! - [`join`]: stake once, then heartbeat every gateway; a gateway that acknowledges (signed)
//!   becomes one whose jobs the worker takes.

pub mod auth;
pub mod join;
mod remote;
pub mod wire;
mod worker;

pub use join::JoinConfig;
pub use remote::RemoteWorker;
pub use worker::{Worker, WorkerConfig};
