//! `GET /v1/nodes`: workers and validators with stake, record and reputation.

use axum::{Json, extract::State};
use serde::Serialize;
use verinet_primitives::Address;
use verinet_verify::{NodeRole, Stats};

use crate::{ApiError, AppState};

/// One executor as listed.
#[derive(Debug, Serialize)]
pub(crate) struct NodeInfo {
    address: Address,
    role: NodeRole,
    backend: &'static str,
    stake: String,
    reputation: f64,
    /// In good standing (reputation and stake at or above the thresholds): gets work.
    active: bool,
    stats: Stats,
}

/// The node list body.
#[derive(Debug, Serialize)]
pub(crate) struct NodeList {
    nodes: Vec<NodeInfo>,
    min_reputation: f64,
    min_stake: String,
}

pub(crate) async fn list(State(st): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    let mut nodes = Vec::new();
    for e in st.pool.all() {
        let stats = e.stats();
        nodes.push(NodeInfo {
            address: e.address(),
            role: e.role,
            backend: e.runtime.backend_name(),
            stake: st.ledger.store().balances(e.address()).await?.stake.to_string(),
            reputation: stats.reputation(),
            active: st.pool.active(e),
            stats,
        });
    }
    Ok(Json(NodeList { nodes, min_reputation: st.pool.min_reputation, min_stake: st.pool.min_stake.to_string() }))
}
