//! OpenAI-compatible bodies: `POST /v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings` and the list shape of `GET /v1/models`.
//!
//! Requests take what OpenAI's clients send; fields verinet does not act on are accepted and
//! ignored, values it cannot honour (`n > 1`) are refused by the handler. Every answer adds a
//! `verinet` object (receipt, token ids, price) that OpenAI clients ignore.

use serde::{Deserialize, Serialize};

use crate::wire::{ModelListItem, PaymentSummary, ResolvedModel, SignedReceipt};

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessageIn {
    /// `system`, `developer` (read as `system`), `user` or `assistant`.
    pub role: String,
    /// A string, or an array of parts of which only `{"type": "text"}` ones are taken.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: text, or text parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts (`{"type": "text", "text": ...}`; other types are refused).
    Parts(Vec<ContentPart>),
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContentPart {
    /// Part type; only `text` is served.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// What chat and text completions share: sampling, limits, streaming and verinet's extras.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GenerationOptions {
    /// Most tokens to generate (OpenAI's older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Most tokens to generate (the newer name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// 0 (greedy) to 2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass in (0, 1].
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampler seed; the node picks and reports one when absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Strings that end the text (at most 4).
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Completions per request; only 1.
    #[serde(default)]
    pub n: Option<u32>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// verinet: the app this call is made through (its markup applies).
    #[serde(default)]
    pub app: Option<String>,
    /// verinet: how the completion is verified before it is charged: `none` (its receipt
    /// only), `sampled` (a validator checks it with one teacher-forced pass with
    /// probability `sample_rate`) or `quorum` (the token-sequence majority of `quorum_k`
    /// workers; dissenters are checked and, if refuted, slashed).
    #[serde(default)]
    pub verification: crate::wire::VerificationMode,
    /// verinet: the checking probability of `sampled` (request > model policy > node).
    #[serde(default)]
    pub sample_rate: Option<f64>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    /// Model name, `name@version` or `sha256:<hex>`.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessageIn>,
    /// Sampling and limits.
    #[serde(flatten)]
    pub options: GenerationOptions,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompletionRequest {
    /// Model.
    pub model: String,
    /// The prompt (one string; a one-element array is taken too).
    pub prompt: Prompt,
    /// Sampling and limits.
    #[serde(flatten)]
    pub options: GenerationOptions,
}

/// A completion prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    /// One string.
    Text(String),
    /// Strings (only one is served).
    Many(Vec<String>),
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Both.
    pub total_tokens: u32,
}

/// What verinet adds to a completion answer: who computed it, at what terms, with the ids
/// that let anyone recompute the receipt's hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompletionProof {
    /// The request.
    pub request_id: String,
    /// The model as resolved.
    pub model: ResolvedModel,
    /// The prompt as token ids (its `token_ids_hash` is the receipt's `input_hash`).
    pub prompt_ids: Vec<u32>,
    /// Every token generated, the end-of-turn token included (`output_hash`).
    pub output_ids: Vec<u32>,
    /// The seed the sampler used.
    pub seed: u64,
    /// Price charged, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub price: String,
    /// How it was paid, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentSummary>,
    /// The executor's signed receipt.
    pub receipt: SignedReceipt,
    /// How the completion was checked (`sampled`): `unchecked`, `passed`, or `disputed` (a
    /// validator refuted it: the worker was slashed and nothing was charged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::wire::CheckInfo>,
    /// Time to the first token, ms.
    pub first_token_ms: f64,
    /// Whole request, ms.
    pub total_ms: f64,
}

/// The assistant's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessageOut {
    /// `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// One chat choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatChoice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: ChatMessageOut,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Always null (not served).
    pub logprobs: Option<serde_json::Value>,
}

/// `chat.completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<request id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name as asked.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
    /// The model's sha256 (what answered).
    pub system_fingerprint: String,
    /// Receipt and ids.
    pub verinet: CompletionProof,
}

/// A streamed delta.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delta {
    /// `assistant` on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkChoice {
    /// 0.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Set on the last content chunk.
    pub finish_reason: Option<String>,
    /// Always null.
    pub logprobs: Option<serde_json::Value>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionChunk {
    /// Same for every chunk of a stream.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name as asked.
    pub model: String,
    /// Zero (the usage chunk) or one choice.
    pub choices: Vec<ChunkChoice>,
    /// Token counts, on the usage chunk only (null before, as OpenAI sends it).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The model's sha256.
    pub system_fingerprint: String,
    /// Receipt and ids, on the chunk that ends the stream (the finish chunk, or the usage
    /// chunk when asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verinet: Option<CompletionProof>,
}

/// One text completion choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TextChoice {
    /// 0.
    pub index: u32,
    /// The text (a delta when streaming).
    pub text: String,
    /// `stop` or `length` (null mid-stream).
    pub finish_reason: Option<String>,
    /// Always null.
    pub logprobs: Option<serde_json::Value>,
}

/// `text_completion` (also each streamed chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TextCompletion {
    /// `cmpl-<request id>`.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name as asked.
    pub model: String,
    /// One choice (none on a streamed usage chunk).
    pub choices: Vec<TextChoice>,
    /// Token counts (absent mid-stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The model's sha256.
    pub system_fingerprint: String,
    /// Receipt and ids (absent mid-stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verinet: Option<CompletionProof>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingRequest {
    /// Model.
    pub model: String,
    /// One string or several.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Must equal the model's when given.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// verinet: the app.
    #[serde(default)]
    pub app: Option<String>,
    /// verinet: how the vectors are verified before they are charged: `none` (the receipt
    /// only), `sampled` (a validator re-embeds the inputs with probability `sample_rate`) or
    /// `quorum` (`quorum_k` workers embed them, the majority within the cosine tolerance wins).
    #[serde(default)]
    pub verification: crate::wire::VerificationMode,
    /// verinet: the checking probability of `sampled` (request > model policy > node).
    #[serde(default)]
    pub sample_rate: Option<f64>,
}

/// Embedding input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// One vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingData {
    /// `embedding`.
    pub object: String,
    /// Position in the input.
    pub index: u32,
    /// Floats, or base64 of little-endian f32 bytes.
    pub embedding: serde_json::Value,
}

/// Embedding token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingUsage {
    /// Input tokens (special tokens included).
    pub prompt_tokens: u32,
    /// The same.
    pub total_tokens: u32,
}

/// What verinet adds to an embeddings answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingProof {
    /// The request.
    pub request_id: String,
    /// The model as resolved.
    pub model: ResolvedModel,
    /// Price charged, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub price: String,
    /// How it was paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentSummary>,
    /// The executor's receipt: `input_hash` is the `token_lists_hash` of the inputs' ids,
    /// `output_hash` the `tensors_hash` of `{"embeddings": f32 [n, dims]}`.
    pub receipt: SignedReceipt,
    /// How the vectors were checked (absent when the request asked for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::wire::CheckInfo>,
    /// Whole request, ms.
    pub total_ms: f64,
}

/// The embeddings answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingResponse {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<EmbeddingData>,
    /// The model name as asked.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
    /// Receipt.
    pub verinet: EmbeddingProof,
}

/// One entry of `GET /v1/models`: OpenAI's fields, then the hub's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelEntry {
    /// The name to call it by.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds of its newest version.
    pub created: u64,
    /// The owner's address.
    pub owned_by: String,
    /// The hub's record.
    #[serde(flatten)]
    pub hub: ModelListItem,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelPage {
    /// `list`.
    pub object: String,
    /// The models, most used first unless another sort was asked.
    pub data: Vec<ModelEntry>,
}
