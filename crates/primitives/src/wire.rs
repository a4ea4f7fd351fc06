//! JSON bodies of the HTTP API, shared by the server (`verinet-api`) and the client
//! (`verinet-client`) so the two can never drift apart.

use serde::{Deserialize, Serialize};

use alloy_primitives::B256;

use crate::{Address, IoSignature, ModelId, TensorMap};

/// Metadata part of `POST /v1/models` (the other part is the ONNX bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Model name (see [`crate::validate_model_name`]).
    pub name: String,
    /// Semver version.
    #[schema(value_type = crate::schema::VersionSchema)]
    pub version: semver::Version,
    /// Free text, at most 4096 bytes.
    #[serde(default)]
    pub description: String,
    /// Search tags, at most 16, each a valid name.
    #[serde(default)]
    pub tags: Vec<String>,
    /// SPDX license id or short text.
    #[serde(default)]
    pub license: String,
    /// Creator royalty per call in base units (decimal string; 18 decimals).
    #[serde(default = "zero")]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub price: String,
    /// The address the publisher claims to be; must equal the recovered signer.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub owner: Address,
    /// Unix seconds the signature was made.
    pub timestamp: u64,
    /// EIP-191 signature (hex) over [`crate::PublishAuth::message`].
    pub signature: String,
    /// `sha256:<hex>` of the bytes, if the client wants the hub to check it before signing
    /// verification (optional: the hub always hashes what it receives).
    #[serde(default)]
    pub sha256: Option<ModelId>,
    /// Verification policy of this version, a [`ModelPolicy`]:
    /// `{"sample_rate": 0.2, "tolerance_abs": 1e-3, "tolerance_rel": 1e-3}` (each optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<serde_json::Value>,
    /// The kind of model the bytes are (`onnx`, `llm`, `embedding`); detected from the bytes
    /// when absent, and checked against them when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::ModelKind>,
    /// Per-token royalties of a language or embedding model (then `price` must be 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_prices: Option<TokenPrices>,
}

/// A model version's verification policy, overriding the node's defaults: the sampling rate of
/// `sampled` requests that name none, and the float tolerance re-execution compares with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    /// Default re-execution probability in `sampled` mode, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    /// Absolute float tolerance (>= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_abs: Option<f64>,
    /// Relative float tolerance (>= 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_rel: Option<f64>,
}

impl ModelPolicy {
    /// Parses and range-checks a policy.
    pub fn parse(v: &serde_json::Value) -> Result<Self, String> {
        let p: ModelPolicy = serde_json::from_value(v.clone()).map_err(|e| format!("verification policy: {e}"))?;
        if p.sample_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err("verification.sample_rate must be in [0, 1]".into());
        }
        for (name, t) in [("tolerance_abs", p.tolerance_abs), ("tolerance_rel", p.tolerance_rel)] {
            if t.is_some_and(|t| !t.is_finite() || t < 0.0) {
                return Err(format!("verification.{name} must be a finite number >= 0"));
            }
        }
        Ok(p)
    }
}

fn zero() -> String {
    "0".into()
}

/// A language model's creator royalty per token, set at publish, in base units (18 decimals)
/// per 1,000 tokens. An embedding model has only input (prompt) tokens. What a call costs is
/// in [`TokenPrices::royalty`]; the node adds its per-token fees on top.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    /// Per 1,000 prompt (input) tokens; a decimal string on the wire.
    #[serde(with = "decimal")]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub prompt_per_1k: u128,
    /// Per 1,000 completion tokens (zero for embedding models).
    #[serde(default, with = "decimal")]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub completion_per_1k: u128,
}

impl TokenPrices {
    /// The royalty for a call's token counts: `ceil((prompt * prompt_per_1k + completion *
    /// completion_per_1k) / 1000)`, saturating. Rounded once, up, so the charge never depends
    /// on how the tokens are split, and it grows with every token.
    pub fn royalty(&self, prompt: u64, completion: u64) -> u128 {
        per_1k(u128::from(prompt).saturating_mul(self.prompt_per_1k).saturating_add(u128::from(completion).saturating_mul(self.completion_per_1k)))
    }
}

/// `ceil(x / 1000)`, the rounding of every per-1,000-token price.
pub fn per_1k(x: u128) -> u128 {
    x.div_ceil(1000)
}

/// u128 amounts as decimal strings (JSON numbers lose precision past 2^53).
pub mod decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the digits.
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Reads decimal digits only (no sign, no exponent, no fraction).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom(format!("{s:?} is not a decimal amount in base units")));
        }
        s.parse().map_err(D::Error::custom)
    }
}

