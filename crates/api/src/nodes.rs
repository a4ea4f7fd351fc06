//! The node registry: `GET /v1/nodes` (workers and validators with stake, reputation and
//! liveness), `POST /v1/nodes/heartbeat` (a remote worker joins and stays live) and
//! `POST /v1/stake` (bond stake). The last two are signed by the node's key
//! (`verinet_network::auth`) and answered signed by the gateway's.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::Response,
};
use serde::Serialize;
use tracing::info;
use verinet_flywheel::Event;
use verinet_network::{
    RemoteWorker,
    auth,
    wire::{HEARTBEAT_PATH, HeartbeatAck, Registration, STAKE_PATH, StakeRequest},
};
use verinet_primitives::{Address, ModelId, wire::AccountInfo};
use verinet_verify::{Executor, NodeRole, Stats};

use crate::{ApiError, AppState, money::account_info};

/// One executor as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeInfo {
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    address: Address,
    role: NodeRole,
    backend: String,
    /// Where it listens; absent for an executor inside this gateway's process.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    stake: String,
    reputation: f64,
    /// Heard from within the heartbeat window (always, in-process).
    live: bool,
    /// Last heartbeat, unix ms (absent in-process).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ms: Option<u64>,
    /// Jobs at once it advertises (0: unknown).
    capacity: u32,
    /// Jobs this gateway has in flight on it.
    inflight: u32,
    /// Models it holds (remote nodes).
    #[schema(value_type = Vec<ModelId>)]
    models: Vec<ModelId>,
    /// Live and in good standing (reputation and stake at or above the thresholds): gets work.
    active: bool,
    stats: Stats,
}

/// The node list body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeList {
    /// The gateway answering.
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    gateway: Address,
    nodes: Vec<NodeInfo>,
    min_reputation: f64,
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    min_stake: String,
    heartbeat_timeout_ms: u64,
}

#[utoipa::path(get, path = "/v1/nodes", tag = "network", summary = "Workers and validators: stake, reputation, liveness, load", responses((status = 200, body = NodeList), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn list(State(st): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    let mut nodes = Vec::new();
    let now = verinet_primitives::unix_ms_u64();
    for e in st.pool.all() {
        let stats = e.stats();
        let presence = e.presence();
        nodes.push(NodeInfo {
            address: e.address(),
            role: e.role,
            backend: e.backend_name(),
            endpoint: e.endpoint(),
            stake: st.ledger.store().balances(e.address()).await?.stake.to_string(),
            reputation: stats.reputation(),
            live: e.is_live(now, st.pool.heartbeat_timeout_ms),
            last_seen_ms: presence.last_seen_ms,
            capacity: presence.capacity,
            inflight: e.inflight(),
            models: presence.models.into_iter().collect(),
            active: st.pool.active(&e),
            stats,
        });
    }
    Ok(Json(NodeList {
        gateway: st.node_key.address(),
        nodes,
        min_reputation: st.pool.min_reputation,
        min_stake: st.pool.min_stake.to_string(),
        heartbeat_timeout_ms: st.pool.heartbeat_timeout_ms,
    }))
}

