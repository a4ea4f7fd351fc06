use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The content address of a model: the SHA-256 of its exact ONNX bytes.
///
/// Displayed and parsed as `sha256:<64 lowercase hex>`, so `sha256sum model.onnx` identifies it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId([u8; 32]);

impl ModelId {
    /// Text prefix of every model id.
    pub const PREFIX: &'static str = "sha256:";

    /// Wraps a raw digest.
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// Hashes a whole byte slice (use [`Sha256Hasher`] for streams).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The raw digest.
    pub const fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-digit lowercase hex digest without the prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the bare 64-digit hex form (as used in `/v1/blobs/{sha256}`), with or without prefix.
    pub fn parse_lenient(s: &str) -> Result<Self> {
        let hex_part = s.strip_prefix(Self::PREFIX).unwrap_or(s);
        let invalid = || Error::InvalidModelId { got: s.to_owned() };
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut out).map_err(|_| invalid())?;
        Ok(Self(out))
    }
}

impl FromStr for ModelId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if !s.starts_with(Self::PREFIX) {
            return Err(Error::InvalidModelId { got: s.to_owned() });
        }
        Self::parse_lenient(s)
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ModelId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 for streamed uploads; finishes into a [`ModelId`].
#[derive(Default, Clone)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Finishes the digest.
    pub fn finish(self) -> ModelId {
        ModelId(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum_of_known_vector() {
        // `printf abc | sha256sum`
        let id = ModelId::of_bytes(b"abc");
        assert_eq!(
            id.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Sha256Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), id);
    }

    #[test]
    fn parses_and_rejects() {
        let id = ModelId::of_bytes(b"x");
        assert_eq!(id.to_string().parse::<ModelId>().unwrap(), id);
        assert_eq!(ModelId::parse_lenient(&id.hex()).unwrap(), id);
        assert_eq!(ModelId::parse_lenient(&id.hex().to_uppercase()).unwrap(), id);
        assert!(id.hex().parse::<ModelId>().is_err(), "prefix is required in strict form");
        assert!("sha256:abc".parse::<ModelId>().is_err());
        assert!(format!("sha256:{}", "g".repeat(64)).parse::<ModelId>().is_err());
        assert!(format!("sha256:{}é", "a".repeat(63)).parse::<ModelId>().is_err());
    }
}
