use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tracing::{info, warn};
use verinet_api::{ApiConfig, AppState, NetworkConfig, PaymentsConfig, VerificationConfig};
use verinet_ledger::{FeeSchedule, Ledger};
use verinet_payments::{Facilitator, X402Config, devnet_asset};
use verinet_flywheel::{Event, EventLog, Retention};
use alloy_signer_local::PrivateKeySigner;
use verinet_verify::{BatchConfig, Execute, Executor, LocalExecutor, NodeRole, Pool, Presence, ReceiptLog, Tolerance};
use verinet_hub::{Hub, HubConfig};
use verinet_llm::LlmHost;
use verinet_runtime::{InferenceBackend, OrtBackend, Runtime, RuntimeConfig, TractBackend, find_onnxruntime};
use verinet_store::{ObjectBlobStore, SqlStore};

use crate::{Config, KeyFile, NodeError, PaymentsSection, Result, Role, bundled};

/// A node built from its configuration: state and router, not yet serving.
pub struct Node {
    state: AppState,
    key: KeyFile,
    limits: crate::ConnLimits,
    /// `[server] log_summary_secs`.
    log_summary_secs: u64,
    /// Held while the node exists (until `serve` returns).
    _lock: crate::DataDirLock,
}

/// Wiring a config cannot express: a backend per local worker (a cheating worker in tests and
/// simulations, another runtime for diversity).
#[derive(Default, Clone)]
pub struct Overrides {
    /// `(worker index, backend)`: that local worker runs on its own runtime with this backend.
    pub worker_backends: Vec<(usize, Arc<dyn InferenceBackend>)>,
    /// `(worker index, wrap)`: that local worker's executor is `wrap(honest executor, its key)`
    /// (tests: a worker that cheats on completions).
    pub worker_wraps: Vec<(usize, WrapExecutor)>,
}

/// Turns a local worker's honest executor into another (see [`Overrides::worker_wraps`]).
pub type WrapExecutor = Arc<dyn Fn(Arc<dyn Execute>, Arc<PrivateKeySigner>) -> Arc<dyn Execute> + Send + Sync>;

impl Node {
    /// Opens storage, creates the runtime and hub, and publishes bundled models if asked.
    pub async fn build(config: &Config) -> Result<Self> {
        Self::build_with(config, Overrides::default()).await
    }

    /// [`Node::build`] with [`Overrides`].
    pub async fn build_with(config: &Config, overrides: Overrides) -> Result<Self> {
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)?;
        let lock = crate::DataDirLock::acquire(data_dir)?;
        #[allow(clippy::needless_update, reason = "the store's test-utils builds have one more (test) option")]
        let options = verinet_store::StoreOptions {
            close_delay: Duration::from_millis(config.payments.capture_flush_ms),
            ..Default::default()
        };
        let store = SqlStore::connect_with(&config.database_url(), &options).await?;
        let storage_name = store.backend().to_owned();
        let blobs = ObjectBlobStore::local(&config.blobs_dir())?;

        let (runtime, runtime_config) = runtime(config)?;

        let mut hub_config = HubConfig::new(data_dir.join("staging"));
        hub_config.max_model_bytes = config.hub.max_model_mib << 20;
        hub_config.max_clock_skew = Duration::from_secs(config.hub.max_clock_skew_secs);
        let store = Arc::new(store);
        let hub = Arc::new(Hub::new(store.clone(), Arc::new(blobs), runtime.clone(), hub_config));

