use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tracing::error;
use verinet_hub::HubError;
use verinet_primitives::wire::{ErrorBody, ErrorDetail};
use verinet_runtime::RuntimeError;

/// Every way a request can fail. The match in [`ApiError::parts`] has no `_` arm on purpose:
/// a new variant anywhere below forces a decision about its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body was not the JSON we expect.
    #[error("{0}")]
    InvalidJson(String),
    /// The model reference did not parse.
    #[error("{0}")]
    InvalidModelRef(String),
    /// A multipart upload was malformed.
    #[error("{0}")]
    BadUpload(String),
    /// The body is larger than allowed.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// Limit in bytes.
        limit: u64,
    },
    /// The request used a verification mode this node does not run yet.
    #[error("{0}")]
    Unsupported(String),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// Hub failures.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Runtime failures.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ApiError {
    /// Status, stable code and whether the message may be shown (internal ones are logged).
    fn parts(&self) -> (StatusCode, &'static str, bool) {
        use StatusCode as S;
        match self {
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json", true),
            ApiError::InvalidModelRef(_) => (S::BAD_REQUEST, "invalid_model_ref", true),
            ApiError::BadUpload(_) => (S::BAD_REQUEST, "bad_upload", true),
            ApiError::PayloadTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "payload_too_large", true),
            ApiError::Unsupported(_) => (S::NOT_IMPLEMENTED, "unsupported", true),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found", true),
            ApiError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed", true),
            ApiError::Hub(e) => match e {
                HubError::InvalidMetadata(_) => (S::UNPROCESSABLE_ENTITY, "invalid_metadata", true),
                HubError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "model_too_large", true),
                HubError::Empty => (S::BAD_REQUEST, "empty_model", true),
                HubError::HashMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "sha256_mismatch", true),
                HubError::BadSignature(_) => (S::UNAUTHORIZED, "bad_signature", true),
                HubError::StaleSignature { .. } => (S::UNAUTHORIZED, "stale_signature", true),
                HubError::NotOwner { .. } => (S::FORBIDDEN, "not_owner", true),
                HubError::VersionExists { .. } => (S::CONFLICT, "version_exists", true),
                HubError::InvalidModel(_) => (S::UNPROCESSABLE_ENTITY, "invalid_model", true),
                HubError::NotFound(_) => (S::NOT_FOUND, "not_found", true),
                HubError::Upload(_) => (S::BAD_REQUEST, "upload_interrupted", true),
                HubError::Store(_) | HubError::Io(_) | HubError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", false),
            },
            ApiError::Runtime(e) => match e {
                RuntimeError::Input(_) => (S::UNPROCESSABLE_ENTITY, "input_mismatch", true),
                RuntimeError::Execution(_) => (S::UNPROCESSABLE_ENTITY, "execution_failed", true),
                RuntimeError::Timeout(_) => (S::GATEWAY_TIMEOUT, "timeout", true),
                RuntimeError::Overloaded { .. } => (S::SERVICE_UNAVAILABLE, "overloaded", true),
                RuntimeError::InvalidModel(_) | RuntimeError::Load(_) => (S::INTERNAL_SERVER_ERROR, "internal", false),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, public) = self.parts();
        let message = if public {
            self.to_string()
        } else {
            error!(error = %self, "internal error");
            "internal error; see the node log".to_owned()
        };
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
