//! Joining the network: bond stake once, then heartbeat every gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use tracing::{debug, info, warn};
use verinet_client::Client;

use crate::auth::{self, RESPONSE};
use crate::wire::{HEARTBEAT_PATH, HeartbeatAck, STAKE_PATH, StakeRequest};
use crate::worker::Worker;

/// How a worker joins.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Gateways to heartbeat (base URLs); the first one also takes the stake.
    pub gateways: Vec<String>,
    /// Where gateways reach this worker.
    pub endpoint: String,
    /// Heartbeat period.
    pub interval: Duration,
    /// Stake to have bonded before joining, base units.
    pub stake: u128,
    /// On a devnet: take what the stake lacks from the gateway's faucet.
    pub faucet: bool,
}

/// Bonds the stake (retrying until a gateway answers), then heartbeats every gateway each
/// `interval` until `shutdown`.
pub async fn run(worker: Arc<Worker>, config: JoinConfig, shutdown: impl Future<Output = ()> + Send) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let work = async {
        if config.stake > 0 {
            while let Err(e) = bond(&worker, &http, &config).await {
                warn!(error = %e, "staking failed; retrying");
                tokio::time::sleep(config.interval).await;
            }
        }
        let mut was_active = vec![None::<bool>; config.gateways.len()];
        loop {
            let beats = config.gateways.iter().map(|g| heartbeat(&worker, &http, g, &config.endpoint));
            for ((g, r), was) in config.gateways.iter().zip(futures::future::join_all(beats).await).zip(&mut was_active) {
                match r {
                    Ok(ack) => {
                        if *was != Some(ack.active) {
                            info!(gateway = %g, address = %ack.gateway, active = ack.active, stake = %ack.stake, "heartbeat acknowledged");
                            *was = Some(ack.active);
                        }
                    }
                    Err(e) => {
                        if *was != Some(false) {
                            warn!(gateway = %g, error = %e, "heartbeat failed");
                        } else {
                            debug!(gateway = %g, error = %e, "heartbeat failed");
                        }
                        *was = Some(false);
                    }
                }
            }
            tokio::time::sleep(config.interval).await;
        }
    };
    tokio::select! { _ = work => {}, _ = shutdown => {} }
}

/// Tops the bonded stake up to `config.stake` through the first gateway.
async fn bond(worker: &Worker, http: &reqwest::Client, config: &JoinConfig) -> Result<(), String> {
    let gw = config.gateways.first().ok_or("no gateway to stake with")?;
    let client = Client::new(gw.clone());
    let me = worker.address();
    let account = client.account(me).await.map_err(|e| e.to_string())?;
    let amount = |s: &str| s.parse::<u128>().map_err(|e| format!("account amount {s:?}: {e}"));
    let (staked, available) = (amount(&account.stake)?, amount(&account.balance)?);
    let need = config.stake.saturating_sub(staked);
    if need == 0 {
        return Ok(());
    }
    if available < need {
        if !config.faucet {
            return Err(format!("{me} has {available} available but needs {need} to stake"));
        }
        client.faucet(me, Some(need - available)).await.map_err(|e| e.to_string())?;
    }
    let req = StakeRequest { address: me, amount: need.to_string(), nonce: format!("{:032x}", rand::random::<u128>()) };
    post_ok(worker, http, gw, STAKE_PATH, &req).await?;
    info!(gateway = %gw, amount = need, "stake bonded");
    Ok(())
}

/// One heartbeat to `gateway`; a signed answer makes it a gateway whose jobs this worker takes.
pub async fn heartbeat(worker: &Worker, http: &reqwest::Client, gateway: &str, endpoint: &str) -> Result<HeartbeatAck, String> {
    let (headers, bytes) = post_ok(worker, http, gateway, HEARTBEAT_PATH, &worker.registration(endpoint)).await?;
    let signer: Address =
        auth::verify(&headers, RESPONSE, HEARTBEAT_PATH, &bytes, worker.config().skew_ms).map_err(|e| e.to_string())?;
    let ack: HeartbeatAck = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if ack.gateway != signer {
        return Err(format!("acknowledgement for {} signed by {signer}", ack.gateway));
    }
    if worker.trust(signer) {
        info!(gateway = %gateway, address = %signer, "joined gateway");
    }
    Ok(ack)
}

/// [`auth::post_signed`] of `body` as JSON by the worker; the answer's headers and
/// bytes if it is a success.
async fn post_ok(
    worker: &Worker,
    http: &reqwest::Client,
    gateway: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<(http::HeaderMap, bytes::Bytes), String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let (status, headers, bytes) = auth::post_signed(http, worker.key(), gateway, path, None, body).await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok((headers, bytes))
}