/// Usage counters of a model or version. Usage, not inventory, is the headline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageInfo {
    /// Successful calls.
    pub calls: u64,
    /// Failed calls (bad input that reached execution, timeouts, errors).
    pub failures: u64,
    /// Last call, unix milliseconds.
    pub last_called_at_ms: Option<i64>,
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelVersionInfo {
    /// Model name.
    pub name: String,
    /// Version.
    #[schema(value_type = crate::schema::VersionSchema)]
    pub version: semver::Version,
    /// Content id of the ONNX bytes.
    pub sha256: ModelId,
    /// Size in bytes.
    pub size: u64,
    /// Owner address.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub owner: Address,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// License.
    pub license: String,
    /// Price breakdown per call.
    pub price: PriceInfo,
    /// Inputs and outputs.
    pub io: IoSignature,
    /// Verification policy set at publish (a [`ModelPolicy`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<serde_json::Value>,
    /// Publish time, unix milliseconds.
    pub published_at_ms: i64,
    /// Usage of this version.
    pub usage: UsageInfo,
}

/// Price of one call in base units (decimal strings, 18 decimals), with verification `none`
/// and no app: `total = royalty + operator_fee + protocol_fee`. Other modes add their
/// verification fee, apps their markup; every 402 quotes the exact total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceInfo {
    /// Creator royalty set at publish.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub royalty: String,
    /// This node's compute fee.
    #[serde(default)]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub operator_fee: String,
    /// Protocol fee (basis points of royalty + compute + verification).
    #[serde(default)]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub protocol_fee: String,
    /// Total the caller pays (per call; for a model priced by the token, what a call costs
    /// beyond its tokens: an app's markup, else 0).
    #[schema(value_type = crate::schema::AmountSchema)]
    pub total: String,
    /// For language and embedding models, priced by the token: what 1,000 tokens cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_1k_tokens: Option<TokenPriceInfo>,
}

/// What 1,000 tokens of a language or embedding model cost in mode `none` without an app:
/// the creator's royalty, the node's fee per token and the protocol's share, rounded up as a
/// call is. Each is a decimal string in base units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenPriceInfo {
    /// Per 1,000 prompt (input) tokens.
    pub prompt: String,
    /// Per 1,000 completion tokens.
    pub completion: String,
    /// The creator's royalties alone, as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub royalty: Option<TokenPrices>,
}

/// `GET /v1/models/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Owner address.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub owner: Address,
    /// The newest version (highest semver).
    pub latest: ModelVersionInfo,
    /// All versions, newest first.
    #[schema(value_type = Vec<crate::schema::VersionSchema>)]
    pub versions: Vec<semver::Version>,
    /// Usage summed over versions.
    pub usage: UsageInfo,
}

/// One row of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelListItem {
    /// Model name.
    pub name: String,
    /// Owner address.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub owner: Address,
    /// Newest version.
    #[schema(value_type = crate::schema::VersionSchema)]
    pub latest_version: semver::Version,
    /// Its content id.
    pub sha256: ModelId,
    /// What it is: `onnx` (called on `/v1/infer`), `llm` (chat and text completions) or
    /// `embedding` (`/v1/embeddings`).
    #[serde(default)]
    pub kind: crate::ModelKind,
    /// When its newest version was published, unix ms.
    #[serde(default)]
    pub published_at_ms: i64,
    /// Its description.
    pub description: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its price per call (total, base units).
    #[schema(value_type = crate::schema::AmountSchema)]
    pub price: String,
    /// For a language or embedding model: its price per 1,000 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_1k_tokens: Option<TokenPriceInfo>,
    /// Number of versions.
    pub versions: u32,
    /// Usage summed over versions.
    pub usage: UsageInfo,
}

/// `GET /v1/models` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Matching models, most used first unless another sort was asked.
    pub models: Vec<ModelListItem>,
}

/// Verification mode of a request (only `none` runs until the verification issue lands).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMode {
    /// Signed receipt only.
    #[default]
    None,
    /// Re-executed by a validator with some probability.
    Sampled,
    /// Executed by k workers, majority answer returned.
    Quorum,
}

impl VerificationMode {
    /// The wire name (`none`, `sampled`, `quorum`), as serde writes it and receipts state it.
    pub const fn as_str(self) -> &'static str {
        match self {
            VerificationMode::None => "none",
            VerificationMode::Sampled => "sampled",
            VerificationMode::Quorum => "quorum",
        }
    }
}

/// How output tensors are encoded in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputEncoding {
    /// `"data": [...]` numbers.
    #[default]
    Data,
    /// `"b64": "..."` little-endian bytes.
    B64,
}

