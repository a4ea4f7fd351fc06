use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, stream::BoxStream};
use tracing::{info, instrument};
use verinet_primitives::{
    IoSignature, ModelId, ModelKind, ModelRef, PublishAuth, validate_model_name,
    wire::{ModelPolicy, PublishRequest},
};
use verinet_runtime::{Runtime, RuntimeError};
use verinet_store::{BlobStore, ModelQuery, ModelStore, ModelSummary, ModelVersion, NewModelVersion, StoreError};

use crate::{HubError, Result, Staged, cache::ModelCache, stage::stage, usage::UsageBuffer};

const MAX_DESCRIPTION: usize = 4096;
const MAX_LICENSE: usize = 128;
const MAX_TAGS: usize = 16;

/// Hub limits and places.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Largest model accepted, in bytes (default 512 MiB).
    pub max_model_bytes: u64,
    /// How far a publish signature's timestamp may be from the hub's clock (default 10 min).
    pub max_clock_skew: Duration,
    /// Where uploads are staged before they are accepted.
    pub staging_dir: PathBuf,
}

impl HubConfig {
    /// Defaults with uploads staged under `staging_dir`.
    pub fn new(staging_dir: PathBuf) -> Self {
        Self { max_model_bytes: 512 << 20, max_clock_skew: Duration::from_secs(600), staging_dir }
    }
}

/// The model hub. Cheap to share behind an `Arc`.
pub struct Hub {
    models: Arc<dyn ModelStore>,
    blobs: Arc<dyn BlobStore>,
    runtime: Arc<Runtime>,
    usage: Arc<UsageBuffer>,
    resolved: Arc<ModelCache>,
    config: HubConfig,
}

impl Hub {
    /// Wires a hub over its stores and the runtime that validates uploads.
    pub fn new(models: Arc<dyn ModelStore>, blobs: Arc<dyn BlobStore>, runtime: Arc<Runtime>, config: HubConfig) -> Self {
        let usage = UsageBuffer::start(models.clone());
        let resolved = ModelCache::start(models.as_ref());
        Self { models, blobs, runtime, usage, resolved, config }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The model record store (for usage accounting by the inference path).
    pub fn models(&self) -> &Arc<dyn ModelStore> {
        &self.models
    }

    /// Streams an upload body to a staging file (hash + size limit) without holding it in memory.
    pub async fn stage<S, E>(&self, body: S) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        stage(&self.config.staging_dir, self.config.max_model_bytes, body).await
    }

    /// Publishes staged bytes as `meta.name@meta.version`.
    ///
    /// Order matters: cheap checks (metadata, signature, ownership) come before the expensive
    /// compile, and the record is inserted last so a failed publish leaves nothing behind but
    /// an idempotent blob.
    #[instrument(skip_all, fields(name = %meta.name, version = %meta.version, sha256 = %staged.id))]
    pub async fn publish(&self, meta: PublishRequest, staged: Staged) -> Result<ModelVersion> {
        let price = check_metadata(&meta)?;
        let policy = match &meta.verification {
            Some(v) => {
                let p = ModelPolicy::parse(v).map_err(HubError::InvalidMetadata)?;
                Some(serde_json::to_string(&p).map_err(|e| HubError::Internal(e.to_string()))?)
            }
            None => None,
        };
        if let Some(claimed) = meta.sha256
            && claimed != staged.id
        {
            return Err(HubError::HashMismatch { got: staged.id.to_string(), expected: claimed.to_string() });
        }
        self.check_signature(&meta, staged.id)?;
        if let Some(owner) = self.models.owner(&meta.name).await?
            && owner != meta.owner
        {
            return Err(HubError::NotOwner { name: meta.name, owner });
        }
        if self.models.version(&meta.name, &meta.version).await?.is_some() {
            return Err(HubError::VersionExists { name: meta.name, version: meta.version.to_string() });
        }

        // The engine needs the whole model in memory to check it; the upload itself never was.
        let bytes = Bytes::from(tokio::fs::read(&staged.path).await?);
        let detected = ModelKind::detect(&bytes);
        if let Some(claimed) = meta.kind
            && claimed != detected
        {
            return Err(HubError::InvalidModel(format!("the bytes are of kind {detected}, not {claimed}")));
        }
        check_token_prices(&meta, price, detected)?;
        let signature = match detected {
            ModelKind::Onnx => self.runtime.inspect(staged.id, bytes).await.map_err(|e| match e {
                RuntimeError::InvalidModel(reason) => HubError::InvalidModel(reason),
                other => HubError::Internal(other.to_string()),
            })?,
            kind => inspect_language_model(kind, bytes).await?,
        };
        self.blobs.put_file(&staged.id, &staged.path).await?;

        let record = NewModelVersion {
            name: meta.name,
            version: meta.version,
            id: staged.id,
            size: staged.size,
            owner: meta.owner,
            description: meta.description,
            tags: meta.tags,
            license: meta.license,
            price,
            signature,
            publish_signature: meta.signature,
            policy,
            token_prices: meta.token_prices,
            published_at_ms: verinet_primitives::unix_ms(),
        };
        let stored = self.models.insert_version(&record).await.map_err(|e| match e {
            StoreError::NotOwner { name, owner } => HubError::NotOwner { name, owner },
            StoreError::ContentOwned { id, owner, name } => HubError::ContentOwned { id, owner, name },
            StoreError::VersionExists { name, version } => HubError::VersionExists { name, version: version.to_string() },
            other => HubError::Store(other),
        })?;
        self.resolved.invalidate(None);
        info!(size = stored.size, "model published");
        Ok(stored)
    }