/// `POST /v1/nodes/heartbeat`: the first one registers a worker or validator, every later one
/// keeps it live and updates its endpoint, load and models. Signed by the node; answered signed
/// by this gateway, whose jobs the node then takes.
#[utoipa::path(post, path = "/v1/nodes/heartbeat", tag = "network", summary = "A worker or validator joins or stays in routing (signed)", request_body = verinet_network::wire::Registration, params(("x-verinet-address" = String, Header, description = "The signing node"), ("x-verinet-timestamp" = String, Header, description = "Unix ms of the signature"), ("x-verinet-signature" = String, Header, description = "The node's signature over method, path, timestamp and body (docs/network.md)")), responses((status = 200, body = verinet_network::wire::HeartbeatAck), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn heartbeat(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let signer = authenticate(&st, &headers, HEARTBEAT_PATH, &body)?;
    let reg: Registration = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if reg.address != signer {
        return Err(ApiError::Unauthenticated(format!("a registration for {} signed by {signer}", reg.address)));
    }
    check_endpoint(&reg.endpoint)?;
    let stake = st.ledger.store().balances(reg.address).await?.stake;
    let now = verinet_primitives::unix_ms_u64();
    let remote = || -> Arc<RemoteWorker> {
        Arc::new(RemoteWorker::new(
            reg.address,
            reg.endpoint.clone(),
            reg.backends.first().cloned().unwrap_or_else(|| "unknown".into()),
            st.node_key.clone(),
            st.network.http.clone(),
            st.network.skew_ms,
        ))
    };
    let (e, joined) = match st.pool.get(reg.address) {
        Some(e) => {
            if e.role != reg.role {
                return Err(ApiError::NodeConflict(format!("{} is registered as a {:?}", reg.address, e.role)));
            }
            let Some(old) = e.endpoint() else {
                return Err(ApiError::NodeConflict(format!("{} is an executor inside this gateway", reg.address)));
            };
            let moved = old != reg.endpoint.trim_end_matches('/');
            e.heartbeat(reg.presence(now), moved.then(|| remote() as Arc<_>));
            (e, false)
        }
        None => {
            let e = Arc::new(Executor::with_backend(reg.address, reg.role, remote(), reg.presence(now)));
            st.pool.join(e.clone()).map_err(|role| ApiError::NodeConflict(format!("{} is registered as a {role:?}", reg.address)))?;
            st.events.emit(Event::NodeJoin { node: reg.address, role: format!("{:?}", reg.role).to_lowercase() });
            info!(node = %reg.address, role = ?reg.role, endpoint = %reg.endpoint, stake, "node joined");
            (e, true)
        }
    };
    e.set_stake(stake);
    let ack = HeartbeatAck {
        gateway: st.node_key.address(),
        joined,
        stake: stake.to_string(),
        min_stake: st.pool.min_stake.to_string(),
        timeout_ms: st.pool.heartbeat_timeout_ms,
        active: st.pool.active(&e),
    };
    signed_json(&st, HEARTBEAT_PATH, &ack)
}

/// `POST /v1/stake`: bonds part of the signer's available balance; the nonce makes a replay of
/// the same signed request a `409 nonce_used`.
#[utoipa::path(post, path = "/v1/stake", tag = "network", summary = "Bond stake from a node's balance (signed)", request_body = verinet_network::wire::StakeRequest, params(("x-verinet-address" = String, Header, description = "The signing node"), ("x-verinet-timestamp" = String, Header, description = "Unix ms of the signature"), ("x-verinet-signature" = String, Header, description = "The node's signature over method, path, timestamp and body (docs/network.md)")), responses((status = 200, body = verinet_primitives::wire::AccountInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn stake(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let signer = authenticate(&st, &headers, STAKE_PATH, &body)?;
    let req: StakeRequest = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if req.address != signer {
        return Err(ApiError::Unauthenticated(format!("a stake for {} signed by {signer}", req.address)));
    }
    let amount: u128 = req
        .amount
        .parse()
        .ok()
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::InvalidAmount(format!("amount {:?} is not a positive base-unit integer", req.amount)))?;
    if req.nonce.is_empty() || req.nonce.len() > 128 {
        return Err(ApiError::InvalidParameter("nonce must be 1 to 128 characters".into()));
    }
    st.ledger.stake_once(req.address, amount, &format!("stake:{}", req.nonce)).await?;
    let account = st.ledger.account(req.address).await?;
    if let Some(e) = st.pool.get(req.address) {
        e.set_stake(account.balances.stake);
    }
    info!(node = %req.address, amount, "stake bonded");
    let info: AccountInfo = account_info(&account);
    signed_json(&st, STAKE_PATH, &info)
}

fn authenticate(st: &AppState, headers: &HeaderMap, path: &str, body: &[u8]) -> Result<Address, ApiError> {
    auth::verify(headers, "POST", path, body, st.network.skew_ms).map_err(|e| ApiError::Unauthenticated(e.to_string()))
}

/// A JSON answer signed by this gateway's key.
fn signed_json(st: &AppState, path: &str, body: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(auth::signed_answer(&st.node_key, path, bytes))
}

fn check_endpoint(endpoint: &str) -> Result<(), ApiError> {
    let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && endpoint.len() <= 512 && !endpoint.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(ApiError::InvalidParameter(format!("endpoint {endpoint:?} is not an http(s) base URL"))),
    }
}
