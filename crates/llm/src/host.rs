//! The language models one process holds: loaded on first use (on the blocking pool, once
//! even when many requests ask at the same time), kept while used, the least recently used
//! dropped past a count limit.
//!
//! A gateway needs only tokenizers (to count and check a request before it costs anything); an
//! executor needs the weights. Both come from here, keyed by the model's sha256.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};

use crate::{EncoderTokenizer, Embedder, Generator, LanguageModel, LlmConfig, LlmError, Result, TextCodec, inspect_gguf};

/// A model's content id (sha256 digest).
pub type ModelKey = [u8; 32];

/// Language models and tokenizers held by this process.
pub struct LlmHost {
    config: LlmConfig,
    generators: Cache<Generator>,
    embedders: Cache<Embedder>,
    codecs: Cache<TextCodec>,
    tokenizers: Cache<EncoderTokenizer>,
    /// Embedding batches run at once (each one uses every core it can).
    embed_slots: Arc<Semaphore>,
}

impl LlmHost {
    /// Holds at most `max_models` loaded models of each kind, served within `config`.
    pub fn new(config: LlmConfig, max_models: usize) -> Self {
        Self {
            config,
            generators: Cache::new(max_models),
            embedders: Cache::new(max_models),
            codecs: Cache::new(max_models * 4),
            tokenizers: Cache::new(max_models * 4),
            embed_slots: Arc::new(Semaphore::new(2)),
        }
    }

    /// The limits every generator is served within.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The generator of GGUF model `key`; `load` gives its bytes if it is not loaded yet.
    pub async fn generator<F>(&self, key: ModelKey, load: F) -> Result<Arc<Generator>>
    where
        F: Future<Output = Result<Bytes>>,
    {
        let config = self.config;
        self.generators
            .get(key, load, move |b| Ok(Generator::new(Arc::new(LanguageModel::load(&b)?), config)))
            .await
    }

    /// The encoder of bundle `key`.
    pub async fn embedder<F>(&self, key: ModelKey, load: F) -> Result<Arc<Embedder>>
    where
        F: Future<Output = Result<Bytes>>,
    {
        self.embedders.get(key, load, |b| Embedder::load(&b)).await
    }

    /// The tokenizer and chat template of GGUF model `key` (metadata only, no weights).
    pub async fn codec<F>(&self, key: ModelKey, load: F) -> Result<Arc<TextCodec>>
    where
        F: Future<Output = Result<Bytes>>,
    {
        self.codecs.get(key, load, |b| TextCodec::from_gguf(&inspect_gguf(&b)?.0)).await
    }

    /// The tokenizer of encoder bundle `key` (no weights).
    pub async fn encoder_tokenizer<F>(&self, key: ModelKey, load: F) -> Result<Arc<EncoderTokenizer>>
    where
        F: Future<Output = Result<Bytes>>,
    {
        self.tokenizers.get(key, load, |b| EncoderTokenizer::load(&b)).await
    }

    /// Embeds token id lists on the blocking pool, a bounded number of batches at once.
    pub async fn embed(&self, embedder: Arc<Embedder>, ids: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>> {
        let _slot = self.embed_slots.clone().acquire_owned().await.map_err(|e| LlmError::Engine(e.to_string()))?;
        tokio::task::spawn_blocking(move || embedder.embed(&ids))
            .await
            .map_err(|e| LlmError::Engine(format!("embedding task: {e}")))?
    }
}

/// A value being loaded or loaded, shared by everyone who asked for it.
type Slot<T> = Arc<OnceCell<Arc<T>>>;

/// Loaded values by key, most recently used last.
struct Cache<T> {
    max: usize,
    slots: Mutex<VecDeque<(ModelKey, Slot<T>)>>,
}

impl<T: Send + Sync + 'static> Cache<T> {
    fn new(max: usize) -> Self {
        Self { max: max.max(1), slots: Mutex::new(VecDeque::new()) }
    }

    async fn get<F, B>(&self, key: ModelKey, load: F, build: B) -> Result<Arc<T>>
    where
        F: Future<Output = Result<Bytes>>,
        B: FnOnce(Bytes) -> Result<T> + Send + 'static,
    {
        let cell = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let cell = match slots.iter().position(|(k, _)| *k == key) {
                Some(i) => slots.remove(i).map(|(_, c)| c).unwrap_or_default(),
                None => Arc::default(),
            };
            slots.push_back((key, cell.clone()));
            while slots.len() > self.max {
                slots.pop_front();
            }
            cell
        };
        let got = cell
            .get_or_try_init(|| async move {
                let bytes = load.await?;
                let built = tokio::task::spawn_blocking(move || build(bytes))
                    .await
                    .map_err(|e| LlmError::Engine(format!("loading task: {e}")))??;
                Ok::<_, LlmError>(Arc::new(built))
            })
            .await;
        if got.is_err() {
            // A failed load is not cached: the next request tries again.
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.retain(|(k, c)| !(*k == key && Arc::ptr_eq(c, &cell)));
        }
        got.cloned()
    }
}
