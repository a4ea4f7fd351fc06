//! Sentence embeddings from a BERT-family encoder bundle (`model.safetensors`,
//! `tokenizer.json`, `config.json`): token embeddings mean-pooled over the attention mask and
//! L2-normalised (the sentence-transformers recipe of all-MiniLM-L6-v2 and its kin).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::{Bundle, LlmError, Result};

/// What the hub records about an embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedInfo {
    /// Vector size.
    pub dimensions: usize,
    /// Longest input in tokens (special tokens included).
    pub max_tokens: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Files of the bundle.
    pub files: Vec<String>,
}

/// The tokenizer of an encoder bundle and its input limit: all a gateway needs to count and
/// check inputs before anything runs (no weights loaded).
pub struct EncoderTokenizer {
    tokenizer: Tokenizer,
    max_tokens: usize,
}

impl EncoderTokenizer {
    /// Reads `tokenizer.json`, `config.json` and `sentence_bert_config.json` from a bundle.
    pub fn load(bytes: &[u8]) -> Result<Self> {
        let bundle = Bundle::parse(bytes)?;
        let (tokenizer, config, _) = Self::from_bundle(&bundle)?;
        Ok(Self { tokenizer, max_tokens: max_tokens(&bundle, &config) })
    }

    fn from_bundle<'a>(bundle: &Bundle<'a>) -> Result<(Tokenizer, Config, &'a [u8])> {
        let file = |n: &str| bundle.file(n).ok_or_else(|| LlmError::InvalidModel(format!("embedding bundle: {n} is missing")));
        let config: Config = serde_json::from_slice(file("config.json")?)
            .map_err(|e| LlmError::InvalidModel(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(file("tokenizer.json")?)
            .map_err(|e| LlmError::InvalidModel(format!("tokenizer.json: {e}")))?;
        // Inputs are measured and refused when too long, never silently cut.
        tokenizer.with_truncation(None).map_err(|e| LlmError::InvalidModel(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok((tokenizer, config, file("model.safetensors")?))
    }

    /// Most tokens one input may have.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids of each text (with the tokenizer's special tokens). Too long an input is an
    /// error naming it.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let enc = self.tokenizer.encode(t.as_str(), true).map_err(|e| LlmError::Input(format!("input[{i}]: {e}")))?;
                if enc.len() > self.max_tokens {
                    return Err(LlmError::Input(format!(
                        "input[{i}] has {} tokens; this model takes at most {}",
                        enc.len(),
                        self.max_tokens
                    )));
                }
                Ok(enc.get_ids().to_vec())
            })
            .collect()
    }
}

/// sentence-transformers' own limit when the bundle carries it, else the position table.
fn max_tokens(bundle: &Bundle<'_>, config: &Config) -> usize {
    let st_max = bundle
        .file("sentence_bert_config.json")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
        .map(|m| m as usize);
    st_max.unwrap_or(512).min(config.max_position_embeddings)
}

/// A loaded encoder.
pub struct Embedder {
    bert: BertModel,
    tokenizer: EncoderTokenizer,
    info: EmbedInfo,
}

impl Embedder {
    /// Checks and loads a bundle.
    pub fn load(bytes: &[u8]) -> Result<Self> {
        let bundle = Bundle::parse(bytes)?;
        let (tokenizer, config, weights) = EncoderTokenizer::from_bundle(&bundle)?;
        safetensors_check(weights)?;
        let vb = VarBuilder::from_slice_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| LlmError::InvalidModel(format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(vb.clone(), &config)
            .or_else(|_| BertModel::load(vb.pp("bert"), &config))
            .map_err(|e| LlmError::InvalidModel(format!("model.safetensors does not hold a BERT encoder for config.json: {e}")))?;
        let max_tokens = max_tokens(&bundle, &config);
        let info = EmbedInfo {
            dimensions: config.hidden_size,
            max_tokens,
            layers: config.num_hidden_layers,
            files: bundle.files.iter().map(|(e, _)| e.name.clone()).collect(),
        };
        Ok(Self { bert, tokenizer: EncoderTokenizer { tokenizer, max_tokens }, info })
    }

    /// Facts about it.
    pub fn info(&self) -> &EmbedInfo {
        &self.info
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> &EncoderTokenizer {
        &self.tokenizer
    }

    /// Token ids of each text; see [`EncoderTokenizer::tokenize`].
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.tokenize(texts)
    }

    /// One unit vector per input (a padded batch, masked).
    pub fn embed(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let n = ids.len();
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 || len == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let mut flat = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (i, row) in ids.iter().enumerate() {
            flat[i * len..i * len + row.len()].copy_from_slice(row);
            mask[i * len..i * len + row.len()].iter_mut().for_each(|m| *m = 1);
        }
        let dev = Device::Cpu;
        let input = Tensor::from_vec(flat, (n, len), &dev)?;
        let mask = Tensor::from_vec(mask, (n, len), &dev)?;
        let types = input.zeros_like()?;
        let hidden = self.bert.forward(&input, &types, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// A safetensors header that parses and whose tensors lie inside the file.
fn safetensors_check(bytes: &[u8]) -> Result<()> {
    let bad = |m: String| LlmError::InvalidModel(format!("model.safetensors: {m}"));
    if bytes.len() < 8 {
        return Err(bad("shorter than its header".into()));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) as usize;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or_else(|| bad(format!("header of {n} bytes runs past the file")))?;
    let v: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(format!("header: {e}")))?;
    let data = bytes.len() - 8 - n;
    for (name, t) in v.as_object().into_iter().flatten().filter(|(k, _)| *k != "__metadata__") {
        let end = t.get("data_offsets").and_then(|o| o.get(1)).and_then(|e| e.as_u64()).unwrap_or(u64::MAX);
        if end as usize > data {
            return Err(bad(format!("truncated: tensor {name} ends at byte {end} of {data}")));
        }
    }
    Ok(())
}
