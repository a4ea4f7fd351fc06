//! Serving a language model: sequences are admitted into a running batch, prefilled one by
//! one, then advanced together one token per step (continuous batching), each with its own KV
//! cache sized for its prompt plus the tokens it may generate. The loop runs on the blocking
//! pool while there is work and ends when there is none. A sequence whose receiver is dropped
//! (the client went away) leaves the batch at the next step.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::{KvCache, Llama, LlmError, LlmInfo, Result, SamplingParams, TextCodec, inspect_gguf, sample};

/// Limits of one served language model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmConfig {
    /// Sequences advanced together in one step.
    pub max_batch: usize,
    /// Sequences waiting for a place in the batch before new ones are refused (503).
    pub max_waiting: usize,
    /// Context window served (prompt + completion), at most the model's own.
    pub max_context: usize,
    /// Most tokens one request may ask for.
    pub max_tokens: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self { max_batch: 8, max_waiting: 64, max_context: 2048, max_tokens: 1024 }
    }
}

/// A loaded GGUF model: weights, tokenizer, template, facts.
pub struct LanguageModel {
    llama: Llama,
    codec: TextCodec,
    info: LlmInfo,
}

impl LanguageModel {
    /// Checks and loads GGUF bytes.
    pub fn load(bytes: &[u8]) -> Result<Self> {
        let (ct, info) = inspect_gguf(bytes)?;
        let codec = TextCodec::from_gguf(&ct)?;
        let llama = Llama::load(&ct, bytes)?;
        Ok(Self { llama, codec, info })
    }

    /// Tokenizer and chat template.
    pub fn codec(&self) -> &TextCodec {
        &self.codec
    }

    /// What the file says about itself.
    pub fn info(&self) -> &LlmInfo {
        &self.info
    }

    /// The network.
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    /// Logits `[output.len(), vocab]` at every output position of `prompt + output`, from one
    /// forward pass (teacher forcing): row `i` is what decided `output[i]`.
    pub fn teacher_forced_logits(&self, prompt: &[u32], output: &[u32]) -> Result<Tensor> {
        if prompt.is_empty() || output.is_empty() {
            return Err(LlmError::Input("teacher forcing needs a prompt and an output".into()));
        }
        let mut all = prompt.to_vec();
        all.extend_from_slice(&output[..output.len() - 1]);
        let mut cache = self.llama.new_cache(all.len());
        self.llama.forward_last(&all, &mut cache, output.len())
    }
}

/// One generation.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Strings that end the text (not included in it).
    pub stop: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// What a finished generation produced.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Every token drawn, the final end-of-turn token included.
    pub output_ids: Vec<u32>,
    /// The text (control tokens dropped, cut before a stop string).
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Time to the first token, ms (queue + prefill).
    pub first_token_ms: f64,
    /// Whole generation, ms.
    pub total_ms: f64,
}

/// Events of one generation, in order: text pieces as they become final, then `Done` (or
/// `Failed`).
#[derive(Debug, Clone)]
pub enum GenEvent {
    /// New text (valid UTF-8; text that might begin a stop string is held back), with the
    /// tokens it completes.
    Text(Piece),
    /// The end.
    Done(Generated),
    /// The engine failed.
    Failed(String),
}

/// A piece of streamed text and the output tokens whose text it completes: every token of a
/// stream is in exactly one piece, in order, once all of its bytes have been sent (a token
/// that adds no text, such as end-of-turn, with the piece at or after it). What a client was
/// sent is therefore a count of tokens, which is what a stream cut short is charged for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piece {
    /// The text.
    pub text: String,
    /// The tokens it completes (possibly none; its first bytes may end a token sent before).
    #[serde(default)]
    pub ids: Vec<u32>,
}

