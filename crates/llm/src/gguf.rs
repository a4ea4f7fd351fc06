//! Reading a GGUF file: the facts a hub stores about it, checked before anything runs it.

use std::io::Cursor;

use candle_core::quantized::gguf_file::{Content, Value};
use serde::{Deserialize, Serialize};

use crate::{LlmError, Result};

/// What the hub records about a GGUF language model (also its answer to "is this runnable").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmInfo {
    /// `general.architecture` (only `llama` runs today).
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// Context window the model was trained for.
    pub context_length: usize,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Hidden size.
    pub embedding_length: usize,
    /// Transformer blocks.
    pub block_count: usize,
    /// Weight type of most of the parameters (e.g. `q4_1`).
    pub quantization: String,
    /// Parameters in the file.
    pub parameters: u64,
    /// Whether the file carries a chat template.
    pub chat_template: bool,
}

/// Reads a required metadata key.
pub(crate) fn md<'a>(ct: &'a Content, key: &str) -> Result<&'a Value> {
    ct.metadata.get(key).ok_or_else(|| LlmError::InvalidModel(format!("GGUF: metadata {key} is missing")))
}

pub(crate) fn md_u32(ct: &Content, key: &str) -> Result<usize> {
    md(ct, key)?.to_u32().map(|v| v as usize).map_err(|e| LlmError::InvalidModel(format!("GGUF: {key}: {e}")))
}

pub(crate) fn md_str(ct: &Content, key: &str) -> Option<String> {
    ct.metadata.get(key).and_then(|v| v.to_string().ok()).cloned()
}

/// Parses the header and checks that the file can be run: a llama architecture with a BPE
/// vocabulary, every tensor the model needs present, every tensor's bytes inside the file
/// (a truncated download is refused here, not at the first request).
pub fn inspect_gguf(bytes: &[u8]) -> Result<(Content, LlmInfo)> {
    let mut r = Cursor::new(bytes);
    let ct = Content::read(&mut r).map_err(|e| LlmError::InvalidModel(format!("not a readable GGUF file: {e}")))?;
    let arch = md_str(&ct, "general.architecture").unwrap_or_default();
    if arch != "llama" {
        return Err(LlmError::InvalidModel(format!(
            "GGUF architecture {arch:?} is not supported (this engine runs \"llama\")"
        )));
    }
    let tok_model = md_str(&ct, "tokenizer.ggml.model").unwrap_or_default();
    if tok_model != "gpt2" {
        return Err(LlmError::InvalidModel(format!(
            "GGUF tokenizer {tok_model:?} is not supported (this engine reads byte-level BPE, \"gpt2\")"
        )));
    }
    let vocab_size = md(&ct, "tokenizer.ggml.tokens")?.to_vec().map_err(|e| LlmError::InvalidModel(e.to_string()))?.len();
    let block_count = md_u32(&ct, "llama.block_count")?;
    let mut parameters = 0u64;
    let mut by_type: std::collections::BTreeMap<String, u64> = Default::default();
    for (name, t) in &ct.tensor_infos {
        let elems = t.shape.elem_count();
        let block = t.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(LlmError::InvalidModel(format!("GGUF tensor {name}: {elems} elements is not a whole number of blocks")));
        }
        let size = (elems / block * t.ggml_dtype.type_size()) as u64;
        let end = ct.tensor_data_offset.saturating_add(t.offset).saturating_add(size);
        if end > bytes.len() as u64 {
            return Err(LlmError::InvalidModel(format!(
                "GGUF is truncated: tensor {name} ends at byte {end} but the file has {} bytes",
                bytes.len()
            )));
        }
        parameters += elems as u64;
        *by_type.entry(format!("{:?}", t.ggml_dtype).to_lowercase()).or_default() += elems as u64;
    }
    let mut need = vec!["token_embd.weight".to_owned(), "output_norm.weight".to_owned()];
    for i in 0..block_count {
        for t in ["attn_q", "attn_k", "attn_v", "attn_output", "attn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_norm"] {
            need.push(format!("blk.{i}.{t}.weight"));
        }
    }
    if let Some(missing) = need.iter().find(|n| !ct.tensor_infos.contains_key(n.as_str())) {
        return Err(LlmError::InvalidModel(format!("GGUF: tensor {missing} is missing")));
    }
    let quantization = by_type.into_iter().max_by_key(|(_, n)| *n).map(|(t, _)| t).unwrap_or_default();
    let info = LlmInfo {
        architecture: arch,
        name: md_str(&ct, "general.name"),
        context_length: md_u32(&ct, "llama.context_length")?,
        vocab_size,
        embedding_length: md_u32(&ct, "llama.embedding_length")?,
        block_count,
        quantization,
        parameters,
        chat_template: ct.metadata.contains_key("tokenizer.chat_template"),
    };
    Ok((ct, info))
}

/// A cheaper or finer weight format for [`requantize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 4-bit blocks with a scale (no offset): cheaper than `q4_1`.
    Q4_0,
    /// 5-bit blocks with a scale.
    Q5_0,
    /// 8-bit blocks with a scale: finer than `q4_1`.
    Q8_0,
}

/// Another quantization of the same model: every quantized matrix of the GGUF file `bytes`
/// dequantized and quantized again to `to`, the metadata and f32 tensors (norms) as they are.
/// What a worker that cuts its costs (or one that rounds differently) would serve under the
/// published model's name; tests use it to show that a check tells the two apart.
pub fn requantize(bytes: &[u8], to: Quantization) -> Result<Vec<u8>> {
    use candle_core::quantized::{GgmlDType, QTensor};
    let target = match to {
        Quantization::Q4_0 => GgmlDType::Q4_0,
        Quantization::Q5_0 => GgmlDType::Q5_0,
        Quantization::Q8_0 => GgmlDType::Q8_0,
    };
    let mut cursor = Cursor::new(bytes);
    let ct = Content::read(&mut cursor).map_err(|e| LlmError::InvalidModel(format!("GGUF: {e}")))?;
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(ct.tensor_infos.len());
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let t = ct.tensor(&mut cursor, name, &candle_core::Device::Cpu)?;
        let t = if t.dtype() == GgmlDType::F32 || t.dtype() == target || t.shape().dims().len() != 2 {
            t
        } else {
            QTensor::quantize(&t.dequantize(&candle_core::Device::Cpu)?, target)?
        };
        tensors.push((name.clone(), t));
    }
    let metadata: Vec<(&str, &Value)> = ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::with_capacity(bytes.len() * 2));
    candle_core::quantized::gguf_file::write(&mut out, &metadata, &refs)?;
    Ok(out.into_inner())
}
