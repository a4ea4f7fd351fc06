use verinet_primitives::Address;

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in a store.
///
/// The first variants are outcomes a caller acts on (refuse a publish, answer 404); the rest are
/// failures of the layer below or of the stored data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is owned by another address; only its owner may publish new versions.
    #[error("model {name:?} is owned by {owner}")]
    NotOwner {
        /// Model name.
        name: String,
        /// The address that owns it.
        owner: Address,
    },
    /// These bytes were first published by another key: a content hash has one owner.
    #[error("the bytes {id} were first published as {name:?} by {owner}; only that key may publish them")]
    ContentOwned {
        /// `sha256:<hex>`.
        id: String,
        /// The first publisher.
        owner: Address,
        /// The name it first published them under.
        name: String,
    },
    /// This exact version was published before; versions are immutable.
    #[error("model {name}@{version} already exists")]
    VersionExists {
        /// Model name.
        name: String,
        /// The version that exists.
        version: semver::Version,
    },
    /// A payer nonce (EIP-3009 authorization or session signature) was used before.
    #[error("nonce {nonce} of {payer} was already used")]
    NonceUsed {
        /// The payer.
        payer: Address,
        /// The nonce.
        nonce: String,
    },
    /// A balance would go below zero.
    #[error("insufficient {bucket} balance of {account}: needs {needed}, has {available}")]
    Insufficient {
        /// The account.
        account: Address,
        /// Which balance (`available`, `escrow`, `stake`).
        bucket: String,
        /// What the transaction takes.
        needed: u128,
        /// What is there.
        available: u128,
    },
    /// A paid request is not in the state the transaction expects (opened twice, closed twice).
    #[error("payment {request_id}: expected {expected}, found {found}")]
    PaymentState {
        /// Request id.
        request_id: String,
        /// Expected status.
        expected: String,
        /// Actual status (`absent` if there is no such payment, `present` if opened twice).
        found: String,
    },
    /// A spending session cannot pay: over its cap, expired, or unknown.
    #[error("spending session {id}: {reason}")]
    Budget {
        /// Session id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The app id is taken.
    #[error("app {0:?} already exists")]
    AppExists(String),
    /// The named thing (a model version, a blob) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A value the store refuses or cannot represent (bad name, number out of range).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A database URL the store does not understand.
    #[error("unsupported database url {url:?}: expected sqlite://... or postgres://...")]
    UnsupportedUrl {
        /// The URL, as given.
        url: String,
    },
    /// A group commit failed as a whole (the database refused the batch's COMMIT, or the
    /// writer stopped); nothing of the transaction was applied.
    #[error("ledger commit failed: {0}")]
    CommitFailed(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite ledger writer's connection failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Applying the schema migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(#[from] object_store::Error),
    /// Stored data does not parse back (a bug or a tampered database).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Local file I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
