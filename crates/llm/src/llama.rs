//! A llama-architecture decoder over quantized GGUF weights, written for serving and checking:
//! every sequence has its own KV cache, sized for exactly the tokens it may hold; one decode
//! step runs many sequences through each weight matrix at once (the weights are read once per
//! step, not once per sequence); and a forward pass can return the logits of every position,
//! which a validator's teacher-forced check needs.

use std::io::Cursor;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor, gguf_file::Content};
use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use crate::gguf::md_u32;
use crate::q41::{Q41Matrix, Q80Matrix};
use crate::{LlmError, Result};

struct Layer {
    /// The query, key and value projections.
    qkv: Stacked,
    wo: Mat,
    /// The gate and up projections.
    gate_up: Stacked,
    down: Mat,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

/// Shape of the network.
#[derive(Debug, Clone, Copy)]
pub struct LlamaShape {
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Longest sequence the rotary tables cover.
    pub max_positions: usize,
}

/// The weights.
pub struct Llama {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Mat,
    cos: Tensor,
    sin: Tensor,
    shape: LlamaShape,
    device: Device,
}

/// One sequence's keys and values for every layer, preallocated for `capacity` positions.
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Llama {
    /// Loads the weights of an inspected GGUF file (output layer tied to the token embedding
    /// when the file has no `output.weight`).
    pub fn load(ct: &Content, bytes: &[u8]) -> Result<Self> {
        let device = Device::Cpu;
        let mut r = Cursor::new(bytes);
        let mut t = |name: &str| ct.tensor(&mut r, name, &device).map_err(|e| LlmError::InvalidModel(format!("GGUF tensor {name}: {e}")));
        let heads = md_u32(ct, "llama.attention.head_count")?;
        let kv_heads = md_u32(ct, "llama.attention.head_count_kv").unwrap_or(heads);
        let hidden = md_u32(ct, "llama.embedding_length")?;
        let layers_n = md_u32(ct, "llama.block_count")?;
        let eps = ct.metadata.get("llama.attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().ok()).unwrap_or(1e-5) as f64;
        let freq_base = ct.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0);
        let max_positions = md_u32(ct, "llama.context_length")?;
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(LlmError::InvalidModel(format!("GGUF: {heads} heads, {kv_heads} kv heads, hidden {hidden} do not fit")));
        }
        let head_dim = hidden / heads;
        let embed = Arc::new(t("token_embd.weight")?);
        let output = match t("output.weight") {
            Ok(w) => weight(Arc::new(w))?,
            Err(_) => weight(embed.clone())?,
        };
        let norm = RmsNorm::from_qtensor(t("output_norm.weight")?, eps)?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let mut q = |n: &str| -> Result<Mat> { weight(Arc::new(t(&format!("blk.{i}.{n}.weight"))?)) };
            let qkv = Stacked::new(vec![q("attn_q")?, q("attn_k")?, q("attn_v")?]);
            let wo = q("attn_output")?;
            let gate_up = Stacked::new(vec![q("ffn_gate")?, q("ffn_up")?]);
            let down = q("ffn_down")?;
            let attn_norm = RmsNorm::from_qtensor(t(&format!("blk.{i}.attn_norm.weight"))?, eps)?;
            let ffn_norm = RmsNorm::from_qtensor(t(&format!("blk.{i}.ffn_norm.weight"))?, eps)?;
            layers.push(Layer { qkv, wo, gate_up, down, attn_norm, ffn_norm });
        }
        // Rotary tables (llama: interleaved pairs), one row per position.
        let inv: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / freq_base.powf(i as f32 / head_dim as f32)).collect();
        let inv = Tensor::new(inv.as_slice(), &device)?.reshape((1, head_dim / 2))?;
        let pos = Tensor::arange(0u32, max_positions as u32, &device)?.to_dtype(DType::F32)?.reshape((max_positions, 1))?;
        let angles = pos.matmul(&inv)?;
        let shape = LlamaShape { heads, kv_heads, head_dim, hidden, layers: layers_n, max_positions };
        Ok(Self { embed, layers, norm, output, cos: angles.cos()?, sin: angles.sin()?, shape, device })
    }

    /// The network's shape.
    pub fn shape(&self) -> LlamaShape {
        self.shape
    }

    /// An empty cache for a sequence of at most `capacity` positions (bytes it will hold:
    /// `capacity * layers * 2 * kv_heads * head_dim * 4`).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let capacity = capacity.clamp(1, self.shape.max_positions);
        KvCache { layers: (0..self.shape.layers).map(|_| candle_nn::kv_cache::KvCache::new(2, capacity)).collect(), len: 0, capacity }
    }

    /// Bytes a cache of `capacity` positions holds.
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        capacity * self.shape.layers * 2 * self.shape.kv_heads * self.shape.head_dim * 4
    }

    /// Runs `tokens` of one sequence at its next positions, appending them to its cache.
    /// Returns the logits of the last position `[vocab]`, or of every position `[n, vocab]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, every_position: bool) -> Result<Tensor> {
        if every_position {
            self.forward_last(tokens, cache, tokens.len())
        } else {
            Ok(self.forward_last(tokens, cache, 1)?.squeeze(0)?)
        }
    }

    /// As [`Llama::forward`], returning the logits of the last `last` positions `[last, vocab]`
    /// only: the output layer (a quarter of SmolLM2's weights) runs for those rows alone, and
    /// each row's logits are the same whichever rows run with it.
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache, last: usize) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 || last == 0 || last > n {
            return Err(LlmError::Input(format!("the logits of {last} of {n} positions")));
        }
        if cache.len + n > cache.capacity {
            return Err(LlmError::Engine(format!("sequence of {} positions overflows its cache of {}", cache.len + n, cache.capacity)));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.reshape((1, n, self.shape.hidden))?;
        let start = cache.len;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let (q, k, v) = self.qkv(layer, &h, 1, n)?;
            let y = self.attend(&q, &k, &v, &mut cache.layers[li], start)?;
            let y = y.transpose(1, 2)?.reshape((1, n, self.shape.hidden))?;
            x = (layer.wo.forward(&y)? + x)?;
            x = (self.mlp(layer, &x)? + x)?;
        }
        cache.len += n;
        let x = x.narrow(1, n - last, last)?;
        let x = self.norm.forward(&x)?.reshape((last, self.shape.hidden))?;
        self.output.forward(&x)
    }

    /// One decode step for several sequences: `tokens[i]` at the next position of `caches[i]`.
    /// Returns logits `[batch, vocab]`. The matrix products run once for the whole batch;
    /// attention runs per sequence over its own cache.
    pub fn step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let b = tokens.len();
        if b == 0 || b != caches.len() {
            return Err(LlmError::Engine(format!("{b} tokens for {} caches", caches.len())));
        }
        if let Some(c) = caches.iter().find(|c| c.len + 1 > c.capacity) {
            return Err(LlmError::Engine(format!("sequence overflows its cache of {}", c.capacity)));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.reshape((b, 1, self.shape.hidden))?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let (q, k, v) = self.qkv(layer, &h, b, 1)?;
            let mut ys = Vec::with_capacity(b);
            for (i, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len;
                let one = |t: &Tensor| t.narrow(0, i, 1);
                ys.push(self.attend(&one(&q)?, &one(&k)?, &one(&v)?, &mut cache.layers[li], pos)?);
            }
            let y = Tensor::cat(&ys, 0)?.transpose(1, 2)?.reshape((b, 1, self.shape.hidden))?;
            x = (layer.wo.forward(&y)? + x)?;
            x = (self.mlp(layer, &x)? + x)?;
        }
        for c in caches.iter_mut() {
            c.len += 1;
        }
        let x = self.norm.forward(&x)?.reshape((b, self.shape.hidden))?;
        self.output.forward(&x)
    }

    /// Projections to heads: q `[b, heads, n, d]`, k and v `[b, kv_heads, n, d]` (not yet rotated).
    fn qkv(&self, layer: &Layer, h: &Tensor, b: usize, n: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let s = self.shape;
        let [q, k, v] = <[Tensor; 3]>::try_from(layer.qkv.forward(h)?).map_err(|_| LlmError::Engine("three projections".into()))?;
        let q = q.reshape((b, n, s.heads, s.head_dim))?.transpose(1, 2)?;
        let k = k.reshape((b, n, s.kv_heads, s.head_dim))?.transpose(1, 2)?;
        let v = v.reshape((b, n, s.kv_heads, s.head_dim))?.transpose(1, 2)?;
        Ok((q, k, v))
    }

    /// Causal attention of one sequence's new positions `start..start+n` over its cache.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, cache: &mut candle_nn::kv_cache::KvCache, start: usize) -> Result<Tensor> {
        let s = self.shape;
        let n = q.dim(2)?;
        if start + n > s.max_positions {
            return Err(LlmError::Engine(format!("position {} is past the model's {}", start + n, s.max_positions)));
        }
        let cos = self.cos.narrow(0, start, n)?;
        let sin = self.sin.narrow(0, start, n)?;
        let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, &cos, &sin)?;
        let (k, v) = cache.append(&k.contiguous()?, &v.contiguous()?)?;
        let rep = s.heads / s.kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, rep)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, rep)?.contiguous()?;
        let att = if n > 1 {
            let att = q.matmul(&k.t()?)?;
            att.inplace_op1(&ScaleMask { mul: (1.0 / (s.head_dim as f64).sqrt()) as f32, start })?;
            att
        } else {
            (q.matmul(&k.t()?)? / (s.head_dim as f64).sqrt())?
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        Ok(att.matmul(&v)?)
    }

    fn mlp(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let h = layer.ffn_norm.forward(x)?;
        let gu = match &layer.gate_up {
            // silu(g) * u, in one pass over the stacked product.
            Stacked::One(m, _) => m.forward(&h)?.apply_op1_no_bwd(&SwiGlu)?,
            Stacked::Each(m) => (candle_nn::ops::silu(&m[0].forward(&h)?)? * m[1].forward(&h)?)?,
        };
        layer.down.forward(&gu)
    }
}

