//! Text <-> token ids for a GGUF model, from its own metadata: a byte-level BPE tokenizer
//! (vocabulary, merges, control tokens) and its Jinja chat template.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Content;
use serde::{Deserialize, Serialize};
use tokenizers::{
    AddedToken, Tokenizer,
    models::bpe::BPE,
    pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence, PreTokenizerWrapper},
};

use crate::gguf::{md, md_str};
use crate::{LlmError, Result};

/// One chat message (OpenAI's shape, text content only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A model's tokenizer and chat template.
pub struct TextCodec {
    tokenizer: Tokenizer,
    /// Bytes of each token's text (control tokens: empty; they are never shown).
    token_bytes: Vec<Vec<u8>>,
    /// Tokens that end a generation (EOS and the template's end-of-turn).
    stop_ids: Vec<u32>,
    bos: Option<u32>,
    add_bos: bool,
    template: Option<String>,
}

impl TextCodec {
    /// Builds the codec from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf(ct: &Content) -> Result<Self> {
        let bad = |m: String| LlmError::InvalidModel(format!("GGUF tokenizer: {m}"));
        let strings = |key: &str| -> Result<Vec<String>> {
            md(ct, key)?
                .to_vec()
                .map_err(|e| bad(e.to_string()))?
                .iter()
                .map(|v| v.to_string().cloned().map_err(|e| bad(format!("{key}: {e}"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec().map_err(|e| bad(e.to_string()))?.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| bad(format!("merge {m:?}"))))
            .collect::<Result<_>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| bad(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        // GPT-2 byte-level BPE; the `smollm`/`starcoder` pre-tokenizers of llama.cpp split every
        // digit first.
        let pre = md_str(ct, "tokenizer.ggml.pre").unwrap_or_default();
        let byte_level = ByteLevel::new(false, false, true);
        if ["smollm", "starcoder", "refact", "codeshell"].contains(&pre.as_str()) {
            tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(byte_level),
            ]))));
        } else {
            tokenizer.with_pre_tokenizer(Some(byte_level));
        }
        // Control tokens (<|im_start|>, <|endoftext|>, ...) are matched whole in the text.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(s, t)| AddedToken::from(s.clone(), *t == 3))
            .collect();
        tokenizer.add_special_tokens(specials).map_err(|e| bad(e.to_string()))?;

        let unbyte = byte_decoder();
        let token_bytes = tokens
            .iter()
            .zip(&types)
            .map(|(s, t)| match t {
                3 => Vec::new(),
                4 => s.as_bytes().to_vec(),
                _ => s.chars().map(|c| unbyte.get(&c).copied().unwrap_or(b'?')).collect(),
            })
            .collect();
        let id = |key: &str| ct.metadata.get(key).and_then(|v| v.to_u32().ok());
        let eos = id("tokenizer.ggml.eos_token_id").ok_or_else(|| bad("no eos_token_id".into()))?;
        let mut stop_ids = vec![eos];
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop_ids.extend(id(key));
        }
        // ChatML ends a turn with <|im_end|>, whatever the file calls EOS.
        let template = md_str(ct, "tokenizer.chat_template");
        if template.as_deref().is_some_and(|t| t.contains("<|im_end|>")) {
            stop_ids.extend(tokens.iter().position(|s| s == "<|im_end|>").map(|i| i as u32));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let add_bos = ct.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        Ok(Self { tokenizer, token_bytes, stop_ids, bos: id("tokenizer.ggml.bos_token_id"), add_bos, template })
    }

    /// Token ids of `text`, control tokens written in it matched whole (as llama.cpp does for
    /// a templated prompt), with BOS first when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| LlmError::Input(format!("tokenizer: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos
            && let Some(b) = self.bos
        {
            ids.push(b);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes a token stands for (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], |b| b.as_slice())
    }

    /// The text of `ids` (control tokens dropped, invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether `id` ends a generation.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    /// Renders `messages` with the model's chat template and the generation prompt appended.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.template.as_deref().ok_or_else(|| LlmError::Input("this model has no chat template; use /v1/completions".into()))?;
        let mut env = minijinja::Environment::new();
        env.add_template("chat", template).map_err(|e| LlmError::InvalidModel(format!("chat template: {e}")))?;
        env.add_function("raise_exception", |m: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, m))
        });
        let bos = self.bos.map(|b| self.decode_special(b)).unwrap_or_default();
        let eos = self.stop_ids.first().map(|&e| self.decode_special(e)).unwrap_or_default();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages, add_generation_prompt => true, bos_token => bos, eos_token => eos
                })
            })
            .map_err(|e| LlmError::Input(format!("chat template: {e}")))
    }

    fn decode_special(&self, id: u32) -> String {
        self.tokenizer.id_to_token(id).unwrap_or_default()
    }
}

/// GPT-2's byte <-> printable-character table, inverted: the character each byte was written as.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable.into_iter().zip(chars).filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b as u8))).collect()
}
