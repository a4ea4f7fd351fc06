use async_trait::async_trait;
use serde::{Deserialize, Serialize, Serializer};
use verinet_primitives::{Address, IoSignature, ModelId, wire::TokenPrices};

use crate::Result;

/// Published model versions, their owners and usage counters.
///
/// Names are owned by their first publisher; versions are immutable once published. Held as
/// `Arc<dyn ModelStore>`; [`crate::SqlStore`] implements it for SQLite and PostgreSQL, and the
/// `conformance` module (feature `test-utils`) holds the behaviour every implementation must show.
#[async_trait]
pub trait ModelStore: Send + Sync {
    /// Publishes a version, atomically: if the name exists with a different owner ->
    /// [`StoreError::NotOwner`](crate::StoreError::NotOwner); if `name@version` exists ->
    /// [`StoreError::VersionExists`](crate::StoreError::VersionExists); else inserts it.
    ///
    /// Race-free under concurrent publishers: of two first publishers of a new name exactly one
    /// wins, the other gets `NotOwner` (or `VersionExists` if both are the same owner and version).
    /// Refuses names that break [`verinet_primitives::validate_model_name`] with `Invalid`.
    async fn insert_version(&self, v: &NewModelVersion) -> Result<ModelVersion>;

    /// The owner of a name, if it was ever published.
    async fn owner(&self, name: &str) -> Result<Option<Address>>;

    /// One exact version.
    async fn version(&self, name: &str, version: &semver::Version) -> Result<Option<ModelVersion>>;

    /// The version with the highest semver precedence (`1.10.0 > 1.9.0`, `2.0.0-rc.1 < 2.0.0`),
    /// whatever the publish order.
    async fn latest(&self, name: &str) -> Result<Option<ModelVersion>>;

    /// All versions of a name, highest semver first; empty if the name is unknown.
    async fn versions(&self, name: &str) -> Result<Vec<ModelVersion>>;

    /// A version with exactly these bytes; the most recently published one if several share them.
    async fn by_id(&self, id: &ModelId) -> Result<Option<ModelVersion>>;

    /// One page of models matching `q`, each summarised by its latest version.
    async fn list(&self, q: &ModelQuery) -> Result<Vec<ModelSummary>>;

    /// Counts one call of `name@version` at `at_ms`: `ok` adds to `calls`, otherwise to
    /// `failures`; `last_called_at_ms` keeps the latest time seen. Increments are atomic, so
    /// concurrent calls are never lost. [`StoreError::NotFound`](crate::StoreError::NotFound) if
    /// the version does not exist.
    async fn record_call(&self, name: &str, version: &semver::Version, ok: bool, at_ms: i64) -> Result<()> {
        self.record_calls(name, version, u64::from(ok), u64::from(!ok), at_ms).await
    }

    /// Adds a batch of counts to `name@version` in one atomic statement (callers buffer usage
    /// and flush it, so the request path never waits for a durable write).
    async fn record_calls(&self, name: &str, version: &semver::Version, calls: u64, failures: u64, last_at_ms: i64)
    -> Result<()>;

    /// Publications made by other processes sharing this store, reported as they commit, for
    /// caches of resolved models. `None` when no other process writes the store (a SQLite file
    /// is one node's): what this process publishes is then every change there is.
    ///
    /// The stream starts with [`ModelWatch::Listening`]; a cache may trust itself only between
    /// a `Listening` and the next [`ModelWatch::Lost`]. It ends when the receiver is dropped.
    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<ModelWatch>> {
        None
    }
}

/// What [`ModelStore::watch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelWatch {
    /// From now on every publication is reported (changes before it may have been missed).
    Listening,
    /// A version of `name` was published.
    Published {
        /// The model's name.
        name: String,
    },
    /// The watch lost its connection: publications may be missed until the next `Listening`.
    Lost,
}

/// A version about to be published, as checked and signed by the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewModelVersion {
    /// Model name (see [`verinet_primitives::validate_model_name`]).
    pub name: String,
    /// Semver version.
    pub version: semver::Version,
    /// Content id of the ONNX bytes.
    pub id: ModelId,
    /// Size of the ONNX bytes.
    pub size: u64,
    /// The publishing (and, for a new name, owning) address.
    pub owner: Address,
    /// Free text.
    pub description: String,
    /// Search tags, in the publisher's order.
    pub tags: Vec<String>,
    /// SPDX license id or short text.
    pub license: String,
    /// Creator royalty per call in base units (18 decimals).
    pub price: u128,
    /// Declared inputs and outputs.
    pub signature: IoSignature,
    /// The owner's EIP-191 publish signature, hex.
    pub publish_signature: String,
    /// Verification policy JSON (`ModelPolicy`), if set at publish.
    pub policy: Option<String>,
    /// Per-token royalties of a language or embedding model, if set at publish.
    pub token_prices: Option<TokenPrices>,
    /// Publish time, unix milliseconds.
    pub published_at_ms: i64,
}