/// Attention scores `[.., n, start + n]` of queries at positions `start..start + n`, in place:
/// scaled as candle's `scores / sqrt(head_dim)` scales them (`v * mul + 0`, `mul` the f32 of
/// `1 / sqrt(head_dim)`), and -inf after each query's own position (candle's causal mask and
/// `where_cond`), in one pass.
struct ScaleMask {
    mul: f32,
    start: usize,
}

impl candle_core::InplaceOp1 for ScaleMask {
    fn name(&self) -> &'static str {
        "scale-causal-mask"
    }

    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(data) = storage else { candle_core::bail!("scale-causal-mask takes f32") };
        let Some((first, end)) = layout.contiguous_offsets() else { candle_core::bail!("scale-causal-mask takes a contiguous tensor") };
        let dims = layout.shape().dims();
        let (n, kv) = match dims {
            [.., n, kv] if *kv == self.start + *n && *n > 0 => (*n, *kv),
            _ => candle_core::bail!("scale-causal-mask: scores {dims:?} after {} positions", self.start),
        };
        data[first..end].par_chunks_mut(kv).enumerate().for_each(|(row, scores)| {
            let last = self.start + row % n;
            let (seen, after) = scores.split_at_mut(last + 1);
            for v in seen {
                *v = *v * self.mul + 0.0;
            }
            after.fill(f32::NEG_INFINITY);
        });
        Ok(())
    }
}

