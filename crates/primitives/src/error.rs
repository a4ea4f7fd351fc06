use thiserror::Error;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from parsing or validating primitive values. Every variant is a caller mistake.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A model id was not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid model id {got:?}: expected sha256:<64 hex digits>")]
    InvalidModelId {
        /// The offending text.
        got: String,
    },
    /// A model name broke the naming rules.
    #[error("invalid model name {name:?}: {reason}")]
    InvalidModelName {
        /// The offending name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A version was not semver.
    #[error("invalid version {got:?}: {reason}")]
    InvalidVersion {
        /// The offending text.
        got: String,
        /// The semver parser's complaint.
        reason: String,
    },
    /// A dtype name was not one verinet knows.
    #[error("unknown dtype {got:?}")]
    UnknownDType {
        /// The offending name.
        got: String,
    },
    /// A tensor's shape and data disagree, or its data is malformed.
    #[error("invalid tensor: {0}")]
    InvalidTensor(String),
    /// A signature could not be parsed or recovered.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// An amount of tokens was malformed or out of range.
    #[error("invalid amount {0}")]
    InvalidAmount(String),
}
