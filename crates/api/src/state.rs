use std::sync::Arc;
use std::time::Duration;

use verinet_hub::Hub;
use verinet_runtime::Runtime;

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest `POST /v1/infer` body in bytes (default 64 MiB).
    pub max_infer_body: usize,
    /// Timeout of every request except uploads (default 60 s).
    pub request_timeout: Duration,
    /// Timeout of a model upload (default 30 min: 512 MiB at ~300 KiB/s).
    pub upload_timeout: Duration,
    /// Storage backend name shown by `/health`.
    pub storage_name: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_infer_body: 64 << 20,
            request_timeout: Duration::from_secs(60),
            upload_timeout: Duration::from_secs(30 * 60),
            storage_name: "sqlite".into(),
        }
    }
}

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The model hub.
    pub hub: Arc<Hub>,
    /// The inference runtime.
    pub runtime: Arc<Runtime>,
    /// HTTP limits.
    pub config: Arc<ApiConfig>,
}