    fn check_signature(&self, meta: &PublishRequest, id: ModelId) -> Result<()> {
        let now = verinet_primitives::unix_ms_u64() / 1000;
        let max_skew_secs = self.config.max_clock_skew.as_secs();
        if meta.timestamp.abs_diff(now) > max_skew_secs {
            return Err(HubError::StaleSignature { timestamp: meta.timestamp, now, max_skew_secs });
        }
        let auth = PublishAuth { name: meta.name.clone(), version: meta.version.clone(), sha256: id, timestamp: meta.timestamp };
        let signer = auth.recover_signer(&meta.signature).map_err(|e| HubError::BadSignature(e.to_string()))?;
        if signer != meta.owner {
            return Err(HubError::BadSignature(format!(
                "signed by {signer}, not by the claimed owner {} (the message covers name, version, sha256 and timestamp)",
                meta.owner
            )));
        }
        Ok(())
    }

    /// Resolves a reference to one stored version.
    pub async fn resolve(&self, r: &ModelRef) -> Result<ModelVersion> {
        let found = match r {
            ModelRef::Latest(name) => self.models.latest(name).await?,
            ModelRef::Version(name, v) => self.models.version(name, v).await?,
            ModelRef::Id(id) => self.models.by_id(id).await?,
        };
        found.ok_or_else(|| HubError::NotFound(format!("model {r}")))
    }

    /// Resolves a reference for a call: from memory when this gateway resolved it since the
    /// last publication anywhere, else from the store. The record's usage counters are those of
    /// when it was read; [`Hub::resolve`] reads them fresh.
    pub async fn resolve_for_call(&self, r: &ModelRef) -> Result<Arc<ModelVersion>> {
        if let Some(v) = self.resolved.get(r) {
            return Ok(v);
        }
        let generation = self.resolved.generation();
        let v = Arc::new(self.resolve(r).await?);
        if let Some(g) = generation {
            self.resolved.fill(r, g, v.clone());
        }
        Ok(v)
    }