/// `POST /v1/infer` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// `name`, `name@version` or `sha256:<hex>`.
    pub model: String,
    /// Named input tensors.
    #[schema(value_type = std::collections::BTreeMap<String, crate::Tensor>)]
    pub inputs: TensorMap,
    /// Application id tagging the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Verification mode.
    #[serde(default)]
    pub verification: VerificationMode,
    /// `sampled`: the probability that a validator re-executes this request (default: the
    /// node's `[verification] sample_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    /// Output encoding.
    #[serde(default)]
    pub output_encoding: OutputEncoding,
}

impl InferRequest {
    /// A request for `model` on `inputs` with every option at its default (no app, mode `none`,
    /// the node's sampling rate, outputs as `data`).
    pub fn new(model: impl Into<String>, inputs: TensorMap) -> Self {
        Self {
            model: model.into(),
            inputs,
            app: None,
            verification: VerificationMode::default(),
            sample_rate: None,
            output_encoding: OutputEncoding::default(),
        }
    }
}

/// The model a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolvedModel {
    /// Name.
    pub name: String,
    /// Version.
    #[schema(value_type = crate::schema::VersionSchema)]
    pub version: semver::Version,
    /// Content id.
    pub sha256: ModelId,
}

/// Where the time of a request went, in milliseconds (fractional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimingsMs {
    /// Fetching bytes and compiling the plan (0 when cached).
    pub load: f64,
    /// Waiting for an execution slot.
    pub queue: f64,
    /// Running the model.
    pub compute: f64,
    /// Whole request inside the node, from receipt of the body to the response.
    pub total: f64,
}

/// `POST /v1/infer` response.
///
/// `O` is how the outputs are held: a client reads them as JSON values (the default); a node
/// writes them straight from its tensors ([`TensorOutputs`]), in the same JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(bound = "")]
pub struct InferResponse<O = serde_json::Map<String, serde_json::Value>> {
    /// Request id (time-ordered hex).
    pub request_id: String,
    /// Resolved model.
    pub model: ResolvedModel,
    /// Output tensors by name (as JSON: `data` or `b64` form).
    #[schema(value_type = std::collections::BTreeMap<String, crate::Tensor>)]
    pub outputs: O,
    /// Price charged, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub price: String,
    /// Verification mode applied.
    pub verification: VerificationMode,
    /// How the call was paid (absent when free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentSummary>,
    /// The node's signed receipt for this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<SignedReceipt>,
    /// How the result was checked (`sampled`, `quorum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckInfo>,
    /// Timings.
    pub timings_ms: TimingsMs,
}

/// How a result was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckInfo {
    /// `unchecked` (not sampled), `passed` (a validator agreed), `disputed` (a validator refuted
    /// the worker: this is the validator's result, the worker was slashed and the payer
    /// refunded), or `quorum` (a majority agreed; dissenters were slashed).
    pub status: String,
    /// Who agreed with the returned result.
    #[schema(value_type = Vec<crate::schema::AddressSchema>)]
    pub checked_by: Vec<Address>,
    /// Who was refuted and slashed.
    #[schema(value_type = Vec<crate::schema::AddressSchema>)]
    pub disputed: Vec<Address>,
}

/// How a request was paid and settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentSummary {
    /// `x402` or `session`.
    pub method: String,
    /// Who paid.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub payer: Address,
    /// Amount, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub amount: String,
    /// The escrow transaction.
    pub escrow_tx: String,
    /// The capture transaction (the fee split): the `settle_tx` of
    /// `GET /v1/payments/{request_id}` (`capture_tx` before 0.1; still read).
    #[serde(alias = "capture_tx")]
    pub settle_tx: String,
}

/// `GET /v1/payments/{request_id}`: one paid request and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentInfo {
    /// Request id.
    pub request_id: String,
    /// `escrowed`, `captured` or `refunded`.
    pub status: String,
    /// Who paid.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub payer: Address,
    /// Amount, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub amount: String,
    /// Model id.
    pub model: String,
    /// App id.
    pub app: Option<String>,
    /// `x402` or `session`.
    pub method: String,
    /// Canonical input hash.
    pub input_hash: String,
    /// Canonical output hash, once captured.
    pub output_hash: Option<String>,
    /// Why it was refunded.
    pub reason: Option<String>,
    /// Escrow transaction.
    pub escrow_tx: String,
    /// Capture or refund transaction.
    pub settle_tx: Option<String>,
    /// The price breakdown and payees, as quoted.
    pub quote: serde_json::Value,
}

