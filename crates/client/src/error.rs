use thiserror::Error;

/// Result alias for the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What went wrong talking to a node.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The node answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
    },
    /// Connection or protocol failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A body did not decode.
    #[error("decode: {0}")]
    Decode(String),
    /// Local file I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Signing failed.
    #[error("sign: {0}")]
    Sign(String),
    /// Bytes fetched by content id hash to something else: refused.
    #[error("refused: the bytes served for {expected} hash to {got}")]
    HashMismatch {
        /// The id asked for.
        expected: String,
        /// What the bytes hash to.
        got: String,
    },
}

impl ClientError {
    /// The API error code, if this is an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if this is an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