struct Seq {
    req: GenRequest,
    tx: mpsc::UnboundedSender<GenEvent>,
    cache: Option<KvCache>,
    out: Vec<u32>,
    bytes: Vec<u8>,
    /// Text bytes after each output token.
    ends: Vec<usize>,
    sent: usize,
    /// Output tokens already sent in a piece.
    covered: usize,
    submitted: Instant,
    first_token_ms: f64,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Seq>,
    running: bool,
}

/// Continuous batching over one model.
pub struct Generator {
    model: Arc<LanguageModel>,
    config: LlmConfig,
    queue: Arc<Mutex<Queue>>,
}

impl Generator {
    /// Serves `model` within `config`.
    pub fn new(model: Arc<LanguageModel>, config: LlmConfig) -> Self {
        Self { model, config, queue: Arc::default() }
    }

    /// The model.
    pub fn model(&self) -> &Arc<LanguageModel> {
        &self.model
    }

    /// Context window served: the configured one, at most the model's.
    pub fn context(&self) -> usize {
        self.config.max_context.min(self.model.info.context_length)
    }

    /// The limits.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Checks that `prompt` plus `max_tokens` fit.
    pub fn check_fits(&self, prompt: usize, max_tokens: usize) -> Result<()> {
        let context = self.context();
        if prompt == 0 {
            return Err(LlmError::Input("the prompt is empty".into()));
        }
        if prompt + max_tokens > context {
            return Err(LlmError::ContextExceeded { prompt, max_tokens, context });
        }
        Ok(())
    }