/// `GET /v1/accounts/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountInfo {
    /// The account.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub address: Address,
    /// Spendable, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub balance: String,
    /// Held for requests in flight.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub escrow: String,
    /// Bonded.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub stake: String,
    /// Earned so far by role (`creator`, `operator`, `validator`, `protocol`, `app`, `payee`).
    #[schema(value_type = std::collections::BTreeMap<String, crate::schema::AmountSchema>)]
    pub earnings: std::collections::BTreeMap<String, String>,
    /// Paid for calls so far (captured payments; refunds are not spent).
    #[serde(default = "zero")]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub spent: String,
}

/// `POST /v1/faucet` (devnet only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaucetRequest {
    /// Who receives.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub address: Address,
    /// How much, base units; default the node's faucet drip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::AmountSchema>)]
    pub amount: Option<String>,
}

/// `POST /v1/faucet` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaucetResponse {
    /// The mint transaction.
    pub transaction: String,
    /// Amount minted.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub amount: String,
    /// The account afterwards.
    pub account: AccountInfo,
}

/// `POST /v1/apps`: an owner registers an app (EIP-191 signature over
/// [`AppRegistration::message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    /// Display name (1-64 of `a-z 0-9 - _ .`).
    pub name: String,
    /// Owner, who earns the markup.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub owner: Address,
    /// Markup per call, base units.
    #[serde(default = "zero")]
    #[schema(value_type = crate::schema::AmountSchema)]
    pub markup: String,
    /// Unix seconds of the signature.
    pub timestamp: u64,
    /// EIP-191 signature, hex.
    pub signature: String,
}

impl AppRegistration {
    /// The signed text.
    pub fn message(&self) -> String {
        format!(
            "verinet app register\nname: {}\nowner: {:#x}\nmarkup: {}\ntimestamp: {}",
            self.name, self.owner, self.markup, self.timestamp
        )
    }

    /// The app id: `app-` + the first 16 hex of keccak256(owner ++ name). Stable, so one
    /// owner cannot register one name twice, and two owners may each have a "chat".
    pub fn app_id(&self) -> String {
        let mut b = self.owner.to_vec();
        b.extend_from_slice(self.name.as_bytes());
        format!("app-{}", &hex::encode(alloy_primitives::keccak256(&b))[..16])
    }
}

/// `POST /v1/transfers`: the sender's EIP-191 signature over [`TransferRequest::message`] moves
/// part of its available balance to another account. The nonce is claimed with the transfer,
/// so the same signed request is applied once (a replay is `409 nonce_used`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Who pays (and signs).
    #[schema(value_type = crate::schema::AddressSchema)]
    pub from: Address,
    /// Who receives.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub to: Address,
    /// How much, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub amount: String,
    /// 1-128 characters, unique per sender.
    pub nonce: String,
    /// Unix seconds of the signature.
    pub timestamp: u64,
    /// EIP-191 signature, hex.
    pub signature: String,
}

impl TransferRequest {
    /// The signed text.
    pub fn message(&self) -> String {
        format!(
            "verinet transfer\nfrom: {:#x}\nto: {:#x}\namount: {}\nnonce: {}\ntimestamp: {}",
            self.from, self.to, self.amount, self.nonce, self.timestamp
        )
    }
}

/// A transfer applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferInfo {
    /// The ledger transaction.
    pub tx: String,
    /// Who paid.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub from: Address,
    /// Who received.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub to: Address,
    /// Base units moved.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub amount: String,
    /// The sender's account after it.
    pub account: AccountInfo,
}

/// `GET /v1/apps?owner=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppList {
    /// Newest first.
    pub apps: Vec<AppInfo>,
}

/// A registered app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppInfo {
    /// Id requests carry in `app`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub owner: Address,
    /// Markup per call, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub markup: String,
    /// Registered, unix ms.
    pub created_at_ms: i64,
}

/// `POST /v1/sessions` answer: the bearer token is shown once, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// `Authorization: Bearer <token>` pays from the budget.
    pub token: String,
    /// Who pays.
    #[schema(value_type = crate::schema::AddressSchema)]
    pub payer: Address,
    /// Cap, base units.
    #[schema(value_type = crate::schema::AmountSchema)]
    pub max_total: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// Allowed models (empty: any).
    pub models: Vec<String>,
}

/// Output tensors written as an answer's `outputs` object, each in `encoding`, straight from the
/// tensors: no JSON value per element, and float32 in its shortest round-trip form.
#[derive(Debug, Clone, Copy)]
pub struct TensorOutputs<'a> {
    /// The tensors by name.
    pub tensors: &'a TensorMap,
    /// `data` or `b64`.
    pub encoding: OutputEncoding,
}

