//! Hub endpoints: publish, list, detail, blobs.

use axum::{
    Json,
    body::Body,
    extract::{Multipart, Path, Query, State, multipart::MultipartRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use serde::Deserialize;
use tracing::instrument;
use verinet_hub::Staged;
use verinet_primitives::{
    ModelId,
    openai::{ModelEntry, ModelPage},
    wire::{ModelInfo, ModelVersionInfo, PublishRequest},
};
use verinet_store::{ModelQuery, ModelSort};

use crate::{ApiError, AppState, dto};

/// Metadata parts are small JSON; anything bigger is a mistake or an attack.
const MAX_METADATA_BYTES: usize = 64 << 10;
/// Room for multipart framing and the metadata part on top of the model.
const MULTIPART_OVERHEAD: u64 = 1 << 20;

/// `POST /v1/models`: multipart with a `metadata` JSON part and a `model` part (ONNX bytes).
/// The model part is streamed to disk while hashed; it is never held whole in memory.
#[utoipa::path(post, path = "/v1/models", tag = "hub", summary = "Publish a model version", description = "Multipart: a `metadata` part (JSON, signed by the owner with EIP-191) and a `model` part (the bytes, streamed and hashed). The model id is `sha256:` of the bytes.", request_body(content = inline(crate::openapi::PublishForm), content_type = "multipart/form-data"), responses((status = 201, description = "Stored", body = verinet_primitives::wire::ModelVersionInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all)]
pub(crate) async fn publish(
    State(st): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<ModelVersionInfo>), ApiError> {
    let limit = st.hub.config().max_model_bytes;
    // Refuse an announced oversize body before reading a byte of it.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit + MULTIPART_OVERHEAD) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut multipart = multipart.map_err(|e| ApiError::BadUpload(format!("{e}; send multipart/form-data with parts `metadata` and `model`")))?;

    let mut meta: Option<PublishRequest> = None;
    let mut staged: Option<Staged> = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| ApiError::BadUpload(e.body_text()))? {
        match field.name() {
            Some("metadata") if meta.is_none() => {
                let mut buf = Vec::new();
                let mut field = field;
                while let Some(chunk) = field.chunk().await.map_err(|e| ApiError::BadUpload(e.body_text()))? {
                    buf.extend_from_slice(&chunk);
                    if buf.len() > MAX_METADATA_BYTES {
                        return Err(ApiError::BadUpload(format!("metadata part is larger than {MAX_METADATA_BYTES} bytes")));
                    }
                }
                meta = Some(serde_json::from_slice(&buf).map_err(|e| ApiError::InvalidJson(format!("metadata: {e}")))?);
            }
            Some("model") if staged.is_none() => {
                let body = field.map_err(|e| e.body_text());
                staged = Some(st.hub.stage(body).await?);
            }
            other => {
                return Err(ApiError::BadUpload(format!(
                    "unexpected or repeated part {other:?}; send exactly one `metadata` and one `model` part"
                )));
            }
        }
    }
    let meta = meta.ok_or_else(|| ApiError::BadUpload("missing `metadata` part".into()))?;
    let staged = staged.ok_or_else(|| ApiError::BadUpload("missing `model` part".into()))?;
    let stored = st.hub.publish(meta, staged).await?;
    st.events.emit(verinet_flywheel::Event::Publish { model: stored.name.clone(), owner: stored.owner });
    Ok((StatusCode::CREATED, Json(dto::version_info(&stored, &st.payments.fees))))
}

/// Query of `GET /v1/models`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Text search over name, description and tags.
    q: Option<String>,
    /// Exact tag.
    tag: Option<String>,
    /// `usage` (default), `name` or `newest`.
    sort: Option<String>,
    /// Most entries (default 50, at most 500).
    limit: Option<u32>,
    /// Entries to skip.
    offset: Option<u32>,
}

/// `GET /v1/models[?q=&tag=&sort=usage|name|newest&limit=&offset=]`, most used first, in
/// OpenAI's list shape (`id` is the name to call) with the hub's fields in each entry.
#[utoipa::path(get, path = "/v1/models", tag = "hub", summary = "List models, most used first", description = "OpenAI's list shape (`id` is the name to call) with the hub's fields in each entry.", params(ListQuery), responses((status = 200, body = verinet_primitives::openai::ModelPage), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn list(
    State(st): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ModelPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidParameter(format!("query: {}", e.body_text())))?;
    let sort = match q.sort.as_deref() {
        None | Some("usage") => ModelSort::Usage,
        Some("name") => ModelSort::Name,
        Some("newest") => ModelSort::Newest,
        Some(other) => return Err(ApiError::InvalidParameter(format!("sort {other:?}: use usage, name or newest"))),
    };
    let query = ModelQuery {
        q: q.q.filter(|s| !s.is_empty()),
        tag: q.tag.filter(|s| !s.is_empty()),
        sort,
        limit: q.limit.unwrap_or(50).min(500),
        offset: q.offset.unwrap_or(0),
    };
    let models = st.hub.list(&query).await?;
    let data = models
        .iter()
        .map(|m| {
            let hub = dto::list_item(m, &st.payments.fees);
            ModelEntry {
                id: hub.name.clone(),
                object: "model".into(),
                created: (hub.published_at_ms.max(0) / 1000) as u64,
                owned_by: hub.owner.to_checksum(None),
                hub,
            }
        })
        .collect();
    Ok(Json(ModelPage { object: "list".into(), data }))
}

/// `GET /v1/models/{name}`.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "hub", summary = "A model: its newest version, every version and usage summed over them", params(("name" = String, Path, description = "Model name")), responses((status = 200, body = verinet_primitives::wire::ModelInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn detail(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<ModelInfo>, ApiError> {
    st.hub.flush_usage().await;
    let versions = st.hub.versions(&name).await?;
    dto::model_info(&versions, &st.payments.fees).map(Json).ok_or_else(|| ApiError::NotFound(format!("model {name:?} not found")))
}

/// `GET /v1/models/{name}/{version}`.
#[utoipa::path(get, path = "/v1/models/{name}/{version}", tag = "hub", summary = "One version of a model", params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Semver version")), responses((status = 200, body = verinet_primitives::wire::ModelVersionInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn version_detail(
    State(st): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelVersionInfo>, ApiError> {
    let r = format!("{name}@{version}").parse().map_err(|e: verinet_primitives::Error| ApiError::InvalidModelRef(e.to_string()))?;
    st.hub.flush_usage().await;
    let v = st.hub.resolve(&r).await?;
    Ok(Json(dto::version_info(&v, &st.payments.fees)))
}

/// `GET /v1/blobs/{sha256}`: the exact bytes, streamed, with a strong ETag.
#[utoipa::path(get, path = "/v1/blobs/{sha256}", tag = "hub", summary = "A model's exact bytes by content id", params(("sha256" = String, Path, description = "`sha256:<hex>` or the bare hex")), responses((status = 200, description = "The bytes, streamed, with a strong ETag", content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn blob(State(st): State<AppState>, Path(sha): Path<String>) -> Result<Response, ApiError> {
    let id = ModelId::parse_lenient(&sha).map_err(|e| ApiError::InvalidModelRef(e.to_string()))?;
    let (size, stream) = st.hub.blob_stream(&id).await?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, size.to_string()),
        (header::ETAG, format!("\"{id}\"")),
        (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_owned()),
    ];
    Ok((headers, Body::from_stream(stream.map_err(std::io::Error::other))).into_response())
}
