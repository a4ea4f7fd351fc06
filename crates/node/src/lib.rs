//! Wiring only: a [`Config`] becomes concrete stores, a backend, a hub and a router, served
//! until shutdown.
//!
//! - [`Config`]: TOML with one section per concern, every field defaulted.
//! - [`Node`]: a built node (state + router); [`Node::serve`] runs it on a listener until a
//!   shutdown future resolves; [`Node::spawn`] does that in the background for tests and benches.
//! - [`WorkerNode`]: a worker or validator process (`network.role`), which joins gateways by
//!   heartbeat and runs their signed jobs.
//! - [`bundled`]: models shipped inside the binary and published on first start.
//! - [`KeyFile`]: a secp256k1 key file (the node key, owner of bundled models; the CLI wallet).

pub mod bundled;
mod config;
mod error;
mod key;
mod lock;
mod node;
mod serve;
mod worker;

pub use config::{
    BundledConfig, Config, FlywheelSection, HubSection, NetworkSection, PaymentsSection, ReceiptsSection, Role, RuntimeSection,
    ServerConfig, StorageConfig, VerificationSection,
};
pub use error::{NodeError, Result};
pub use key::KeyFile;
pub use lock::DataDirLock;
pub use node::{Node, Overrides, RunningNode, WrapExecutor, default_protocol_address};
pub use serve::{ConnLimits, serve};
pub use worker::WorkerNode;

/// Every process that links the node (the `verinet` binary, its tests and benches) allocates
/// with mimalloc. See docs/architecture.md, "The allocator is mimalloc".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
