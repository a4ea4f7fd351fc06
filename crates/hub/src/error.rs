use thiserror::Error;
use verinet_primitives::Address;

/// Result alias for the hub.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// Hub failures. Variants other than `Store`, `Io` and `Internal` are the caller's doing.
#[derive(Debug, Error)]
pub enum HubError {
    /// Metadata broke a rule (name, version, tags, lengths, price).
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// The upload is larger than the configured limit.
    #[error("model is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Configured limit in bytes.
        limit: u64,
    },
    /// The upload had no bytes.
    #[error("model upload is empty")]
    Empty,
    /// The claimed sha256 differs from the bytes received.
    #[error("sha256 mismatch: metadata says {expected}, bytes hash to {got}")]
    HashMismatch {
        /// Hash of the received bytes.
        got: String,
        /// Hash claimed in metadata.
        expected: String,
    },
    /// The signature did not parse or was not made by the claimed owner.
    #[error("bad publish signature: {0}")]
    BadSignature(String),
    /// The signed timestamp is too far from the hub's clock.
    #[error("signature timestamp {timestamp} is more than {max_skew_secs}s away from now ({now})")]
    StaleSignature {
        /// Signed time.
        timestamp: u64,
        /// Hub time.
        now: u64,
        /// Allowed distance.
        max_skew_secs: u64,
    },
    /// The name belongs to someone else.
    #[error("model name {name:?} is owned by {owner}")]
    NotOwner {
        /// Model name.
        name: String,
        /// Its owner.
        owner: Address,
    },
    /// The bytes were first published by another key (a content hash has one owner).
    #[error("the bytes {id} were first published as {name:?} by {owner}; only that key may publish them (publish your own model, or ask the owner)")]
    ContentOwned {
        /// `sha256:<hex>`.
        id: String,
        /// The first publisher.
        owner: Address,
        /// The name it first published them under.
        name: String,
    },
    /// name@version was already published (versions are immutable).
    #[error("{name}@{version} is already published")]
    VersionExists {
        /// Model name.
        name: String,
        /// Version.
        version: String,
    },
    /// The bytes are not a model that runs: an invalid ONNX graph, GGUF file or encoder bundle.
    #[error("not a runnable model: {0}")]
    InvalidModel(String),
    /// No such model, version or blob.
    #[error("{0} not found")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] verinet_store::StoreError),
    /// Local I/O failed while staging.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The upload stream broke off (client disconnected or malformed body).
    #[error("upload interrupted: {0}")]
    Upload(String),
    /// Anything else that is our fault.
    #[error("internal: {0}")]
    Internal(String),
}
