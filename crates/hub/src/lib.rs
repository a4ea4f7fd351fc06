//! The model hub: content-addressed ONNX models with owner-signed names and versions.
//!
//! - [`Hub`]: publish (stage the upload to disk while hashing, check the owner's signature,
//!   compile the graph to prove it runs, store blob + record), resolve a [`ModelRef`], list,
//!   and read model bytes; a hot call resolves from memory, the cache emptied on every
//!   publication (another gateway's too, through the store's watch).
//! - [`Staged`]: an upload written to a temporary file with its hash and size.
//! - [`HubConfig`]: size limit, clock skew, staging directory.
//! - usage counters, buffered and flushed in batches off the request path.
//! - [`HubError`]: everything that can go wrong, each with a caller-facing meaning.
//!
//! [`ModelRef`]: verinet_primitives::ModelRef

mod cache;
mod error;
mod hub;
mod stage;
mod usage;

pub use error::{HubError, Result};
pub use hub::{Hub, HubConfig};
pub use stage::Staged;