impl Serialize for TensorOutputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.tensors.len()))?;
        for (name, t) in self.tensors {
            match self.encoding {
                OutputEncoding::Data => m.serialize_entry(name, t)?,
                OutputEncoding::B64 => m.serialize_entry(name, &t.to_b64_json())?,
            }
        }
        m.end()
    }
}

impl InferResponse {
    /// Decodes the outputs into tensors.
    pub fn tensors(&self) -> Result<TensorMap, serde_json::Error> {
        self.outputs
            .iter()
            .map(|(k, v)| Ok((k.clone(), serde_json::from_value(v.clone())?)))
            .collect()
    }
}

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Machine-readable code plus a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// snake_case code, stable.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's error class: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when answering.
    pub status: String,
    /// Node software version.
    pub version: String,
    /// Inference backend name.
    pub backend: String,
    /// Storage backend name.
    pub storage: String,
    /// The token prices and balances are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenInfo>,
}

/// The token this node's ledger counts in: amounts on the API are base units (decimal
/// strings); a person reads `amount / 10^decimals` `symbol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Symbol shown with amounts, e.g. `vUSD`.
    pub symbol: String,
    /// Decimals: one token is `10^decimals` base units (18).
    pub decimals: u32,
    /// EIP-712 domain name (what x402 authorizations are signed in).
    pub name: String,
    /// The token's address (x402 `asset`, EIP-712 `verifyingContract`).
    #[schema(value_type = crate::schema::AddressSchema)]
    pub address: Address,
    /// EIP-155 chain id (x402 network `eip155:<id>`).
    pub chain_id: u64,
}

impl TokenInfo {
    /// `amount` base units as `1.5 vUSD`.
    pub fn format(&self, base_units: u128) -> String {
        format!("{} {}", crate::format_amount(base_units, self.decimals), self.symbol)
    }
}

/// What a receipt states, in JSON (hex strings for hashes, decimal string for the price).
///
/// Signed as EIP-712 typed data `Receipt(string requestId,bytes32 modelHash,bytes32 inputHash,
/// bytes32 outputHash,address node,string mode,uint256 price,address payer,uint64 timestamp)` in
/// the domain `{name: "verinet", version: "1", chainId}`; see docs/receipts.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// The request.
    pub request_id: String,
    /// sha256 of the model's ONNX bytes (the hex of its `sha256:` id), `0x` hex.
    #[schema(value_type = crate::schema::Bytes32Schema)]
    pub model_hash: B256,
    /// Canonical keccak256 of the inputs.
    #[schema(value_type = crate::schema::Bytes32Schema)]
    pub input_hash: B256,
    /// Canonical keccak256 of the outputs returned.
    #[schema(value_type = crate::schema::Bytes32Schema)]
    pub output_hash: B256,
    /// The node that computed it (the signer).
    #[schema(value_type = crate::schema::AddressSchema)]
    pub node: Address,
    /// Verification mode: `none`, `sampled` or `quorum`.
    pub mode: String,
    /// Price paid, base units (decimal string).
    #[schema(value_type = crate::schema::AmountSchema)]
    pub price: String,
    /// Who paid (the zero address for a free call).
    #[schema(value_type = crate::schema::AddressSchema)]
    pub payer: Address,
    /// Unix milliseconds.
    pub timestamp: u64,
    /// For a completion (LLM) call: what was generated and how. The receipt is then signed as
    /// the EIP-712 type `CompletionReceipt` (docs/receipts.md), `input_hash` is the
    /// [`token_ids_hash`](crate::token_ids_hash) of the prompt ids and `output_hash` that of
    /// the output ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<CompletionTerms>,
}

/// The terms of a completion that its receipt binds besides the hashes.
///
/// Floats are decimal strings exactly as the sampler read them (Rust's shortest round-trip
/// form of the `f32`), so the signed text is what a verifier hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionTerms {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens generated (the final end-of-turn token included).
    pub completion_tokens: u32,
    /// Sampling temperature (`"0"`: greedy).
    pub temperature: String,
    /// Nucleus mass.
    pub top_p: String,
    /// Sampler seed (chosen by the node when the request gave none).
    pub seed: u64,
    /// Most tokens asked for.
    pub max_tokens: u32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// A receipt with its signature and the chain id of its EIP-712 domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// What is stated.
    pub receipt: ReceiptBody,
    /// EIP-712 domain chain id.
    pub chain_id: u64,
    /// The EIP-712 signing hash (what batches commit to), `0x` hex.
    #[schema(value_type = crate::schema::Bytes32Schema)]
    pub digest: B256,
    /// 65-byte signature by `receipt.node`, `0x` hex.
    pub signature: String,
}

