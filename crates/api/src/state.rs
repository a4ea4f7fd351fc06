use std::sync::Arc;
use std::time::Duration;

use alloy_signer_local::PrivateKeySigner;
use verinet_hub::Hub;
use verinet_ledger::{FeeSchedule, Ledger};
use verinet_payments::{Facilitator, X402Config};
use verinet_primitives::Address;
use verinet_llm::LlmHost;
use verinet_runtime::Runtime;
use verinet_flywheel::EventLog;
use verinet_verify::{Pool, ReceiptLog, Tolerance};

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest `POST /v1/infer` body in bytes (default 64 MiB).
    pub max_infer_body: usize,
    /// Largest body of the OpenAI routes in bytes (default 8 MiB).
    pub max_openai_body: usize,
    /// Timeout of every request except uploads (default 60 s).
    pub request_timeout: Duration,
    /// Timeout of a model upload (default 30 min: 512 MiB at ~300 KiB/s).
    pub upload_timeout: Duration,
    /// Bytes of inference and OpenAI request bodies read at once, all requests together
    /// (default 128 MiB); past it a request gets 503 `busy` with Retry-After before its body
    /// is read.
    pub max_inflight_body: usize,
    /// Storage backend name shown by `/health`.
    pub storage_name: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_infer_body: 64 << 20,
            max_openai_body: 8 << 20,
            request_timeout: Duration::from_secs(60),
            upload_timeout: Duration::from_secs(30 * 60),
            max_inflight_body: 128 << 20,
            storage_name: "sqlite".into(),
        }
    }
}

/// How this node prices and takes payment.
#[derive(Clone)]
pub struct PaymentsConfig {
    /// x402 terms: chain, token, payee (the gateway's escrow account).
    pub x402: X402Config,
    /// Fees on top of the creator royalty.
    pub fees: FeeSchedule,
    /// Receives the compute fee.
    pub operator: Address,
    /// Receives the protocol fee (and verification fees until validators are paid directly).
    pub protocol: Address,
    /// The gateway's identity on payment records (crash recovery is per gateway).
    pub gateway: Address,
    /// Devnet faucet: the largest amount one call mints; `None` turns the faucet off.
    pub faucet_max: Option<u128>,
    /// Amount a faucet call mints when it names none.
    pub faucet_drip: u128,
    /// What serving one request costs an operator (the flywheel's incentives layer).
    pub operator_cost: u128,
    /// How long a captured payment's answer is kept for retries.
    pub answer_retention: std::time::Duration,
}

/// How requests are checked and cheaters punished.
#[derive(Debug, Clone)]
pub struct VerificationConfig {
    /// `sampled`: default probability of re-execution.
    pub sample_rate: f64,
    /// `quorum`: workers per request.
    pub quorum_k: usize,
    /// Output comparison.
    pub tolerance: Tolerance,
    /// Stake taken from a worker per proven mismatch (all of it if it has less).
    pub slash_amount: u128,
    /// Share of the slash paid to the checker, basis points (the rest to the protocol).
    pub validator_share_bps: u32,
}

/// How this gateway talks to workers in other processes.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Heartbeat period a worker is told to keep, ms.
    pub heartbeat_ms: u64,
    /// Allowed clock difference on signed node messages, ms.
    pub skew_ms: u64,
    /// Workers tried per request before it fails uncharged (a retry goes to another worker).
    pub max_attempts: usize,
    /// HTTP client for jobs (its timeout bounds one job on one worker).
    pub http: reqwest::Client,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { heartbeat_ms: 1_000, skew_ms: 30_000, max_attempts: 3, http: reqwest::Client::new() }
    }
}

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The model hub.
    pub hub: Arc<Hub>,
    /// The inference runtime.
    pub runtime: Arc<Runtime>,
    /// Language models and tokenizers (the gateway tokenizes; in-process executors generate).
    pub llm: Arc<LlmHost>,
    /// The money ledger.
    pub ledger: Ledger,
    /// The x402 facilitator over the ledger.
    pub facilitator: Facilitator,
    /// Pricing and payment terms.
    pub payments: Arc<PaymentsConfig>,
    /// The node key: signs receipts (and is the operator and x402 payee).
    pub node_key: Arc<PrivateKeySigner>,
    /// Receipts: stored off the request path, sealed into Merkle batches, proofs on demand.
    pub receipts: Arc<ReceiptLog>,
    /// Workers and validators.
    pub pool: Arc<Pool>,
    /// Verification policy.
    pub verification: Arc<VerificationConfig>,
    /// Remote workers: heartbeats, job signing, retries.
    pub network: Arc<NetworkConfig>,
    /// Usage events for the flywheel (buffered).
    pub events: Arc<EventLog>,
    /// HTTP limits.
    pub config: Arc<ApiConfig>,
    /// Requests counted for the periodic log summary (and the access log).
    pub traffic: Arc<crate::Traffic>,
}