/// A published version with its usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelVersion {
    /// Model name.
    pub name: String,
    /// Semver version.
    pub version: semver::Version,
    /// Content id of the ONNX bytes.
    pub id: ModelId,
    /// Size of the ONNX bytes.
    pub size: u64,
    /// Owner of the name.
    pub owner: Address,
    /// Free text.
    pub description: String,
    /// Search tags, in the publisher's order.
    pub tags: Vec<String>,
    /// SPDX license id or short text.
    pub license: String,
    /// Creator royalty per call in base units (18 decimals); serialised as a decimal string.
    #[serde(serialize_with = "decimal_string")]
    pub price: u128,
    /// Declared inputs and outputs.
    pub signature: IoSignature,
    /// The owner's EIP-191 publish signature, hex.
    pub publish_signature: String,
    /// Verification policy JSON (`ModelPolicy`), if set at publish.
    pub policy: Option<String>,
    /// Per-token royalties of a language or embedding model, if set at publish.
    pub token_prices: Option<TokenPrices>,
    /// Publish time, unix milliseconds.
    pub published_at_ms: i64,
    /// Calls of this version.
    pub usage: Usage,
}

impl ModelVersion {
    /// The stored record of a fresh version: the same fields, no usage yet.
    pub fn new(v: &NewModelVersion) -> Self {
        Self {
            name: v.name.clone(),
            version: v.version.clone(),
            id: v.id,
            size: v.size,
            owner: v.owner,
            description: v.description.clone(),
            tags: v.tags.clone(),
            license: v.license.clone(),
            price: v.price,
            signature: v.signature.clone(),
            publish_signature: v.publish_signature.clone(),
            policy: v.policy.clone(),
            token_prices: v.token_prices,
            published_at_ms: v.published_at_ms,
            usage: Usage::default(),
        }
    }
}

/// Usage counters of a version, or summed over a model's versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Successful calls.
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Latest call (successful or not), unix milliseconds.
    pub last_called_at_ms: Option<i64>,
}

/// One model in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelSummary {
    /// Model name.
    pub name: String,
    /// Owner of the name.
    pub owner: Address,
    /// The version with the highest semver precedence.
    pub latest: ModelVersion,
    /// Number of published versions.
    pub versions: u32,
    /// Usage summed over all versions (`last_called_at_ms`: the latest of them).
    pub usage: Usage,
}

/// Order of a listing; ties are broken by name (byte order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSort {
    /// Most successful calls (summed over versions) first. Usage is the headline.
    #[default]
    Usage,
    /// By name.
    Name,
    /// Most recently published version first.
    Newest,
}

/// Which models [`ModelStore::list`] returns.
///
/// `q` and `tag` look at each model's latest version only: a listing shows that version, so a
/// match on text the latest version no longer carries would be invisible to the reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelQuery {
    /// Case-insensitive substring of the name, description or a tag (`%` and `_` are literal).
    pub q: Option<String>,
    /// Exact (case-sensitive) tag.
    pub tag: Option<String>,
    /// Order.
    pub sort: ModelSort,
    /// Page size: 0 means [`ModelQuery::DEFAULT_LIMIT`], larger than [`ModelQuery::MAX_LIMIT`]
    /// is capped.
    pub limit: u32,
    /// Models to skip.
    pub offset: u32,
}

impl ModelQuery {
    /// Page size when none is given.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size.
    pub const MAX_LIMIT: u32 = 500;

    /// The page size actually used.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

impl Default for ModelQuery {
    fn default() -> Self {
        Self { q: None, tag: None, sort: ModelSort::default(), limit: Self::DEFAULT_LIMIT, offset: 0 }
    }
}

/// Amounts travel as decimal strings: JSON numbers lose precision past 2^53.
fn decimal_string<S: Serializer>(v: &u128, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_caps() {
        let with = |limit| ModelQuery { limit, ..ModelQuery::default() }.effective_limit();
        assert_eq!(ModelQuery::default().effective_limit(), 50);
        assert_eq!(with(0), 50);
        assert_eq!(with(7), 7);
        assert_eq!(with(500), 500);
        assert_eq!(with(501), 500);
        assert_eq!(with(u32::MAX), 500);
    }

    #[test]
    fn sort_and_query_parse_from_snake_case() {
        let q: ModelQuery = serde_json::from_str(r#"{"q":"digits","sort":"newest"}"#).unwrap();
        assert_eq!((q.q.as_deref(), q.sort, q.limit), (Some("digits"), ModelSort::Newest, 50));
    }

    #[test]
    fn price_serialises_as_decimal_string() {
        let v = crate::conformance::sample("p", "1.0.0", Address::ZERO);
        let mut v = ModelVersion::new(&v);
        v.price = u128::MAX;
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["price"], u128::MAX.to_string());
        assert_eq!(json["id"], v.id.to_string());
    }
}
