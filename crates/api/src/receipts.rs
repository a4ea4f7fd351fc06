//! `GET /v1/receipts/{id}` and `GET /v1/receipts/{id}/proof`.

use axum::{
    Json,
    extract::{Path, State},
};
use verinet_verify::{InclusionProof, ReceiptInfo};

use crate::{ApiError, AppState};

/// The signed receipt of a request and whether it is sealed in a batch yet; 410
/// `receipt_pruned` once its body is past the retention window (the proof stays).
#[utoipa::path(get, path = "/v1/receipts/{request_id}", tag = "receipts", summary = "A request's signed receipt and whether it is sealed", params(("request_id" = String, Path, description = "Request id")), responses((status = 200, body = verinet_verify::ReceiptInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn receipt(
    State(st): State<AppState>,
    Path(request_id): Path<String>,
) -> Result<Json<ReceiptInfo>, ApiError> {
    if let Some(info) = st.receipts.receipt(&request_id).await? {
        return Ok(Json(info));
    }
    match st.receipts.pruned(&request_id).await? {
        Some(batch_id) => Err(ApiError::ReceiptPruned { request_id, batch_id }),
        None => Err(ApiError::NotFound(format!("no receipt for request {request_id:?} on this node"))),
    }
}

/// The Merkle inclusion proof of a sealed receipt, with the node-signed batch root.
#[utoipa::path(get, path = "/v1/receipts/{request_id}/proof", tag = "receipts", summary = "Merkle inclusion proof of a sealed receipt with the signed batch root", params(("request_id" = String, Path, description = "Request id")), responses((status = 200, body = verinet_verify::InclusionProof), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn proof(
    State(st): State<AppState>,
    Path(request_id): Path<String>,
) -> Result<Json<InclusionProof>, ApiError> {
    if let Some(p) = st.receipts.proof(&request_id).await? {
        return Ok(Json(p));
    }
    match st.receipts.receipt(&request_id).await? {
        Some(_) => Err(ApiError::ReceiptPending(request_id)),
        None => Err(ApiError::NotFound(format!("no receipt for request {request_id:?} on this node"))),
    }
}