    /// Queues a generation; its events arrive on the returned receiver. Dropping the receiver
    /// cancels it.
    pub fn submit(&self, req: GenRequest) -> Result<mpsc::UnboundedReceiver<GenEvent>> {
        self.check_fits(req.prompt.len(), req.max_tokens)?;
        if req.max_tokens == 0 {
            return Err(LlmError::Input("max_tokens must be at least 1".into()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let seq = Seq { req, tx, cache: None, out: Vec::new(), bytes: Vec::new(), ends: Vec::new(), sent: 0, covered: 0, submitted: Instant::now(), first_token_ms: 0.0 };
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.waiting.len() >= self.config.max_waiting {
                return Err(LlmError::Overloaded(q.waiting.len()));
            }
            q.waiting.push_back(seq);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let (model, queue, max_batch) = (self.model.clone(), self.queue.clone(), self.config.max_batch.max(1));
            tokio::task::spawn_blocking(move || run_loop(&model, &queue, max_batch));
        }
        Ok(rx)
    }
}

/// The batch loop: admit, prefill the newcomers, step everyone, until no work is left.
fn run_loop(model: &LanguageModel, queue: &Mutex<Queue>, max_batch: usize) {
    let mut active: Vec<Seq> = Vec::new();
    loop {
        let mut newcomers = Vec::new();
        {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            while active.len() + newcomers.len() < max_batch
                && let Some(s) = q.waiting.pop_front()
            {
                newcomers.push(s);
            }
            if active.is_empty() && newcomers.is_empty() {
                q.running = false;
                return;
            }
        }
        for mut s in newcomers {
            if s.tx.is_closed() {
                continue;
            }
            let mut cache = model.llama.new_cache(s.req.prompt.len() + s.req.max_tokens);
            match model.llama.forward(&s.req.prompt, &mut cache, false).and_then(|l| Ok(l.to_vec1::<f32>()?)) {
                Ok(logits) => {
                    s.cache = Some(cache);
                    s.first_token_ms = s.submitted.elapsed().as_secs_f64() * 1e3;
                    if !advance(model, &mut s, &logits) {
                        active.push(s);
                    }
                }
                Err(e) => fail(&s, &e),
            }
        }
        active.retain(|s| !s.tx.is_closed());
        if active.is_empty() {
            continue;
        }
        let tokens: Vec<u32> = active.iter().map(|s| *s.out.last().unwrap_or(&0)).collect();
        let mut caches: Vec<&mut KvCache> = active.iter_mut().filter_map(|s| s.cache.as_mut()).collect();
        match model.llama.step(&tokens, &mut caches).and_then(|l| Ok(l.to_vec2::<f32>()?)) {
            Ok(rows) => {
                let mut next = Vec::with_capacity(active.len());
                for (mut s, logits) in active.drain(..).zip(rows) {
                    if !advance(model, &mut s, &logits) {
                        next.push(s);
                    }
                }
                active = next;
            }
            Err(e) => {
                for s in active.drain(..) {
                    fail(&s, &e);
                }
            }
        }
    }
}

fn fail(s: &Seq, e: &LlmError) {
    warn!(error = %e, "generation failed");
    let _ = s.tx.send(GenEvent::Failed(e.to_string()));
}

/// Draws the next token of `s` from `logits` and sends what became final. True when `s` ended.
fn advance(model: &LanguageModel, s: &mut Seq, logits: &[f32]) -> bool {
    let id = sample(logits, &s.req.sampling, s.out.len() as u32);
    s.out.push(id);
    let (finish, valid, stop_at) = end_after(&model.codec, &s.req, id, s.out.len(), &mut s.bytes);
    s.ends.push(s.bytes.len());
    let text = std::str::from_utf8(&s.bytes[..valid]).unwrap_or_default();
    match finish {
        None => {
            // Hold back what could still turn out to begin a stop string.
            let hold = s.req.stop.iter().map(|p| p.len().saturating_sub(1)).max().unwrap_or(0);
            let mut upto = valid.saturating_sub(hold).max(s.sent);
            while !text.is_char_boundary(upto) {
                upto -= 1;
            }
            if upto > s.sent {
                let done = s.ends[s.covered..].iter().take_while(|&&end| end <= upto).count();
                let ids = s.out[s.covered..s.covered + done].to_vec();
                s.covered += done;
                let _ = s.tx.send(GenEvent::Text(Piece { text: text[s.sent..upto].to_owned(), ids }));
                s.sent = upto;
            }
            false
        }
        Some(finish) => {
            let full = match stop_at {
                Some(cut) => text[..cut].to_owned(),
                None => String::from_utf8_lossy(&s.bytes).into_owned(),
            };
            // The last piece completes every token left (those after a stop string too).
            let rest = full.get(s.sent..).unwrap_or_default();
            if !rest.is_empty() || s.covered < s.out.len() {
                let _ = s.tx.send(GenEvent::Text(Piece { text: rest.to_owned(), ids: s.out[s.covered..].to_vec() }));
            }
            let done = Generated {
                output_ids: std::mem::take(&mut s.out),
                text: full,
                finish,
                first_token_ms: s.first_token_ms,
                total_ms: s.submitted.elapsed().as_secs_f64() * 1e3,
            };
            let _ = s.tx.send(GenEvent::Done(done));
            true
        }
    }
}

/// Whether a sequence ends with its `len`-th token `id`, and why: the rule the engine applies
/// and [`crate::check_completion`] replays. Appends the token's bytes to `bytes` (the text so
/// far; an end-of-turn token adds none) and returns the finish, the length of the valid UTF-8
/// prefix of `bytes` and where the first stop string begins in it.
pub(crate) fn end_after(codec: &TextCodec, req: &GenRequest, id: u32, len: usize, bytes: &mut Vec<u8>) -> (Option<Finish>, usize, Option<usize>) {
    let stop_token = codec.is_stop(id);
    if !stop_token {
        bytes.extend_from_slice(codec.token_bytes(id));
    }
    let valid = match std::str::from_utf8(bytes) {
        Ok(t) => t.len(),
        Err(e) => e.valid_up_to(),
    };
    let text = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let stop_at = req.stop.iter().filter(|p| !p.is_empty()).filter_map(|p| text.find(p.as_str())).min();
    let finish = if stop_token || stop_at.is_some() {
        Some(Finish::Stop)
    } else if len >= req.max_tokens {
        Some(Finish::Length)
    } else {
        None
    };
    (finish, valid, stop_at)
}
