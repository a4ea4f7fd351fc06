use axum::{Json, extract::State};
use verinet_primitives::wire::Health;

use crate::AppState;

/// `GET /health`: liveness plus what this node runs.
pub(crate) async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        backend: st.runtime.backend_name().into(),
        storage: st.config.storage_name.clone(),
    })
}
