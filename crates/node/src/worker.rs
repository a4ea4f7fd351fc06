//! A worker or validator process (`network.role = "worker" | "validator"`): no database, no
//! hub; a key, a runtime, a model-bytes cache, and the gateways it joins.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::{net::TcpListener, sync::oneshot};
use tracing::info;
use verinet_network::{JoinConfig, Worker, WorkerConfig, join};
use verinet_verify::NodeRole;

use crate::{Config, KeyFile, NodeError, PaymentsSection, Result, Role, RunningNode, node::runtime};

/// A worker or validator, built from its configuration, not yet serving.
pub struct WorkerNode {
    worker: Arc<Worker>,
    config: Config,
    /// Held while the node exists (until `serve` returns).
    _lock: crate::DataDirLock,
}

impl WorkerNode {
    /// Loads (or creates) the key in the data dir and the runtime; `network.role` must be
    /// `worker` or `validator` and `network.gateways` must name at least one gateway.
    pub fn build(config: &Config) -> Result<Self> {
        let role = match config.network.role {
            Role::Worker => NodeRole::Worker,
            Role::Validator => NodeRole::Validator,
            other => return Err(NodeError::Config(format!("a worker node needs role worker or validator, not {other:?}"))),
        };
        if config.network.gateways.is_empty() {
            return Err(NodeError::Config("a worker or validator needs at least one gateway to join (--gateway URL)".into()));
        }
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)?;
        let lock = crate::DataDirLock::acquire(data_dir)?;
        let key = KeyFile::load_or_create(&data_dir.join("node.key"))?;
        let (runtime, runtime_config) = runtime(config)?;
        let capacity = match config.network.capacity {
            0 => u32::try_from(runtime_config.max_concurrency).unwrap_or(u32::MAX),
            n => n,
        };
        let worker = Worker::new(
            Arc::new(key.signer().clone()),
            runtime,
            Arc::new(config.llm.host()),
            WorkerConfig {
                role,
                hubs: config.network.peers.iter().chain(&config.network.gateways).cloned().collect(),
                cache_dir: data_dir.join("models"),
                skew_ms: config.network.skew_ms,
                capacity,
                max_body: config.server.max_infer_body_mib << 20,
            },
        )?;
        Ok(Self { worker, config: config.clone(), _lock: lock })
    }

    /// Its address.
    pub fn address(&self) -> alloy_primitives::Address {
        self.worker.address()
    }

    /// Serves jobs on `listener` and heartbeats the gateways until `shutdown` resolves.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = listener.local_addr()?;
        let net = &self.config.network;
        let endpoint = net.advertise.clone().unwrap_or_else(|| format!("http://{addr}"));
        let join = JoinConfig {
            gateways: net.gateways.clone(),
            endpoint: endpoint.clone(),
            interval: Duration::from_millis(net.heartbeat_ms.max(10)),
            stake: PaymentsSection::amount(&net.stake, "network.stake")?,
            faucet: self.config.payments.devnet,
        };
        info!(%addr, %endpoint, node = %self.worker.address(), role = ?self.config.network.role, gateways = ?net.gateways, "worker serving");
        let (stop_join, join_stopped) = oneshot::channel::<()>();
        let joining = tokio::spawn(join::run(self.worker.clone(), join, async move {
            let _ = join_stopped.await;
        }));
        crate::serve(listener, self.worker.router(), self.config.server.conn_limits(), shutdown).await?;
        let _ = stop_join.send(());
        let _ = joining.await;
        info!("stopped");
        Ok(())
    }

    /// The worker it serves (tests: to make it cheat, with the network crate's test-utils).
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Binds `config.server.listen` and serves in the background (tests, benches).
    pub async fn spawn(config: &Config) -> Result<RunningNode> {
        Self::build(config)?.start().await
    }

    /// Binds its `server.listen` and serves in the background.
    pub async fn start(self) -> Result<RunningNode> {
        let config = self.config.clone();
        RunningNode::start(&config, |listener, stop| self.serve(listener, stop)).await
    }
}
