//! Bodies of the internal protocol (all signed with [`crate::auth`]).

use std::collections::BTreeSet;

use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize, Serializer};
use verinet_primitives::{ModelId, TensorMap, wire::SignedReceipt};
use verinet_verify::{NodeRole, Presence, Terms};

/// `POST /worker/v1/run`: the worker runs it.
pub const RUN_PATH: &str = "/worker/v1/run";
/// `POST /worker/v1/generate`: the worker streams a completion ([`GenLine`]s, one JSON per line).
pub const GENERATE_PATH: &str = "/worker/v1/generate";
/// `POST /worker/v1/embed`: the worker embeds token ids (answered as a [`RunResponse`]).
pub const EMBED_PATH: &str = "/worker/v1/embed";
/// A validator's teacher-forced check of a completion (gateway-signed job, worker-signed verdict).
pub const CHECK_PATH: &str = "/worker/v1/check";
/// `GET /worker/v1/health`.
pub const HEALTH_PATH: &str = "/worker/v1/health";
/// `POST /v1/nodes/heartbeat` on a gateway: join, then stay live.
pub const HEARTBEAT_PATH: &str = "/v1/nodes/heartbeat";
/// `POST /v1/stake` on a gateway: bond stake from the signer's balance.
pub const STAKE_PATH: &str = "/v1/stake";

/// What a worker or validator says about itself, every heartbeat (the first one registers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Its key's address (must be the signer).
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub address: Address,
    /// Worker or validator.
    pub role: NodeRole,
    /// Base URL the gateway reaches it at, e.g. `http://127.0.0.1:7001`.
    pub endpoint: String,
    /// Runtime backends it runs (`tract`, `onnxruntime`).
    pub backends: Vec<String>,
    /// Jobs it runs at once.
    pub capacity: u32,
    /// Jobs in flight now.
    pub load: u32,
    /// Models whose bytes it holds.
    pub models: BTreeSet<ModelId>,
}

impl Registration {
    /// The presence a gateway records for it, heard from at `now_ms`.
    pub fn presence(&self, now_ms: u64) -> Presence {
        Presence { last_seen_ms: Some(now_ms), capacity: self.capacity, load: self.load, models: self.models.clone() }
    }
}

/// A gateway's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAck {
    /// The gateway's address (it signs the jobs it sends).
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub gateway: Address,
    /// Whether this heartbeat registered the node.
    pub joined: bool,
    /// Stake the gateway sees bonded for it, base units.
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    pub stake: String,
    /// Minimum stake for work, base units.
    pub min_stake: String,
    /// Miss heartbeats for this long and the node gets no work.
    pub timeout_ms: u64,
    /// Whether it gets work now (live, staked, reputable).
    pub active: bool,
}

/// `POST /v1/stake`: bond `amount` of the signer's available balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StakeRequest {
    /// Whose (must be the signer).
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub address: Address,
    /// Base units, decimal string.
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    pub amount: String,
    /// Unique per staker: a replayed request is refused.
    pub nonce: String,
}

/// A job, from a gateway to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The request.
    pub request_id: String,
    /// The model by content.
    pub model: ModelId,
    /// Inputs (sent as `b64` tensors: exact, NaN included; `Tensor` reads `data` or `b64`).
    #[serde(serialize_with = "b64_tensors")]
    pub inputs: TensorMap,
    /// Canonical hash of the inputs (the worker checks it).
    pub input_hash: B256,
    /// Verification mode name.
    pub mode: String,
    /// Price in escrow for this answer, base units.
    pub price: String,
    /// Who pays.
    pub payer: Address,
    /// EIP-712 chain id for the receipt.
    pub chain_id: u64,
}

impl RunRequest {
    /// The terms the worker's receipt must state.
    pub fn terms(&self) -> Result<Terms, String> {
        Ok(Terms {
            request_id: self.request_id.clone(),
            input_hash: self.input_hash,
            mode: self.mode.clone(),
            price: self.price.parse().map_err(|_| format!("price {:?} is not a base-unit amount", self.price))?,
            payer: self.payer,
            chain_id: self.chain_id,
        })
    }
}