    /// All versions of a name, newest first (empty when unknown), usage up to date.
    pub async fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.usage.flush().await;
        Ok(self.models.versions(name).await?)
    }

    /// Search and list models, usage up to date.
    pub async fn list(&self, q: &ModelQuery) -> Result<Vec<ModelSummary>> {
        self.usage.flush().await;
        Ok(self.models.list(q).await?)
    }

    /// The model bytes, re-hashed so corrupted storage can never run under a signed id.
    pub async fn load_bytes(&self, id: &ModelId) -> Result<Bytes> {
        let bytes = self.blobs.get(id).await.map_err(|e| match e {
            StoreError::NotFound(_) => HubError::NotFound(format!("blob {id}")),
            other => HubError::Store(other),
        })?;
        let got = ModelId::of_bytes(&bytes);
        if got != *id {
            return Err(HubError::Internal(format!("stored blob {id} hashes to {got}")));
        }
        Ok(bytes)
    }

    /// Streams the model bytes (for `GET /v1/blobs/{sha256}`): size and chunks.
    pub async fn blob_stream(&self, id: &ModelId) -> Result<(u64, BoxStream<'static, verinet_store::Result<Bytes>>)> {
        // Only bytes that some published version points at are served.
        if self.models.by_id(id).await?.is_none() {
            return Err(HubError::NotFound(format!("blob {id}")));
        }
        self.blobs.stream(id).await.map_err(|e| match e {
            StoreError::NotFound(_) => HubError::NotFound(format!("blob {id}")),
            other => HubError::Store(other),
        })
    }

    /// Counts one call of a version (usage is the headline metric). Buffered: written within
    /// 200 ms, before any usage read of this hub, and by [`Hub::flush_usage`].
    pub fn record_call(&self, v: &ModelVersion, ok: bool) {
        self.usage.add(&v.name, &v.version, ok, verinet_primitives::unix_ms());
    }

    /// Writes buffered usage now (called on shutdown).
    pub async fn flush_usage(&self) {
        self.usage.flush().await;
    }
}

/// Loads a GGUF model or an encoder bundle once, on the blocking pool, to prove it runs: its
/// signature is its kind and what the engine read from it.
async fn inspect_language_model(kind: ModelKind, bytes: Bytes) -> Result<IoSignature> {
    let facts = tokio::task::spawn_blocking(move || match kind {
        ModelKind::Llm => verinet_llm::LanguageModel::load(&bytes).map(|m| serde_json::to_value(m.info())),
        _ => verinet_llm::Embedder::load(&bytes).map(|m| serde_json::to_value(m.info())),
    })
    .await
    .map_err(|e| HubError::Internal(format!("inspect task: {e}")))?
    .map_err(|e| match e {
        verinet_llm::LlmError::InvalidModel(reason) => HubError::InvalidModel(reason),
        other => HubError::InvalidModel(other.to_string()),
    })?
    .map_err(|e| HubError::Internal(e.to_string()))?;
    Ok(IoSignature { kind, language: Some(facts), ..IoSignature::default() })
}

/// Validates the metadata fields and parses the price.
/// Per-token prices belong to language and embedding models, which are then priced by the
/// token only (a per-call price besides would be charged on top, which nobody expects), and an
/// embedding has no completion tokens.
fn check_token_prices(meta: &PublishRequest, price: u128, kind: ModelKind) -> Result<()> {
    let Some(p) = meta.token_prices else { return Ok(()) };
    let bad = |m: String| Err(HubError::InvalidMetadata(m));
    match kind {
        ModelKind::Onnx => bad("token_prices are for llm and embedding models; an onnx model has a price per call".into()),
        _ if price != 0 => bad(format!("token_prices and a per-call price {price} cannot both be set; set price to 0")),
        ModelKind::Embedding if p.completion_per_1k != 0 => {
            bad("an embedding model has no completion tokens; set completion_per_1k to 0".into())
        }
        _ => Ok(()),
    }
}

fn check_metadata(meta: &PublishRequest) -> Result<u128> {
    let bad = |m: String| Err(HubError::InvalidMetadata(m));
    if let Err(e) = validate_model_name(&meta.name) {
        return bad(e.to_string());
    }
    if meta.description.len() > MAX_DESCRIPTION {
        return bad(format!("description is longer than {MAX_DESCRIPTION} bytes"));
    }
    if meta.license.len() > MAX_LICENSE {
        return bad(format!("license is longer than {MAX_LICENSE} bytes"));
    }
    if meta.tags.len() > MAX_TAGS {
        return bad(format!("at most {MAX_TAGS} tags, got {}", meta.tags.len()));
    }
    for tag in &meta.tags {
        if validate_model_name(tag).is_err() {
            return bad(format!("tag {tag:?}: use 1-64 lowercase letters, digits, '-', '_' or '.'"));
        }
    }
    match meta.price.parse::<u128>() {
        Ok(p) if meta.price.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => bad(format!("price {:?} is not a non-negative integer in base units", meta.price)),
    }
}

