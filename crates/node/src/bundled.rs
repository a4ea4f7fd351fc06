//! Models shipped inside the binary, so `verinet up` has something to call at once.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy_signer::SignerSync;
use bytes::Bytes;
use tracing::{info, warn};
use verinet_hub::{Hub, HubError};
use verinet_primitives::{ModelId, ModelRef, PublishAuth, wire::PublishRequest};

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

/// Publishes each bundled model that is not there yet, signed by the node key.
pub async fn publish_missing(hub: &Hub, key: &KeyFile) -> Result<()> {
    for m in ALL {
        let version: semver::Version = m.version.parse().map_err(|e| crate::NodeError::Config(format!("{e}")))?;
        let r = ModelRef::Version(m.name.into(), version.clone());
        match hub.resolve(&r).await {
            Ok(_) => continue,
            Err(HubError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let id = ModelId::of_bytes(m.bytes);
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
            kind: None,
        };
        let staged = hub.stage(futures_once(m.bytes)).await?;
        match hub.publish(meta, staged).await {
            Ok(v) => info!(model = %format!("{}@{}", v.name, v.version), sha256 = %v.id, "bundled model published"),
            // A shared database where another node owns the name, or published it a moment
            // ago while we were starting: what is there stands.
            Err(e @ (HubError::NotOwner { .. } | HubError::VersionExists { .. })) => {
                warn!(error = %e, "bundled model not published")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn futures_once(bytes: &'static [u8]) -> impl futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> {
    futures::stream::once(async move { Ok(Bytes::from_static(bytes)) })
}