/// The receipt terms every job names (the worker computes the input hash itself from what it
/// is asked to run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTerms {
    /// The request.
    pub request_id: String,
    /// Verification mode name.
    pub mode: String,
    /// Price in escrow for this answer, base units.
    pub price: String,
    /// Who pays.
    pub payer: Address,
    /// EIP-712 chain id for the receipt.
    pub chain_id: u64,
}

impl JobTerms {
    /// Of `t` (its input hash is sent implicitly).
    pub fn of(t: &Terms) -> Self {
        Self { request_id: t.request_id.clone(), mode: t.mode.clone(), price: t.price.to_string(), payer: t.payer, chain_id: t.chain_id }
    }

    /// The terms, with the input hash the worker computed.
    pub fn terms(&self, input_hash: B256) -> Result<Terms, String> {
        Ok(Terms {
            request_id: self.request_id.clone(),
            input_hash,
            mode: self.mode.clone(),
            price: self.price.parse().map_err(|_| format!("price {:?} is not a base-unit amount", self.price))?,
            payer: self.payer,
            chain_id: self.chain_id,
        })
    }
}

/// A completion job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The GGUF model by content.
    pub model: ModelId,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens.
    pub max_tokens: u32,
    /// Temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Sampler seed.
    pub seed: u64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Receipt terms.
    pub terms: JobTerms,
}

/// One line of a streamed completion: `{"text": ...}`* then `{"done": ...}` or `{"error": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenLine {
    /// New text and the tokens it completes.
    Text(verinet_llm::Piece),
    /// The end, with the signed receipt.
    Done(Box<verinet_verify::Completed>),
    /// The generation failed.
    Error(verinet_primitives::wire::ErrorDetail),
}

/// An embeddings job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// The encoder bundle by content.
    pub model: ModelId,
    /// Token ids of each input.
    pub ids: Vec<Vec<u32>>,
    /// Receipt terms.
    pub terms: JobTerms,
}

/// `POST /worker/v1/check`: is `output` what the model generates from `prompt` under these
/// terms, ending with `finish`? Answered with a worker-signed [`verinet_verify::Verdict`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The GGUF model by content.
    pub model: ModelId,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// The output ids claimed.
    pub output: Vec<u32>,
    /// Most tokens.
    pub max_tokens: u32,
    /// Temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Sampler seed.
    pub seed: u64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// `stop` or `length`.
    pub finish: String,
}

/// A worker's answer to a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResponse {
    /// Outputs (as `b64` tensors).
    #[serde(serialize_with = "b64_tensors")]
    pub outputs: TensorMap,
    /// Signed by the worker.
    pub receipt: SignedReceipt,
    /// Time spent fetching and compiling the model, ms.
    pub load_ms: f64,
    /// Queue time, ms.
    pub queue_ms: f64,
    /// Compute time, ms.
    pub compute_ms: f64,
}

/// `GET /worker/v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerHealth {
    /// Its address.
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub address: Address,
    /// Worker or validator.
    pub role: NodeRole,
    /// Its runtime backend.
    pub backend: String,
    /// Jobs in flight.
    pub load: u32,
    /// Jobs served since start.
    pub served: u64,
    /// Gateways it takes jobs from.
    #[schema(value_type = Vec<verinet_primitives::schema::AddressSchema>)]
    pub gateways: Vec<Address>,
    /// Models it holds.
    pub models: BTreeSet<ModelId>,
}

fn b64_tensors<S: Serializer>(m: &TensorMap, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, t) in m {
        map.serialize_entry(k, &t.to_b64_json())?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use verinet_primitives::{DType, Tensor};

    #[test]
    fn tensors_cross_the_wire_bit_for_bit() {
        let vals = [f32::NAN, -0.0, 1.0e-38, f32::MAX, 0.1];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::from_raw(DType::Float32, vec![5], data.clone()).unwrap();
        let req = RunRequest {
            request_id: "r".into(),
            model: ModelId::of_bytes(b"m"),
            inputs: [("x".to_owned(), t)].into(),
            input_hash: B256::ZERO,
            mode: "none".into(),
            price: "0".into(),
            payer: Address::ZERO,
            chain_id: 1,
        };
        let back: RunRequest = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back.inputs["x"].raw(), data.as_slice());
    }
}
