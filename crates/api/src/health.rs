use axum::{Json, extract::State};
use verinet_primitives::wire::{Health, TokenInfo};

use crate::AppState;

/// `GET /health`: liveness plus what this node runs.
#[utoipa::path(get, path = "/health", tag = "node", summary = "Liveness and what this node runs", responses((status = 200, body = verinet_primitives::wire::Health)))]
pub(crate) async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        backend: st.runtime.backend_name().into(),
        storage: st.config.storage_name.clone(),
        token: Some(TokenInfo {
            symbol: st.payments.x402.token_symbol.clone(),
            decimals: verinet_primitives::TOKEN_DECIMALS,
            name: st.payments.x402.token_name.clone(),
            address: st.payments.x402.asset,
            chain_id: st.payments.x402.chain_id,
        }),
    })
}