/// A weight matrix for matmuls: `q4_1` through this crate's kernel ([`Q41Matrix`]: 4-bit
/// weights times 8-bit activations, as llama.cpp computes it, batch-invariant), `q8_0` through
/// [`Q80Matrix`] where it runs (candle's bits, tiled for prompts), other types through candle. candle 0.11 has no SIMD CPU kernel for the legacy `q5_0` and `q5_1`: those
/// are dequantized to f32 once at load (exact; ~15x faster prompts and ~2x faster decoding
/// than candle's scalar kernel, for 4.5x the memory of those weights).
enum Mat {
    Q41(Q41Matrix),
    Q80(Q80Matrix),
    Candle(QMatMul),
}

impl Mat {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mat::Q41(m) => m.forward(x),
            Mat::Q80(m) => m.forward(x),
            Mat::Candle(m) => Ok(m.forward(x)?),
        }
    }
}

/// Matrices over the same input: stacked into one where they are all `q4_1` (one quantization
/// of the input, one pass; each output is the same row times the same input as alone, so the
/// same bits), else run one by one.
enum Stacked {
    /// The stacked matrix and the rows of each part.
    One(Mat, Vec<usize>),
    Each(Vec<Mat>),
}

impl Stacked {
    fn new(mats: Vec<Mat>) -> Self {
        let q41: Vec<&Q41Matrix> = mats.iter().filter_map(|m| if let Mat::Q41(q) = m { Some(q) } else { None }).collect();
        if q41.len() == mats.len()
            && let Some(one) = Q41Matrix::stack(&q41)
        {
            return Stacked::One(Mat::Q41(one), q41.iter().map(|m| m.rows()).collect());
        }
        Stacked::Each(mats)
    }

