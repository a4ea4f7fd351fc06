/// Every way loading or running a language model can fail.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The bytes are not a model this engine can run (bad or truncated GGUF, bundle or
    /// safetensors, unsupported architecture or tokenizer); the reason is for the publisher.
    #[error("{0}")]
    InvalidModel(String),
    /// The request does not fit the model (bad messages, unknown role, a template failure).
    #[error("{0}")]
    Input(String),
    /// The prompt and the tokens asked for do not fit the context window.
    #[error("the prompt has {prompt} tokens and {max_tokens} more were asked for; the context window is {context} tokens")]
    ContextExceeded {
        /// Prompt tokens.
        prompt: usize,
        /// Completion tokens asked for.
        max_tokens: usize,
        /// The limit.
        context: usize,
    },
    /// Too many sequences are running or waiting.
    #[error("the model is at capacity ({0} sequences running or queued)")]
    Overloaded(usize),
    /// The engine failed (a tensor operation); the request may be retried elsewhere.
    #[error("engine: {0}")]
    Engine(String),
}

impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Engine(e.to_string())
    }
}

/// Results of this crate.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