        let key = KeyFile::load_or_create(&data_dir.join("node.key"))?;
        let ledger = Ledger::new(store.clone());
        let mut payments = payments_config(&config.payments, key.address())?;
        payments.operator_cost = PaymentsSection::amount(&config.flywheel.operator_cost_per_request, "flywheel.operator_cost_per_request")?;
        // Escrows this gateway opened in an earlier run never got a result to their payer.
        ledger.recover(key.address(), verinet_primitives::unix_ms()).await?;
        let facilitator = Facilitator::new(payments.x402.clone(), ledger.clone());
        let node_key = Arc::new(key.signer().clone());
        let batches = BatchConfig {
            max_receipts: config.receipts.batch_max.max(1),
            interval: Duration::from_millis(config.receipts.batch_interval_ms.max(1)),
            retention: config.receipts.prune.then(|| Duration::from_secs(config.receipts.retention_secs)),
        };
        let receipts = Arc::new(ReceiptLog::new(store.clone(), node_key.clone(), payments.x402.chain_id, batches));
        if config.bundled.publish {
            bundled::publish_missing(&hub, &key).await?;
            bundled::publish_local(&hub, &key, &config.bundled.language_models_dir).await?;
        }
        let llm = Arc::new(config.llm.host());
        let (pool, verification) =
            executors(config, &overrides, &key, &runtime, &llm, runtime_config, &ledger, config.payments.devnet).await?;
        let events = Arc::new(if config.flywheel.events {
            let fw = &config.flywheel;
            let mut log = EventLog::new(store.clone(), Duration::from_millis(fw.event_flush_ms.max(1)));
            log.retention = Retention {
                seconds: Duration::from_secs(fw.seconds_retention_secs),
                minutes: Duration::from_secs(fw.minutes_retention_days.max(1) * 86_400),
                events: Duration::from_secs(fw.events_retention_days.max(1) * 86_400),
            };
            log
        } else {
            EventLog::disabled(store.clone())
        });
        for e in &pool.all() {
            events.emit(Event::NodeJoin { node: e.address(), role: format!("{:?}", e.role).to_lowercase() });
        }
        let net = &config.network;
        let network = NetworkConfig {
            heartbeat_ms: net.heartbeat_ms,
            skew_ms: net.skew_ms,
            max_attempts: net.max_attempts.max(1),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(net.job_timeout_secs.max(1)))
                .build()
                .map_err(|e| NodeError::Config(format!("http client: {e}")))?,
        };
        let api = ApiConfig {
            max_infer_body: config.server.max_infer_body_mib << 20,
            max_openai_body: ApiConfig::default().max_openai_body,
            request_timeout: Duration::from_secs(config.server.request_timeout_secs),
            upload_timeout: Duration::from_secs(config.server.upload_timeout_secs),
            max_inflight_body: config.server.max_inflight_body_mib << 20,
            storage_name,
        };
        Ok(Self {
            state: AppState {
                hub,
                runtime,
                llm,
                ledger,
                facilitator,
                payments: Arc::new(payments),
                node_key,
                receipts,
                pool,
                verification,
                network: Arc::new(network),
                events,
                config: Arc::new(api),
                traffic: Arc::new(verinet_api::Traffic::new(config.server.access_log)),
            },
            key,
            limits: config.server.conn_limits(),
            log_summary_secs: config.server.log_summary_secs,
            _lock: lock,
        })
    }

    /// Handler state (for in-process tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The node key's address.
    pub fn address(&self) -> alloy_primitives::Address {
        self.key.address()
    }

    /// The HTTP router.
    pub fn router(&self) -> Router {
        verinet_api::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = listener.local_addr()?;
        info!(%addr, node = %self.key.address(), "serving");
        let (stop_sealing, sealing_stopped) = oneshot::channel::<()>();
        let sealer = tokio::spawn(self.state.receipts.clone().run(async move {
            let _ = sealing_stopped.await;
        }));
        let summaries = (self.log_summary_secs > 0).then(|| {
            let every = std::time::Duration::from_secs(self.log_summary_secs);
            tokio::spawn(self.state.traffic.clone().run(every, std::future::pending()))
        });
        let (stop_events, events_stopped) = oneshot::channel::<()>();
        let event_writer = tokio::spawn(self.state.events.clone().run(async move {
            let _ = events_stopped.await;
        }));
        // Answers kept with captures expire after the retention window (checked each minute).
        let expiry = {
            let (store, keep) = (self.state.ledger.store().clone(), self.state.payments.answer_retention);
            tokio::spawn(async move {
                loop {
                    let before = verinet_primitives::unix_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
                    match store.forget_answers(before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(cleared = n, "kept answers past their retention window cleared"),
                        Err(e) => tracing::warn!(error = %e, "clearing kept answers failed; retrying in a minute"),
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
            })
        };
        crate::serve(listener, self.router(), self.limits, shutdown).await?;
        expiry.abort();
        if let Some(s) = summaries {
            s.abort();
        }
        self.state.hub.flush_usage().await;
        // Seal what the last requests left before going down.
        let _ = stop_sealing.send(());
        if let Err(e) = sealer.await {
            tracing::warn!(error = %e, "receipt sealer ended badly");
        }
        let _ = stop_events.send(());
        if let Err(e) = event_writer.await {
            tracing::warn!(error = %e, "usage event writer ended badly");
        }
        // Captures answered and still in memory are written before the process goes.
        if let Err(e) = self.state.ledger.store().flush().await {
            tracing::error!(error = %e, "writing the answered captures at stop failed");
        }
        info!("stopped");
        Ok(())
    }

    /// Binds `config.server.listen` and serves in the background (tests, benches, devnets).
    pub async fn spawn(config: &Config) -> Result<RunningNode> {
        Self::spawn_with(config, Overrides::default()).await
    }

    /// [`Node::spawn`] with [`Overrides`].
    pub async fn spawn_with(config: &Config, overrides: Overrides) -> Result<RunningNode> {
        let node = Node::build_with(config, overrides).await?;
        RunningNode::start(config, |listener, stop| node.serve(listener, stop)).await
    }
}


/// The protocol treasury when none is configured.
pub fn default_protocol_address() -> alloy_primitives::Address {
    alloy_primitives::Address::from_slice(&alloy_primitives::keccak256(b"verinet protocol treasury")[12..])
}

fn payments_config(p: &PaymentsSection, node: alloy_primitives::Address) -> Result<PaymentsConfig> {
    let amount = PaymentsSection::amount;
    if p.protocol_fee_bps > 10_000 {
        return Err(NodeError::Config(format!("payments.protocol_fee_bps {} is over 10000 (100%)", p.protocol_fee_bps)));
    }
    Ok(PaymentsConfig {
        x402: X402Config {
            chain_id: p.chain_id,
            asset: PaymentsSection::address(&p.token_address, "token_address")?.unwrap_or_else(devnet_asset),
            token_name: p.token_name.clone(),
            token_symbol: p.token_symbol.clone(),
            token_version: p.token_version.clone(),
            pay_to: node,
            max_timeout_secs: p.max_timeout_secs,
            clock_skew_secs: 30,
        },
        fees: FeeSchedule {
            operator_fee: amount(&p.operator_fee, "operator_fee")?,
            sampled_fee: amount(&p.sampled_fee, "sampled_fee")?,
            quorum_fee: amount(&p.quorum_fee, "quorum_fee")?,
            operator_fee_per_1k_tokens: amount(&p.operator_fee_per_1k_tokens, "operator_fee_per_1k_tokens")?,
            sampled_fee_per_1k_tokens: amount(&p.sampled_fee_per_1k_tokens, "sampled_fee_per_1k_tokens")?,
            quorum_fee_per_1k_tokens: amount(&p.quorum_fee_per_1k_tokens, "quorum_fee_per_1k_tokens")?,
            protocol_fee_bps: p.protocol_fee_bps,
        },
        operator: node,
        protocol: PaymentsSection::address(&p.protocol_address, "protocol_address")?
            .unwrap_or_else(default_protocol_address),
        gateway: node,
        faucet_max: if p.devnet { Some(amount(&p.faucet_max, "faucet_max")?) } else { None },
        faucet_drip: amount(&p.faucet_drip, "faucet_drip")?,
        operator_cost: 0,
        answer_retention: std::time::Duration::from_secs(p.answer_retention_secs),
    })
}

/// The local workers (worker 0 is the node key) and validators, each with a key under
/// `data_dir/keys/`, staked from the faucet on a devnet.
#[allow(clippy::too_many_arguments)]
async fn executors(
    config: &Config,
    overrides: &Overrides,
    key: &KeyFile,
    runtime: &Arc<Runtime>,
    llm: &Arc<LlmHost>,
    runtime_config: RuntimeConfig,
    ledger: &Ledger,
    devnet: bool,
) -> Result<(Arc<Pool>, Arc<VerificationConfig>)> {
    let v = &config.verification;
    let min_stake = PaymentsSection::amount(&v.min_stake, "verification.min_stake")?;
    let keys = config.storage.data_dir.join("keys");
    // A gateway-only node routes to remote executors alone.
    let (n_workers, n_validators) =
        if config.network.role == Role::Gateway { (0, 0) } else { (v.workers.max(1), v.validators) };
    let mut workers = Vec::new();
    for i in 0..n_workers {
        let k = if i == 0 { key.clone() } else { KeyFile::load_or_create(&keys.join(format!("worker-{i}.key")))? };
        let rt = match overrides.worker_backends.iter().find(|(w, _)| *w == i) {
            Some((_, b)) => Arc::new(Runtime::new(b.clone(), runtime_config.clone())),
            None => runtime.clone(),
        };
        let signer = Arc::new(k.signer().clone());
        let executor = match overrides.worker_wraps.iter().find(|(w, _)| *w == i) {
            Some((_, wrap)) => {
                let honest: Arc<dyn Execute> = Arc::new(LocalExecutor::new(signer.clone(), rt, llm.clone()));
                Executor::with_backend(signer.address(), NodeRole::Worker, wrap(honest, signer), Presence::default())
            }
            None => Executor::new(signer, rt, llm.clone(), NodeRole::Worker),
        };
        workers.push(Arc::new(executor));
    }
    let validator_runtime = if v.validator_backend.is_empty() || v.validator_backend == config.runtime.backend {
        runtime.clone()
    } else {
        Arc::new(Runtime::new(backend(config, &v.validator_backend)?, runtime_config))
    };
    let mut validators = Vec::new();
    for i in 0..n_validators {
        let k = KeyFile::load_or_create(&keys.join(format!("validator-{i}.key")))?;
        validators.push(Arc::new(Executor::new(Arc::new(k.signer().clone()), validator_runtime.clone(), llm.clone(), NodeRole::Validator)));
    }
    // A devnet bonds its own executors from the faucet; elsewhere operators stake (and an
    // executor below `min_stake` gets no work).
    let devnet_stake = PaymentsSection::amount(&v.devnet_stake, "verification.devnet_stake")?.max(min_stake);
    for e in workers.iter().chain(&validators) {
        let mut stake = ledger.store().balances(e.address()).await.map_err(verinet_ledger::LedgerError::from)?.stake;
        if devnet && stake < devnet_stake {
            ledger.mint(e.address(), devnet_stake - stake).await?;
            ledger.stake(e.address(), devnet_stake - stake).await?;
            stake = devnet_stake;
        }
        e.set_stake(stake);
    }
    let pool = Pool::new(workers, validators, v.min_reputation, min_stake, v.seed)
        .with_heartbeat_timeout(config.network.heartbeat_timeout_ms)
        .with_strikes(config.network.max_strikes, config.network.strike_bench_secs.saturating_mul(1000));
    let verification = VerificationConfig {
        sample_rate: v.sample_rate,
        quorum_k: v.quorum_k.max(1),
        tolerance: Tolerance { abs: v.tolerance_abs, rel: v.tolerance_rel },
        slash_amount: PaymentsSection::amount(&v.slash_amount, "verification.slash_amount")?,
        validator_share_bps: v.validator_share_bps.min(10_000),
    };
    Ok((Arc::new(pool), Arc::new(verification)))
}

/// The runtime the config asks for, and its limits.
pub(crate) fn runtime(config: &Config) -> Result<(Arc<Runtime>, RuntimeConfig)> {
    let rt = &config.runtime;
    let runtime_config = RuntimeConfig {
        max_concurrency: if rt.max_concurrency == 0 { RuntimeConfig::default().max_concurrency } else { rt.max_concurrency },
        max_queue: rt.max_queue,
        timeout: Duration::from_secs(rt.timeout_secs),
        cache_bytes: rt.cache_mib << 20,
        max_input_elements: rt.max_input_elements,
        max_plan_expansion: rt.max_plan_expansion.max(1),
        plan_slack_bytes: rt.plan_slack_mib << 20,
        inline_below: Duration::from_micros(rt.inline_below_us),
    };
    Ok((Arc::new(Runtime::new(backend(config, &config.runtime.backend)?, runtime_config.clone())), runtime_config))
}

fn backend(config: &Config, name: &str) -> Result<Arc<dyn InferenceBackend>> {
    let configured = config.runtime.onnxruntime_library.as_deref();
    match name {
        "tract" => Ok(Arc::new(TractBackend::new())),
        "onnxruntime" => {
            let (path, _) = find_onnxruntime(configured).ok_or_else(|| {
                NodeError::Config(
                    "backend \"onnxruntime\": libonnxruntime.so not found; set [runtime] onnxruntime_library or \
                     ORT_DYLIB_PATH, or `pip install onnxruntime`"
                        .into(),
                )
            })?;
            Ok(Arc::new(OrtBackend::new(Some(&path))?))
        }
        "auto" => match find_onnxruntime(configured) {
            Some((path, from)) => match OrtBackend::new(Some(&path)) {
                Ok(ort) => {
                    info!(library = %path.display(), found_by = from, "runtime backend: onnxruntime");
                    Ok(Arc::new(ort))
                }
                Err(e) => {
                    warn!(library = %path.display(), found_by = from, error = %e, "onnxruntime did not load; runtime backend: tract");
                    Ok(Arc::new(TractBackend::new()))
                }
            },
            None => {
                info!("runtime backend: tract (no libonnxruntime.so: set ORT_DYLIB_PATH or `pip install onnxruntime` for the faster engine)");
                Ok(Arc::new(TractBackend::new()))
            }
        },
        other => Err(NodeError::Config(format!("unknown backend {other:?}: use auto, tract or onnxruntime"))),
    }
}

/// A node serving in the background.
pub struct RunningNode {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl RunningNode {
    /// Binds `config.server.listen` and runs `serve(listener, shutdown)` in the background.
    pub(crate) async fn start<F, Fut>(config: &Config, serve: F) -> Result<Self>
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Box::pin(async move {
                let _ = rx.await;
            }),
        ));
        Ok(Self { addr, shutdown: Some(tx), task })
    }

    /// Base URL, e.g. `http://127.0.0.1:38211`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop; waits for in-flight requests.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Io(std::io::Error::other(e))),
        }
    }
}
