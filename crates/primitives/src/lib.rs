//! Primitives shared by every verinet crate; no I/O.
//!
//! - [`ModelId`]: the content address of a model, `sha256:<hex>` of its exact ONNX bytes.
//! - [`Tensor`], [`DType`], [`TensorMap`]: tensors and their JSON form (`data` or `b64`).
//! - [`format_amount`], [`parse_amount`]: amounts in tokens (`1.5`) for people, base units
//!   everywhere else.
//! - [`unix_ms`]: the wall clock, in the unit records and events use.
//! - [`tensors_hash`], [`token_ids_hash`], [`token_lists_hash`]: the canonical keccak256 of
//!   named tensors and of token ids that receipts and payments bind.
//! - [`openai`]: the OpenAI-compatible request and response bodies (chat, completions,
//!   embeddings, the model list).
//! - [`IoSignature`], [`TensorSpec`], [`Dim`]: a model's declared inputs and outputs, and the
//!   check of a request's inputs against them ([`InputMismatch`]).
//! - [`ModelRef`]: how a request names a model (`name`, `name@version`, `sha256:<hex>`).
//! - [`PublishAuth`]: the owner-signed (EIP-191) authorisation to publish a model version.
//! - [`wire`]: the JSON bodies of the HTTP API, shared by server and client.
//! - [`Address`]: an Ethereum account address (re-exported from alloy).
//! - [`schema`]: OpenAPI schemas of the string-shaped types (addresses, hashes, amounts).
//! - [`secp`]: secp256k1 recovery and deterministic signing on libsecp256k1 (payments, receipts).

mod amount;
mod clock;
mod error;
mod hash;
mod model_id;
mod model_ref;
mod publish;
pub mod schema;
pub mod secp;
mod signature;
mod tensor;
pub mod tensor_json;
pub mod openai;
pub mod wire;

pub use alloy_primitives::Address;
pub use amount::{TOKEN_DECIMALS, format_amount, parse_amount};
pub use clock::{time_ordered_id, unix_ms, unix_ms_u64};
pub use error::{Error, Result};
pub use hash::{tensors_hash, token_ids_hash, token_lists_hash};
pub use model_id::{ModelId, Sha256Hasher};
pub use model_ref::{ModelRef, validate_model_name};
pub use publish::PublishAuth;
pub use signature::{Dim, InputMismatch, IoSignature, ModelKind, TensorSpec};
pub use tensor::{DType, Tensor, TensorMap};
pub use tensor_json::with_element_limit;
