use thiserror::Error;

/// Result alias for node wiring.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Failures while building or serving a node.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] verinet_store::StoreError),
    /// The runtime could not be created.
    #[error(transparent)]
    Runtime(#[from] verinet_runtime::RuntimeError),
    /// The ledger refused or failed (recovery at start).
    #[error(transparent)]
    Ledger(#[from] verinet_ledger::LedgerError),
    /// Publishing a bundled model failed.
    #[error(transparent)]
    Hub(#[from] verinet_hub::HubError),
    /// The node key could not be read or written.
    #[error("node key: {0}")]
    Key(String),
    /// Another process holds the data dir.
    #[error("data dir: {0}")]
    DataDirInUse(String),
    /// Socket or file I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