    /// Each matrix's product with `x`.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Stacked::One(m, rows) => {
                let y = m.forward(x)?;
                let mut start = 0;
                let mut out = Vec::with_capacity(rows.len());
                for &r in rows {
                    out.push(y.narrow(candle_core::D::Minus1, start, r)?);
                    start += r;
                }
                Ok(out)
            }
            Stacked::Each(ms) => ms.iter().map(|m| m.forward(x)).collect(),
        }
    }
}

/// `silu(g) * u` for `[.., 2k]` holding `g` then `u` in its last dimension, giving `[.., k]`:
/// candle's `silu` and product, element by element, in one pass.
struct SwiGlu;

impl candle_core::CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, storage: &candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(data) = storage else { candle_core::bail!("swiglu takes f32") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("swiglu takes a contiguous tensor") };
        let dims = layout.shape().dims();
        let two = *dims.last().unwrap_or(&0);
        if two == 0 || !two.is_multiple_of(2) {
            candle_core::bail!("swiglu: last dimension {two} is not even")
        }
        let k = two / 2;
        let data = &data[start..end];
        let mut out = vec![0f32; data.len() / 2];
        out.par_chunks_mut(k).zip(data.par_chunks(two)).for_each(|(o, row)| {
            let (g, u) = row.split_at(k);
            for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                *o = (g / (1.0 + (-g).exp())) * u;
            }
        });
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dim") = k;
        Ok((candle_core::CpuStorage::F32(out), candle_core::Shape::from(out_dims)))
    }
}

fn weight(t: Arc<QTensor>) -> Result<Mat> {
    use candle_core::quantized::GgmlDType as G;
    match t.dtype() {
        G::Q4_1 => {
            let (rows, cols) = t.shape().dims2()?;
            Ok(Mat::Q41(Q41Matrix::from_gguf_bytes(rows, cols, &t.data()?)?))
        }
        G::Q8_0 if Q80Matrix::supported(t.shape().dims2()?.1) => {
            let (rows, cols) = t.shape().dims2()?;
            Ok(Mat::Q80(Q80Matrix::from_gguf_bytes(rows, cols, &t.data()?)?))
        }
        G::Q5_0 | G::Q5_1 => Ok(Mat::Candle(QMatMul::Tensor(t.dequantize(&Device::Cpu)?))),
        _ => Ok(Mat::Candle(QMatMul::from_arc(t)?)),
    }
}
