//! Typed HTTP client for a verinet node, used by the CLI, the tests and the benchmarks.
//!
//! - [`Client`]: one method per endpoint, JSON bodies from [`verinet_primitives::wire`].
//! - [`ClientError`]: an API error keeps the node's status, code and message.
//! - The OpenAI-compatible routes (`Client::chat`, `chat_stream`, `completions`,
//!   `embeddings`), streams read as server-sent events by [`CompletionStream`].
//! - [`sign_publish`]: builds the owner-signed metadata of a publish.

mod client;
mod error;
mod openai;
mod publish;

pub use client::{Client, ListParams};
pub use error::{ClientError, Result};
pub use openai::CompletionStream;
pub use publish::sign_publish;
