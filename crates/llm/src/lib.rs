//! Language models on CPU for a verinet node, beside the ONNX runtime.
//!
//! - [`inspect_gguf`] checks a GGUF file and reads [`LlmInfo`]; [`LanguageModel`] loads one:
//!   [`Llama`] (the network, with per-sequence [`KvCache`]s, batched decode steps and
//!   every-position logits for teacher-forced checks) and [`TextCodec`] (its BPE tokenizer and
//!   chat template, from the file's own metadata).
//! - [`Generator`] serves a model with continuous batching on the blocking pool
//!   ([`GenRequest`] in, [`GenEvent`]s out) within [`LlmConfig`].
//! - [`sample`]: the sampler, a pure function of (logits, [`SamplingParams`], step), and the
//!   [`Candidates`] it draws from.
//! - [`check_completion`]: a completion checked with one teacher-forced pass, within a
//!   [`CheckTolerance`] ([`CompletionCheck`]: near ties accepted, the first [`Refutation`]).
//! - [`Bundle`]: the canonical single-blob form of a multi-file model; [`Embedder`] runs a
//!   BERT encoder bundle into unit vectors.
//! - [`LlmHost`]: the models and tokenizers one process holds, loaded once, LRU-bounded.
//! - [`LlmError`]: every way it fails.

mod bundle;
mod check;
mod codec;
mod embed;
mod engine;
mod error;
mod gguf;
mod host;
mod llama;
mod q41;
mod sampler;

pub use bundle::{BUNDLE_MAGIC, Bundle, BundleEntry, ENCODER_FILES, bundle_from_zip};
pub use check::{CheckTolerance, CompletionCheck, Deviation, Refutation, check_completion};
pub use codec::{ChatMessage, TextCodec};
pub use embed::{EmbedInfo, Embedder, EncoderTokenizer};
pub use engine::{Finish, GenEvent, GenRequest, Generated, Generator, LanguageModel, LlmConfig, Piece};
pub use error::{LlmError, Result};
pub use gguf::{LlmInfo, Quantization, inspect_gguf, requantize};
pub use host::{LlmHost, ModelKey};
pub use llama::{KvCache, Llama, LlamaShape};
pub use sampler::{Candidates, SamplingParams, argmax, sample, uniform};
