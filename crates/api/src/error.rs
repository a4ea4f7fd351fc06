use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tracing::error;
use verinet_hub::HubError;
use verinet_ledger::LedgerError;
use verinet_payments::{
    PaymentError,
    wire::{PAYMENT_REQUIRED, PaymentRequired, encode_header},
};
use verinet_primitives::wire::{ErrorBody, ErrorDetail};
use verinet_runtime::RuntimeError;
use verinet_store::StoreError;
use verinet_verify::VerifyError;

use crate::{AppState, pay};

/// A refused payment and the requirements to try again with.
#[derive(Debug)]
pub struct PaymentRefusal {
    /// Why.
    pub error: PaymentError,
    /// A fresh `PAYMENT-REQUIRED` (its `error` names the reason).
    pub required: PaymentRequired,
}

/// A paid request answered before, sent again with the same payment: its answer as kept with
/// the capture, and the headers it was sent with (`PAYMENT-RESPONSE`).
#[derive(Debug)]
pub struct AnsweredBefore {
    /// The request the payment paid for.
    pub request_id: String,
    /// The answer's body, JSON, as first sent.
    pub body: String,
    /// Headers to send with it.
    pub headers: HeaderMap,
}

/// Every way a request can fail. The match in [`ApiError::parts`] has no `_` arm on purpose:
/// a new variant anywhere below forces a decision about its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body was not the JSON we expect.
    #[error("{0}")]
    InvalidJson(String),
    /// A well-formed request with a value out of range or a name that breaks the rules, or a
    /// query string that does not parse.
    #[error("{0}")]
    InvalidParameter(String),
    /// The model reference did not parse.
    #[error("{0}")]
    InvalidModelRef(String),
    /// The model is of a kind this route does not serve (a language model on `/v1/infer`).
    #[error("{model} is a {kind} model; {route} serves {serves} models")]
    WrongModelKind {
        /// The model named.
        model: String,
        /// Its kind.
        kind: verinet_primitives::ModelKind,
        /// The route called.
        route: &'static str,
        /// The kinds the route serves.
        serves: &'static str,
    },
    /// A well-formed request the node cannot serve as asked (bad messages, a parameter out of
    /// range, a prompt over the context window); `code` names which.
    #[error("{message}")]
    InvalidRequest {
        /// Stable code (`empty_messages`, `invalid_role`, `context_length_exceeded`, ...).
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A language model refused or failed.
    #[error(transparent)]
    Llm(verinet_llm::LlmError),
    /// A multipart upload was malformed.
    #[error("{0}")]
    BadUpload(String),
    /// The body is larger than allowed.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// Limit in bytes.
        limit: u64,
    },
    /// Request bodies in flight are at the node's budget: retry shortly.
    #[error("this node is reading {limit} bytes of request bodies already; retry shortly")]
    BodiesBusy {
        /// The budget in bytes.
        limit: u64,
    },
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request names an app that is not registered.
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    /// Not an Ethereum address.
    #[error("{0}")]
    InvalidAddress(String),
    /// An amount that is not a positive base-unit integer, or out of bounds.
    #[error("{0}")]
    InvalidAmount(String),
    /// A signature that does not check out.
    #[error("{0}")]
    BadSignature(String),
    /// A signature whose timestamp is too far from the node's clock.
    #[error("{0}")]
    StaleSignature(String),
    /// The faucet runs on devnet nodes only.
    #[error("the faucet is disabled on this node (it runs on devnet nodes only)")]
    FaucetDisabled,
    /// The payment step refused the request.
    #[error("{}", .0.error)]
    Payment(Box<PaymentRefusal>),
    /// Not a failure: the payment was spent on this same request before, and here is its
    /// answer again (200, the body as first sent, `x-verinet-answered-before: <request id>`).
    #[error("this payment paid request {} before; its kept answer is sent again", .0.request_id)]
    AnsweredBefore(Box<AnsweredBefore>),
    /// The payment is held by a request still running: its answer comes with it shortly.
    #[error("this authorization pays request {request_id}, which is still running; retry in a moment to get its answer")]
    PaymentInFlight {
        /// The request holding the payment.
        request_id: String,
    },
    /// Our fault, with details for the log.
    #[error("{0}")]
    Internal(String),
    /// Not enough workers in good standing for the mode.
    #[error("this mode needs {wanted} workers in good standing; {available} available")]
    NoWorkers {
        /// Needed.
        wanted: usize,
        /// Available.
        available: usize,
    },
    /// No majority of a quorum agreed.
    #[error("no majority: {agreeing} of {of} workers agreed")]
    NoQuorum {
        /// Largest agreeing group.
        agreeing: usize,
        /// Quorum size.
        of: usize,
    },
    /// Every worker tried for the request failed (unreachable, busy, or answered badly); the
    /// payer is not charged.
    #[error("no worker served the request after {attempts} attempt(s): {last}")]
    WorkersFailed {
        /// Workers tried.
        attempts: usize,
        /// The last failure.
        last: String,
    },
    /// A node message whose signature does not check out (network protocol).
    #[error("{0}")]
    Unauthenticated(String),
    /// A node registration that conflicts with what the gateway knows.
    #[error("{0}")]
    NodeConflict(String),
    /// The receipt exists but is not sealed in a batch yet.
    #[error("receipt {0} is not sealed in a batch yet; try again after the next seal")]
    ReceiptPending(String),
    /// The receipt was sealed, and its body pruned after the retention window; its inclusion
    /// proof is still served.
    #[error("the body of receipt {request_id} was pruned after the node's retention window; it is sealed in batch {batch_id}, and GET /v1/receipts/{request_id}/proof still proves it")]
    ReceiptPruned {
        /// The request.
        request_id: String,
        /// The batch that sealed it.
        batch_id: String,
    },
    /// Receipt log failures.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Ledger failures.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Store failures outside the ledger's operations.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hub failures.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Runtime failures.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ApiError {
    /// A payment refusal for a call costing `amount` on a route that makes `offer`, with fresh
    /// requirements.
    pub(crate) fn payment_for(error: PaymentError, st: &AppState, amount: u128, headers: &HeaderMap, offer: pay::Offer) -> Self {
        let required = pay::payment_required(st, amount, headers, offer, Some(&error));
        ApiError::Payment(Box::new(PaymentRefusal { error, required }))
    }

    /// The status and stable code this error answers with.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let (status, code, _) = self.parts();
        (status, code)
    }

    /// Status, stable code and whether the message may be shown (internal ones are logged).
    fn parts(&self) -> (StatusCode, &'static str, bool) {
        use StatusCode as S;
        match self {
            ApiError::UnknownApp(_) => (S::NOT_FOUND, "unknown_app", true),
            ApiError::InvalidAddress(_) => (S::BAD_REQUEST, "invalid_address", true),
            ApiError::InvalidAmount(_) => (S::UNPROCESSABLE_ENTITY, "invalid_amount", true),
            ApiError::BadSignature(_) => (S::UNAUTHORIZED, "bad_signature", true),
            ApiError::StaleSignature(_) => (S::UNAUTHORIZED, "stale_signature", true),
            ApiError::FaucetDisabled => (S::FORBIDDEN, "faucet_disabled", true),
            ApiError::Payment(p) => match &p.error {
                PaymentError::SessionInvalid(_) => (S::UNAUTHORIZED, p.error.code(), true),
                PaymentError::Required { .. }
                | PaymentError::Malformed(_)
                | PaymentError::UnsupportedScheme(_)
                | PaymentError::NetworkMismatch { .. }
                | PaymentError::AssetMismatch { .. }
                | PaymentError::RecipientMismatch { .. }
                | PaymentError::SpenderMismatch { .. }
                | PaymentError::FacilitatorMismatch { .. }
                | PaymentError::AmountMismatch { .. }
                | PaymentError::Expired { .. }
                | PaymentError::NotYetValid { .. }
                | PaymentError::InvalidSignature(_)
                | PaymentError::NonceUsed(_)
                | PaymentError::InsufficientFunds { .. }
                | PaymentError::BudgetExceeded(_) => (S::PAYMENT_REQUIRED, p.error.code(), true),
            },
            ApiError::AnsweredBefore(_) => (S::OK, "answered_before", true),
            ApiError::PaymentInFlight { .. } => (S::CONFLICT, "payment_in_flight", true),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", false),
            ApiError::ReceiptPending(_) => (S::NOT_FOUND, "receipt_pending", true),
            ApiError::ReceiptPruned { .. } => (S::GONE, "receipt_pruned", true),
            ApiError::NoWorkers { .. } => (S::SERVICE_UNAVAILABLE, "no_workers", true),
            ApiError::BodiesBusy { .. } => (S::SERVICE_UNAVAILABLE, "busy", true),
            ApiError::NoQuorum { .. } => (S::BAD_GATEWAY, "no_quorum", true),
            ApiError::WorkersFailed { .. } => (S::BAD_GATEWAY, "workers_failed", true),
            ApiError::Unauthenticated(_) => (S::UNAUTHORIZED, "unauthenticated", true),
            ApiError::NodeConflict(_) => (S::CONFLICT, "node_conflict", true),
            ApiError::Verify(VerifyError::Store(e)) => store_parts(e),
            ApiError::Verify(
                VerifyError::EmptyBatch
                | VerifyError::Malformed(_)
                | VerifyError::DigestMismatch { .. }
                | VerifyError::BadSignature(_)
                | VerifyError::WrongSigner { .. },
            ) => (S::INTERNAL_SERVER_ERROR, "internal", false),
            ApiError::Ledger(LedgerError::InvalidAmount(_)) => (S::UNPROCESSABLE_ENTITY, "invalid_amount", true),
            ApiError::Ledger(LedgerError::Store(e)) | ApiError::Store(e) => store_parts(e),
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json", true),
            ApiError::InvalidParameter(_) => (S::BAD_REQUEST, "invalid_parameter", true),
            ApiError::InvalidModelRef(_) => (S::BAD_REQUEST, "invalid_model_ref", true),
            ApiError::WrongModelKind { .. } => (S::BAD_REQUEST, "wrong_model_kind", true),
            ApiError::BadUpload(_) => (S::BAD_REQUEST, "bad_upload", true),
            ApiError::InvalidRequest { code, .. } => (S::BAD_REQUEST, code, true),
            ApiError::Llm(e) => match e {
                verinet_llm::LlmError::Input(_) => (S::BAD_REQUEST, "invalid_input", true),
                verinet_llm::LlmError::ContextExceeded { .. } => (S::BAD_REQUEST, "context_length_exceeded", true),
                verinet_llm::LlmError::Overloaded(_) => (S::SERVICE_UNAVAILABLE, "overloaded", true),
                verinet_llm::LlmError::InvalidModel(_) | verinet_llm::LlmError::Engine(_) => {
                    (S::INTERNAL_SERVER_ERROR, "internal", false)
                }
            },
            ApiError::PayloadTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "payload_too_large", true),
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
                HubError::ContentOwned { .. } => (S::FORBIDDEN, "content_owned", true),
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

/// Store outcomes a caller can act on get their own status; failures are internal.
fn store_parts(e: &StoreError) -> (StatusCode, &'static str, bool) {
    use StatusCode as S;
    match e {
        StoreError::NotOwner { .. } => (S::FORBIDDEN, "not_owner", true),
        StoreError::ContentOwned { .. } => (S::FORBIDDEN, "content_owned", true),
        StoreError::VersionExists { .. } => (S::CONFLICT, "version_exists", true),
        StoreError::NonceUsed { .. } => (S::CONFLICT, "nonce_used", true),
        StoreError::Insufficient { .. } => (S::PAYMENT_REQUIRED, "insufficient_funds", true),
        StoreError::PaymentState { .. } => (S::CONFLICT, "payment_state", true),
        StoreError::Budget { .. } => (S::PAYMENT_REQUIRED, "budget_exceeded", true),
        StoreError::AppExists(_) => (S::CONFLICT, "app_exists", true),
        StoreError::NotFound(_) => (S::NOT_FOUND, "not_found", true),
        StoreError::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "invalid", true),
        StoreError::UnsupportedUrl { .. }
        | StoreError::Database(_)
        | StoreError::Sqlite(_)
        | StoreError::Migrate(_)
        | StoreError::Blob(_)
        | StoreError::Corrupt(_)
        | StoreError::CommitFailed(_)
        | StoreError::Io(_) => (S::INTERNAL_SERVER_ERROR, "internal", false),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, public) = self.parts();
        let retry_after = matches!(self, ApiError::PaymentInFlight { .. });
        if let ApiError::AnsweredBefore(a) = self {
            let mut resp = ([(header::CONTENT_TYPE, "application/json")], a.body).into_response();
            resp.headers_mut().extend(a.headers);
            if let Ok(v) = HeaderValue::from_str(&a.request_id) {
                resp.headers_mut().insert("x-verinet-answered-before", v);
            }
            return resp;
        }
        let required = match &self {
            ApiError::Payment(p) => HeaderValue::from_str(&encode_header(&p.required)).ok(),
            _ => None,
        };
        let message = if public {
            self.to_string()
        } else {
            error!(error = %self, "internal error");
            "internal error; see the node log".to_owned()
        };
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message, kind: openai_type(status).to_owned() } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(v) = required {
            // x402 clients read the requirements from this header, never from the body.
            resp.headers_mut().insert(PAYMENT_REQUIRED, v);
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        resp
    }
}

/// OpenAI's `error.type` for a status (its clients pick the exception class from the status;
/// the type is for people and logs).
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "payment_required",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}
