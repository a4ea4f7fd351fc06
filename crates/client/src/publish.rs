use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use verinet_primitives::{ModelId, PublishAuth, wire::PublishRequest};

use crate::{ClientError, Result};

/// Fills in owner, timestamp, sha256 and the EIP-191 signature of `meta` for bytes `id`.
pub fn sign_publish(mut meta: PublishRequest, id: ModelId, signer: &PrivateKeySigner, timestamp: u64) -> Result<PublishRequest> {
    let auth = PublishAuth { name: meta.name.clone(), version: meta.version.clone(), sha256: id, timestamp };
    let sig = signer.sign_message_sync(auth.message().as_bytes()).map_err(|e| ClientError::Sign(e.to_string()))?;
    meta.owner = signer.address();
    meta.timestamp = timestamp;
    meta.sha256 = Some(id);
    meta.signature = format!("0x{}", hex::encode(sig.as_bytes()));
    Ok(meta)
}
