use alloy_primitives::{Address, Signature};
use serde::{Deserialize, Serialize};

use crate::{Error, ModelId, Result};

/// The owner's authorisation to publish `name@version` with exactly the bytes `sha256`.
///
/// The owner signs [`PublishAuth::message`] with EIP-191 (`personal_sign`), so any Ethereum
/// wallet can produce it. The first publisher of a name owns it; later versions must be signed
/// by the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAuth {
    /// Model name.
    pub name: String,
    /// Semver version being published.
    pub version: semver::Version,
    /// Content id of the bytes.
    pub sha256: ModelId,
    /// Unix seconds when signed; the hub refuses stale or future timestamps.
    pub timestamp: u64,
}

impl PublishAuth {
    /// The exact text that is signed (EIP-191 prefixes it with `\x19Ethereum Signed Message:\n<len>`).
    pub fn message(&self) -> String {
        format!(
            "verinet model publish\nname: {}\nversion: {}\nsha256: {}\ntimestamp: {}",
            self.name, self.version, self.sha256, self.timestamp
        )
    }

    /// Recovers the signer of `signature` (65 bytes, hex with or without `0x`) over this message.
    pub fn recover_signer(&self, signature: &str) -> Result<Address> {
        let hex_sig = signature.strip_prefix("0x").unwrap_or(signature);
        let bytes = hex::decode(hex_sig).map_err(|e| Error::InvalidSignature(format!("not hex: {e}")))?;
        if bytes.len() != 65 {
            return Err(Error::InvalidSignature(format!("expected 65 bytes, got {}", bytes.len())));
        }
        let sig = Signature::try_from(bytes.as_slice()).map_err(|e| Error::InvalidSignature(e.to_string()))?;
        sig.recover_address_from_msg(self.message().as_bytes())
            .map_err(|e| Error::InvalidSignature(e.to_string()))
    }
}
