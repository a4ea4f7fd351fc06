//! Matrix products over `q4_1` weights, the way llama.cpp computes them: each row of
//! activations is quantized to `q8_1` blocks of 32 and multiplied with the 4-bit weight blocks
//! in integers, then scaled. candle 0.11 has only a scalar kernel for this type, and
//! dequantizing to f32 reads 4.5x the bytes per decoding step; this reads the 4-bit blocks.
//!
//! Every output element is one row of weights times one row of activations, summed in a fixed
//! order, so a result does not depend on how many rows run together (a prompt as one matrix,
//! a decoding step of one or of many sequences) nor on the thread split. The kernels (AVX2;
//! AVX-512 VNNI where the CPU has it; a portable one elsewhere) sum in the same order and give
//! the same bits (tested), so a validator on another CPU computes the same products.
//!
//! [`Q80Matrix`] does the same for `q8_0` weights (SmolLM2's output layer, tied to its token
//! embedding), but with candle's arithmetic rather than llama.cpp's: each of its results has
//! the bits candle 0.11's AVX2 kernel gives (tested), only tiled like the `q4_1` products —
//! candle computes a prompt's rows one dot product at a time, which made the output layer a
//! third of a prompt's time.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use half::f16;
use rayon::prelude::*;

use crate::{LlmError, Result};

/// Values per block, for both the weights and the quantized activations.
const BLOCK: usize = 32;
/// Bytes of one `q4_1` block in a GGUF file: `d` and `m` as f16, then 16 bytes of nibbles.
const Q4_1_BYTES: usize = 20;
/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// One block of weights, `w[i] = d * q[i] + m`; scales widened to f32 at load (exactly).
/// Nibble `j` of the block is the low half of `qs[j]` for j < 16, the high half of `qs[j-16]`.
#[derive(Clone, Copy)]
#[repr(C)]
struct WBlock {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

/// One block of activations quantized as llama.cpp's `q8_1`: `x[i] ≈ d * qs[i]`, and
/// `s = d * Σ qs` (both rounded through f16, as llama.cpp stores them).
#[derive(Clone, Copy)]
#[repr(C)]
struct ABlock {
    d: f32,
    s: f32,
    qs: [i8; BLOCK],
}

/// Bytes of one `q8_0` block in a GGUF file: `d` as f16, then 32 signed bytes.
const Q8_0_BYTES: usize = 34;

/// One `q8_0` block, weights or activations: `x[i] ≈ d * qs[i]`, `d` widened from f16 to f32.
#[derive(Clone, Copy)]
#[repr(C)]
struct Q8Block {
    d: f32,
    qs: [i8; BLOCK],
}

/// Activation rows per group of the many-row kernels ([`grouped`]): two per 512-bit register.
const PACK: usize = 16;
/// From this many activation rows on, products run through [`grouped`] where the CPU has
/// [`Kernel::Avx512`]; fewer rows (decoding) through [`tiled`].
const MANY: usize = 8;

/// One block of [`PACK`] `q8_1` activation rows, laid out for the 512-bit kernel: register `k`
/// holds rows `2k` and `2k + 1` (values, and each row's scale repeated over its 8 lanes).
/// Rows past the end of the activations are zero.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Pack41 {
    qs: [[i8; 2 * BLOCK]; PACK / 2],
    d: [[f32; 16]; PACK / 2],
    s: [f32; PACK],
}

/// One block of [`PACK`] `q8_0` activation rows for the 512-bit kernel, as [`Pack41`]; `corr`
/// is `-128` times the sum of each lane's four values (the weights are multiplied offset by
/// 128, as unsigned bytes, and this takes the offset back out exactly).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Pack80 {
    qs: [[i8; 2 * BLOCK]; PACK / 2],
    d: [[f32; 16]; PACK / 2],
    corr: [[i32; 16]; PACK / 2],
}

/// Groups of [`PACK`] rows of `n` activation rows of `per_row` blocks, packed by `fill(pack,
/// row in group, block of that row)`: `n.div_ceil(PACK) * per_row` packs, group-major.
fn pack_rows<A, P: Copy>(acts: &[A], per_row: usize, n: usize, zero: P, fill: impl Fn(&mut P, usize, &A)) -> Vec<P> {
    let groups = n.div_ceil(PACK);
    let mut packs = vec![zero; groups * per_row];
    for (i, row) in acts.chunks_exact(per_row).enumerate().take(n) {
        let group = &mut packs[i / PACK * per_row..(i / PACK + 1) * per_row];
        for (p, a) in group.iter_mut().zip(row) {
            fill(p, i % PACK, a);
        }
    }
    packs
}

fn pack_q8_1(acts: &[ABlock], per_row: usize, n: usize) -> Vec<Pack41> {
    let zero = Pack41 { qs: [[0; 2 * BLOCK]; PACK / 2], d: [[0.0; 16]; PACK / 2], s: [0.0; PACK] };
    pack_rows(acts, per_row, n, zero, |p, i, a| {
        let (k, half) = (i / 2, i % 2);
        p.qs[k][half * BLOCK..(half + 1) * BLOCK].copy_from_slice(&a.qs);
        p.d[k][half * 8..(half + 1) * 8].fill(a.d);
        p.s[i] = a.s;
    })
}

fn pack_q8_0(acts: &[Q8Block], per_row: usize, n: usize) -> Vec<Pack80> {
    let zero = Pack80 { qs: [[0; 2 * BLOCK]; PACK / 2], d: [[0.0; 16]; PACK / 2], corr: [[0; 16]; PACK / 2] };
    pack_rows(acts, per_row, n, zero, |p, i, a| {
        let (k, half) = (i / 2, i % 2);
        p.qs[k][half * BLOCK..(half + 1) * BLOCK].copy_from_slice(&a.qs);
        p.d[k][half * 8..(half + 1) * 8].fill(a.d);
        for (l, c) in p.corr[k][half * 8..(half + 1) * 8].iter_mut().enumerate() {
            *c = -128 * a.qs[4 * l..4 * l + 4].iter().map(|&q| i32::from(q)).sum::<i32>();
        }
    })
}

/// A `q4_1` weight matrix `[rows, cols]` (`rows` outputs, `cols` inputs), multiplied as
/// `x @ wᵀ` by [`Q41Matrix::forward`].
pub(crate) struct Q41Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<WBlock>,
}

impl Q41Matrix {
    /// Reads the raw `q4_1` bytes of a `[rows, cols]` tensor, as GGUF stores them.
    pub(crate) fn from_gguf_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) || bytes.len() != rows * cols / BLOCK * Q4_1_BYTES {
            return Err(LlmError::InvalidModel(format!("q4_1 tensor [{rows}, {cols}] cannot hold {} bytes", bytes.len())));
        }
        let blocks = bytes
            .chunks_exact(Q4_1_BYTES)
            .map(|b| {
                let half = |i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
                let mut qs = [0u8; 16];
                qs.copy_from_slice(&b[4..]);
                WBlock { d: half(0), m: half(2), qs }
            })
            .collect();
        Ok(Self { rows, cols, blocks })
    }

    /// `x @ wᵀ` for `x` of shape `[.., cols]`, giving `[.., rows]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1_no_bwd(self)?)
    }

    /// Output rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The matrices' rows one after another (`None` unless they have the same columns): its
    /// products are theirs side by side, with the same bits.
    pub(crate) fn stack(parts: &[&Q41Matrix]) -> Option<Self> {
        let cols = parts.first()?.cols;
        if parts.iter().any(|m| m.cols != cols) {
            return None;
        }
        let blocks = parts.iter().flat_map(|m| m.blocks.iter().copied()).collect();
        Some(Self { rows: parts.iter().map(|m| m.rows).sum(), cols, blocks })
    }

    /// `out[i][j] = x[i] · w[j]` for `x` of `n` rows of `cols`, `out` of `n` rows of `rows`.
    #[allow(unsafe_code, reason = "calls the AVX-512 kernel after the feature check")]
    fn matmul(&self, x: &[f32], n: usize, kernel: Kernel) -> Vec<f32> {
        let acts: Vec<ABlock> = x.chunks_exact(BLOCK).map(quantize_q8_1).collect();
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Avx512 && n >= MANY {
            let per_row = self.cols / BLOCK;
            let packs = pack_q8_1(&acts, per_row, n);
            // SAFETY: Kernel::Avx512 is only chosen after detecting its features on this CPU.
            return grouped(self.rows, per_row, n, &self.blocks, &packs, |w, a, live| unsafe { x86::q41_many(w, a, live) });
        }
        tiled(self.rows, self.cols / BLOCK, n, &self.blocks, &acts, |w, a| match *a {
            [a0, a1, a2, a3] => dot(kernel, w, [a0, a1, a2, a3]),
            _ => {
                let mut out = [0f32; 4];
                for (o, a) in out.iter_mut().zip(a) {
                    [*o] = dot(kernel, w, [*a]);
                }
                out
            }
        })
    }
}

impl CustomOp1 for Q41Matrix {
    fn name(&self) -> &'static str {
        "q4_1-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("q4_1 matmul takes f32 activations") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("q4_1 matmul takes contiguous activations") };
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.cols) {
            candle_core::bail!("q4_1 matmul: activations {dims:?} against weights [{}, {}]", self.rows, self.cols)
        }
        let n = layout.shape().elem_count() / self.cols;
        let out = self.matmul(&data[start..end], n, Kernel::best());
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dim") = self.rows;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// A `q8_0` weight matrix `[rows, cols]`, multiplied as `x @ wᵀ` with the bits of candle's
/// `QMatMul` on an AVX2 CPU (activations rounded to `q8_0` as candle rounds them; per output,
/// 8 lane accumulators with one fused multiply-add per block, then candle's horizontal sum).
/// Only built where candle runs that kernel ([`Q80Matrix::supported`]); elsewhere candle's own.
pub(crate) struct Q80Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<Q8Block>,
}

impl Q80Matrix {
    /// Whether candle would multiply a `q8_0` matrix of `cols` inputs with its AVX2 dot
    /// product here, whose bits this kernel has: the CPU has AVX2 and FMA, and `cols` is not a
    /// multiple of 256 (candle 0.11 repacks those for AVX-512 CPUs, with other bits).
    pub(crate) fn supported(cols: usize) -> bool {
        Kernel::best() != Kernel::Portable && !cols.is_multiple_of(256)
    }

    /// Reads the raw `q8_0` bytes of a `[rows, cols]` tensor, as GGUF stores them.
    pub(crate) fn from_gguf_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) || bytes.len() != rows * cols / BLOCK * Q8_0_BYTES {
            return Err(LlmError::InvalidModel(format!("q8_0 tensor [{rows}, {cols}] cannot hold {} bytes", bytes.len())));
        }
        let blocks = bytes
            .chunks_exact(Q8_0_BYTES)
            .map(|b| Q8Block { d: f16::from_le_bytes([b[0], b[1]]).to_f32(), qs: std::array::from_fn(|i| b[2 + i] as i8) })
            .collect();
        Ok(Self { rows, cols, blocks })
    }

    /// `x @ wᵀ` for `x` of shape `[.., cols]`, giving `[.., rows]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1_no_bwd(self)?)
    }

    #[allow(unsafe_code, reason = "calls the AVX-512 kernel after the feature check")]
    fn matmul(&self, x: &[f32], n: usize, kernel: Kernel) -> Vec<f32> {
        let acts: Vec<Q8Block> = x.chunks_exact(BLOCK).map(quantize_q8_0).collect();
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Avx512 && n >= MANY {
            let per_row = self.cols / BLOCK;
            let packs = pack_q8_0(&acts, per_row, n);
            // SAFETY: Kernel::Avx512 is only chosen after detecting its features on this CPU.
            return grouped(self.rows, per_row, n, &self.blocks, &packs, |w, a, live| unsafe { x86::q8_0_many(w, a, live) });
        }
        let _ = kernel;
        tiled(self.rows, self.cols / BLOCK, n, &self.blocks, &acts, dot_q8)
    }
}

impl CustomOp1 for Q80Matrix {
    fn name(&self) -> &'static str {
        "q8_0-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("q8_0 matmul takes f32 activations") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("q8_0 matmul takes contiguous activations") };
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.cols) {
            candle_core::bail!("q8_0 matmul: activations {dims:?} against weights [{}, {}]", self.rows, self.cols)
        }
        let n = layout.shape().elem_count() / self.cols;
        let out = self.matmul(&data[start..end], n, Kernel::best());
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dim") = self.rows;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// `out[i][j] = dot(w[j], a[i])` for `n` activation rows and `rows` weight rows of `per_row`
/// blocks: weight rows split across threads in tasks of [`ROWS_PER_TASK`], activation rows
/// four at a time through each task's weight rows (a weight block is loaded once for four
/// products and the tile stays in L1). Computed transposed, then turned back.
fn tiled<W: Sync, A: Sync>(rows: usize, per_row: usize, n: usize, w: &[W], a: &[A], dot: impl Fn(&[W], &[&[A]]) -> [f32; 4] + Sync) -> Vec<f32> {
    let mut t = vec![0f32; rows * n];
    let act = |i: usize| &a[i * per_row..(i + 1) * per_row];
    t.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(|(task, out)| {
        let first = task * ROWS_PER_TASK;
        let weights = |r: usize| &w[(first + r) * per_row..(first + r + 1) * per_row];
        let four = n / 4 * 4;
        for i in (0..four).step_by(4) {
            for (r, out_row) in out.chunks_exact_mut(n).enumerate() {
                out_row[i..i + 4].copy_from_slice(&dot(weights(r), &[act(i), act(i + 1), act(i + 2), act(i + 3)]));
            }
        }
        for (r, out_row) in out.chunks_exact_mut(n).enumerate() {
            for (i, o) in out_row.iter_mut().enumerate().skip(four) {
                *o = dot(weights(r), &[act(i)])[0];
            }
        }
    });
    transposed(&t, rows, n)
}

/// As [`tiled`], for many activation rows packed in groups of [`PACK`] (`a`, from
/// [`pack_rows`]): each task takes every group through its weight rows, two weight rows at a
/// time; `tile(weight rows, group, live rows in the group)` gives their products with the
/// group's rows (only the first `live` meaningful), one array per weight row given. Each task
/// keeps its results by activation row, copied into place at the end a task's run at a time.
fn grouped<W: Sync, P: Sync>(
    rows: usize,
    per_row: usize,
    n: usize,
    w: &[W],
    a: &[P],
    tile: impl Fn(&[&[W]], &[P], usize) -> [[f32; PACK]; 2] + Sync,
) -> Vec<f32> {
    let tasks: Vec<Vec<f32>> = (0..rows.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|task| {
            let first = task * ROWS_PER_TASK;
            let here = (rows - first).min(ROWS_PER_TASK);
            let weights = |r: usize| &w[(first + r) * per_row..(first + r + 1) * per_row];
            let mut out = vec![0f32; n * here];
            for (g, group) in a.chunks_exact(per_row).enumerate() {
                let live = (n - g * PACK).min(PACK);
                for r in (0..here).step_by(2) {
                    let two = [weights(r), weights((r + 1).min(here - 1))];
                    let take = (here - r).min(2);
                    let res = tile(&two[..take], group, live);
                    for (k, res) in res.iter().enumerate().take(take) {
                        for (c, v) in res.iter().enumerate().take(live) {
                            out[(g * PACK + c) * here + r + k] = *v;
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut out = vec![0f32; n * rows];
    out.par_chunks_mut(rows).enumerate().for_each(|(i, row)| {
        for (dst, src) in row.chunks_mut(ROWS_PER_TASK).zip(&tasks) {
            dst.copy_from_slice(&src[i * dst.len()..(i + 1) * dst.len()]);
        }
    });
    out
}

/// `t` of `rows` rows of `n`, transposed to `n` rows of `rows`: in tiles of 16 x 16 (each
/// read and written a cache line per row), output rows split across threads.
fn transposed(t: &[f32], rows: usize, n: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let mut out = vec![0f32; n * rows];
    out.par_chunks_mut(TILE * rows).enumerate().for_each(|(c, out)| {
        let i0 = c * TILE;
        let here = out.len() / rows;
        for j0 in (0..rows).step_by(TILE) {
            for j in j0..(j0 + TILE).min(rows) {
                let col = &t[j * n + i0..j * n + i0 + here];
                for (ii, v) in col.iter().enumerate() {
                    out[ii * rows + j] = *v;
                }
            }
        }
    });
    out
}

/// Quantizes 32 activations as candle's `BlockQ8_0::from_float` does (scale `max |x| / 127`,
/// multiply by its inverse, round half away from zero).
fn quantize_q8_0(x: &[f32]) -> Q8Block {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    Q8Block { d: f16::from_f32(d).to_f32(), qs: std::array::from_fn(|i| (x[i] * id).round() as i8) }
}

/// One `q8_0` weight row times one to four activation rows (results past `a.len()` are 0).
#[allow(unsafe_code, reason = "calls the AVX2 kernel, which Q80Matrix::supported checked for")]
fn dot_q8(w: &[Q8Block], a: &[&[Q8Block]]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a Q80Matrix is only built where the AVX2 and FMA kernels run (`supported`).
        match a.len() {
            4 => unsafe { x86::q8_0(w, [a[0], a[1], a[2], a[3]]) },
            _ => {
                let mut out = [0f32; 4];
                for (o, a) in out.iter_mut().zip(a) {
                    [*o] = unsafe { x86::q8_0(w, [*a]) };
                }
                out
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, a);
        unreachable!("Q80Matrix::supported is false off x86_64")
    }
}

/// Quantizes 32 activations as llama.cpp's AVX2 `quantize_row_q8_1` does (scale by
/// 127 / max |x|, round half to even).
fn quantize_q8_1(x: &[f32]) -> ABlock {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    let mut sum = 0i32;
    // Round half to even without a libm call: adding and removing 1.5 * 2^23 leaves an f32
    // of magnitude below 2^22 rounded to an integer in the default rounding mode.
    const MAGIC: f32 = 12_582_912.0;
    for (q, v) in qs.iter_mut().zip(x) {
        // |v * id| <= 127 up to rounding, so the cast never saturates in practice.
        *q = ((v * id + MAGIC) - MAGIC) as i8;
        sum += i32::from(*q);
    }
    ABlock { d: f16::from_f32(d).to_f32(), s: f16::from_f32(d * sum as f32).to_f32(), qs }
}

/// Which kernel runs the dot products; chosen once per product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// [`Kernel::Vnni`] for a few activation rows; for many, 512-bit registers each holding
    /// two products ([`grouped`]).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// Every kernel this CPU runs, fastest last.
    fn available() -> Vec<Self> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                all.push(Kernel::Avx2);
                if has!("avx512vnni") && has!("avx512vl") {
                    all.push(Kernel::Vnni);
                    if has!("avx512f") && has!("avx512bw") {
                        all.push(Kernel::Avx512);
                    }
                }
            }
        }
        all
    }

    fn best() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Self::available().last().expect("the portable kernel"))
    }
}

/// One weight row times `N` activation rows.
#[allow(unsafe_code, reason = "calls the SIMD kernels after the feature check")]
fn dot<const N: usize>(kernel: Kernel, w: &[WBlock], a: [&[ABlock]; N]) -> [f32; N] {
    match kernel {
        Kernel::Portable => a.map(|a| dot_portable(w, a)),
        // SAFETY: these kernels are only chosen after detecting their features on this CPU.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::avx2(w, a) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni | Kernel::Avx512 => unsafe { x86::vnni(w, a) },
    }
}

/// The sum of 8 lane accumulators, in the order both kernels use.
fn sum_lanes(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The reference kernel: lane `l` accumulates the products of values `4l..4l+4` of each block
/// (values 0-15 are the low nibbles, 16-31 the high ones), exactly as the AVX2 registers do.
fn dot_portable(w: &[WBlock], a: &[ABlock]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut mins = 0f32;
    for (w, a) in w.iter().zip(a) {
        let scale = w.d * a.d;
        mins += w.m * a.s;
        for (l, lane) in lanes.iter_mut().enumerate() {
            let mut p = 0i32;
            for v in 4 * l..4 * l + 4 {
                let q = if v < 16 { w.qs[v] & 0x0f } else { w.qs[v - 16] >> 4 };
                p += i32::from(q) * i32::from(a.qs[v]);
            }
            *lane = scale.mul_add(p as f32, *lane);
        }
    }
    sum_lanes(lanes) + mins
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, reason = "SIMD intrinsics; the only caller checks the CPU features first")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ABlock, Pack41, Pack80, WBlock, sum_lanes};

    /// One weight row times `N` activation rows. The weight block is unpacked once for the `N`
    /// products; each product has its own accumulators, updated in the order of
    /// [`super::dot_portable`], so every result has the same bits whatever `N` and kernel.
    /// `$products` turns 32 u8 weights and 32 i8 activations into 8 i32 lanes, lane `l`
    /// holding values `4l..4l+4`.
    macro_rules! kernel {
        ($name:ident, $features:literal, |$qx:ident, $qy:ident| $products:expr) => {
            /// # Safety
            #[doc = concat!("The CPU must support ", $features, ".")]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const N: usize>(w: &[WBlock], a: [&[ABlock]; N]) -> [f32; N] {
                let low = _mm_set1_epi8(0x0f);
                let mut acc = [_mm256_setzero_ps(); N];
                let mut mins = [0f32; N];
                for (b, w) in w.iter().enumerate() {
                    // SAFETY: `qs` is 16 bytes; the load is an unaligned one.
                    let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr().cast::<__m128i>()) };
                    let lo = _mm_and_si128(packed, low);
                    let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
                    let $qx = _mm256_set_m128i(hi, lo);
                    for r in 0..N {
                        let a = &a[r][b];
                        mins[r] += w.m * a.s;
                        // SAFETY: `qs` is 32 bytes; the load is an unaligned one.
                        let $qy = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast::<__m256i>()) };
                        let p = $products;
                        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(w.d * a.d), _mm256_cvtepi32_ps(p), acc[r]);
                    }
                }
                std::array::from_fn(|r| {
                    let mut lanes = [0f32; 8];
                    // SAFETY: `lanes` holds 8 f32.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]) };
                    sum_lanes(lanes) + mins[r]
                })
            }
        };
    }

    /// One `q8_0` weight row times `N` activation rows, each product computed as candle's
    /// `vec_dot_q8_0_q8_0` computes it (the same instructions on the same values, in the same
    /// order): the weight block is loaded once for the `N` products.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q8_0<const N: usize>(w: &[super::Q8Block], a: [&[super::Q8Block]; N]) -> [f32; N] {
        let mut acc = [_mm256_setzero_ps(); N];
        for (b, w) in w.iter().enumerate() {
            // SAFETY: `qs` is 32 bytes; the load is an unaligned one.
            let bx = unsafe { _mm256_loadu_si256(w.qs.as_ptr().cast::<__m256i>()) };
            let ax = _mm256_sign_epi8(bx, bx);
            for r in 0..N {
                let a = &a[r][b];
                // SAFETY: as above.
                let by = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast::<__m256i>()) };
                let sy = _mm256_sign_epi8(by, bx);
                let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy)));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(w.d * a.d), q, acc[r]);
            }
        }
        std::array::from_fn(|r| {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]) };
            sum_lanes(lanes)
        })
    }

    /// Runs `$tile::<R, G>` for `R = w.len()` weight rows (1 or 2) and `G = live.div_ceil(2)`
    /// registers of activation rows (1 to 8).
    macro_rules! many {
        ($name:ident, $tile:ident, $w:ty, $p:ty) => {
            /// Weight rows `w` (one or two) times the `live` rows of a packed group.
            ///
            /// # Safety
            /// The CPU must support AVX-512 F, BW and VNNI.
            pub(super) unsafe fn $name(w: &[&[$w]], a: &[$p], live: usize) -> [[f32; 16]; 2] {
                macro_rules! go {
                    ($g:literal) => {
                        // SAFETY: the caller checked the CPU features.
                        unsafe {
                            match w {
                                [w0] => {
                                    let [r0] = $tile::<1, $g>([w0], a);
                                    [r0, [0.0; 16]]
                                }
                                [w0, w1, ..] => $tile::<2, $g>([w0, w1], a),
                                [] => [[0.0; 16]; 2],
                            }
                        }
                    };
                }
                match live.div_ceil(2) {
                    1 => go!(1),
                    2 => go!(2),
                    3 => go!(3),
                    4 => go!(4),
                    5 => go!(5),
                    6 => go!(6),
                    7 => go!(7),
                    _ => go!(8),
                }
            }
        };
    }
    many!(q41_many, q41_tile, WBlock, Pack41);
    many!(q8_0_many, q8_0_tile, super::Q8Block, Pack80);

    /// The sums of the two products in `acc` (lanes 0-7 and 8-15), each in the order of
    /// [`sum_lanes`]: lanes `i` and `i + 4`, then `i` and `i + 2`, then `i` and `i + 1`.
    #[target_feature(enable = "avx512f")]
    fn sum_pairs(acc: __m512) -> [f32; 2] {
        let t = _mm512_add_ps(acc, _mm512_shuffle_f32x4(acc, acc, 0b10_11_00_01));
        let t = _mm512_add_ps(t, _mm512_permute_ps(t, 0b01_00_11_10));
        let t = _mm512_add_ps(t, _mm512_permute_ps(t, 0b10_11_00_01));
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), t) };
        [lanes[0], lanes[8]]
    }

    /// `R` `q4_1` weight rows times the first `2G` rows of a packed group, each product as
    /// [`super::dot_portable`] computes it: per block, the integer sums of four in each lane,
    /// scaled and added with one fused multiply-add; the `m * s` terms summed apart, in block
    /// order, and added last. Two products share a register; the weight block is unpacked once
    /// for the group's rows.
    #[allow(clippy::needless_range_loop, reason = "k indexes the pack's registers and the accumulators alike")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    fn q41_tile<const R: usize, const G: usize>(w: [&[WBlock]; R], a: &[Pack41]) -> [[f32; 16]; R] {
        let low = _mm512_set1_epi8(0x0f);
        // Shift the second and fourth copies of the 16 packed bytes to their high nibbles.
        let four = 0x0004_0004_0004_0004;
        let shifts = _mm512_set_epi64(four, four, 0, 0, four, four, 0, 0);
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        let mut mins = [_mm512_setzero_ps(); R];
        let w = w.map(|w| &w[..a.len()]);
        for (b, p) in a.iter().enumerate() {
            let mut qx = [_mm512_setzero_si512(); R];
            let mut wd = [_mm512_setzero_ps(); R];
            // SAFETY: the pack is 64-byte aligned; `s` is its last 64 bytes.
            let s = unsafe { _mm512_load_ps(p.s.as_ptr()) };
            for r in 0..R {
                let wb = &w[r][b];
                // SAFETY: `qs` is 16 bytes; the load is an unaligned one.
                let packed = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(wb.qs.as_ptr().cast::<__m128i>()) });
                qx[r] = _mm512_and_si512(_mm512_srlv_epi16(packed, shifts), low);
                mins[r] = _mm512_add_ps(mins[r], _mm512_mul_ps(_mm512_set1_ps(wb.m), s));
                wd[r] = _mm512_set1_ps(wb.d);
            }
            for k in 0..G {
                // SAFETY: 64-byte rows of a 64-byte aligned pack.
                let (qy, d) = unsafe { (_mm512_load_si512(p.qs[k].as_ptr().cast()), _mm512_load_ps(p.d[k].as_ptr())) };
                for r in 0..R {
                    let prod = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), qx[r], qy));
                    acc[r][k] = _mm512_fmadd_ps(_mm512_mul_ps(wd[r], d), prod, acc[r][k]);
                }
            }
        }
        std::array::from_fn(|r| {
            let mut m = [0f32; 16];
            // SAFETY: `m` holds 16 f32.
            unsafe { _mm512_storeu_ps(m.as_mut_ptr(), mins[r]) };
            let mut out = [0f32; 16];
            for k in 0..G {
                let [x, y] = sum_pairs(acc[r][k]);
                out[2 * k] = x + m[2 * k];
                out[2 * k + 1] = y + m[2 * k + 1];
            }
            out
        })
    }

    /// `R` `q8_0` weight rows times the first `2G` rows of a packed group, each product as
    /// [`q8_0`] computes it: the integer sums of four are the same (the weights offset by 128
    /// to unsigned bytes, the offset taken back out through `corr`; candle's `maddubs`
    /// never saturates on activations within ±127), scaled and summed in the same order.
    #[allow(clippy::needless_range_loop, reason = "k indexes the pack's registers and the accumulators alike")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    fn q8_0_tile<const R: usize, const G: usize>(w: [&[super::Q8Block]; R], a: &[Pack80]) -> [[f32; 16]; R] {
        let offset = _mm512_set1_epi8(-128);
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        let w = w.map(|w| &w[..a.len()]);
        for (b, p) in a.iter().enumerate() {
            let mut qx = [_mm512_setzero_si512(); R];
            let mut wd = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let wb = &w[r][b];
                // SAFETY: `qs` is 32 bytes; the load is an unaligned one.
                let q = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(wb.qs.as_ptr().cast::<__m256i>()) });
                qx[r] = _mm512_xor_si512(q, offset);
                wd[r] = _mm512_set1_ps(wb.d);
            }
            for k in 0..G {
                // SAFETY: 64-byte rows of a 64-byte aligned pack.
                let (qy, d, corr) = unsafe {
                    (_mm512_load_si512(p.qs[k].as_ptr().cast()), _mm512_load_ps(p.d[k].as_ptr()), _mm512_load_si512(p.corr[k].as_ptr().cast()))
                };
                for r in 0..R {
                    let prod = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, qx[r], qy));
                    acc[r][k] = _mm512_fmadd_ps(_mm512_mul_ps(wd[r], d), prod, acc[r][k]);
                }
            }
        }
        std::array::from_fn(|r| {
            let mut out = [0f32; 16];
            for k in 0..G {
                [out[2 * k], out[2 * k + 1]] = sum_pairs(acc[r][k]);
            }
            out
        })
    }

    // u8 x i8 pairs to i16 (at most 2 * 15 * 127: no saturation), then pairs of those to i32.
    kernel!(avx2, "avx2,fma", |qx, qy| _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), _mm256_set1_epi16(1)));
    // The same sums of four in one instruction.
    kernel!(vnni, "avx2,fma,avx512vnni,avx512vl", |qx, qy| _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, qy));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (splitmix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn random_q4_1(rng: &mut Rng, rows: usize, cols: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            bytes.extend(f16::from_f32(rng.unit().abs() * 0.02 + 0.001).to_le_bytes());
            bytes.extend(f16::from_f32(-rng.unit().abs() * 0.15).to_le_bytes());
            bytes.extend((0..16).map(|_| rng.next() as u8));
        }
        bytes
    }

    fn dequantized(m: &Q41Matrix) -> Vec<f32> {
        m.blocks
            .iter()
            .flat_map(|b| (0..BLOCK).map(move |v| b.d * f32::from(if v < 16 { b.qs[v] & 0x0f } else { b.qs[v - 16] >> 4 }) + b.m))
            .collect()
    }

    #[test]
    fn products_match_f32_within_the_activation_rounding() {
        let mut rng = Rng(7);
        let (rows, cols, n) = (40, 96, 5);
        let m = Q41Matrix::from_gguf_bytes(rows, cols, &random_q4_1(&mut rng, rows, cols)).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.unit() * 3.0).collect();
        let w = dequantized(&m);
        let got = m.matmul(&x, n, Kernel::best());
        for i in 0..n {
            for j in 0..rows {
                let want: f32 = (0..cols).map(|k| x[i * cols + k] * w[j * cols + k]).sum();
                // 8-bit activations: an error of at most half a step (max|x| / 254) per value.
                let bound: f32 = (0..cols).map(|k| w[j * cols + k].abs() * 3.0 / 254.0).sum::<f32>() + 1e-3;
                assert!((got[i * rows + j] - want).abs() <= bound, "[{i},{j}]: {} vs {want}", got[i * rows + j]);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_kernel_or_the_batch() {
        let mut rng = Rng(11);
        let (rows, cols, n) = (70, 64, 6);
        let m = Q41Matrix::from_gguf_bytes(rows, cols, &random_q4_1(&mut rng, rows, cols)).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.unit() * 5.0).collect();
        let all = m.matmul(&x, n, Kernel::best());
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for kernel in Kernel::available() {
            assert_eq!(bits(&m.matmul(&x, n, kernel)), bits(&all), "{kernel:?}");
        }
        for i in 0..n {
            let one = m.matmul(&x[i * cols..(i + 1) * cols], 1, Kernel::best());
            assert_eq!(one, all[i * rows..(i + 1) * rows], "row {i} alone");
        }
    }

    /// The same with many rows (the grouped kernel, its partial groups and a last task of
    /// fewer weight rows, one of them odd), against the portable kernel and one row at a time.
    #[test]
    fn many_rows_give_the_bits_of_one_row_on_every_kernel() {
        let mut rng = Rng(13);
        let (rows, cols) = (71, 96);
        let m = Q41Matrix::from_gguf_bytes(rows, cols, &random_q4_1(&mut rng, rows, cols)).unwrap();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for n in [8, 16, 17, 37] {
            let x: Vec<f32> = (0..n * cols).map(|i| rng.unit() * [0.5, 4.0, 30.0][i % 3]).collect();
            let want = m.matmul(&x, n, Kernel::Portable);
            for kernel in Kernel::available() {
                assert_eq!(bits(&m.matmul(&x, n, kernel)), bits(&want), "{kernel:?}, {n} rows");
            }
            for i in 0..n {
                let one = m.matmul(&x[i * cols..(i + 1) * cols], 1, Kernel::best());
                assert_eq!(bits(&one), bits(&want[i * rows..(i + 1) * rows]), "row {i} of {n} alone");
            }
        }
    }

    /// The q8_0 products of many rows (the grouped kernel where it runs) have the bits of the
    /// same rows one at a time, including weights of -128.
    #[test]
    fn many_q8_0_rows_give_the_bits_of_one_row() {
        if !Q80Matrix::supported(576) {
            return;
        }
        let mut rng = Rng(17);
        let (rows, cols) = (37, 576);
        let mut bytes = Vec::new();
        for b in 0..rows * cols / BLOCK {
            bytes.extend(f16::from_f32(rng.unit().abs() * 0.01).to_le_bytes());
            bytes.extend((0..BLOCK).map(|i| if (b + i) % 29 == 0 { 0x80 } else { rng.next() as u8 }));
        }
        let m = Q80Matrix::from_gguf_bytes(rows, cols, &bytes).unwrap();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for n in [8, 23, 40] {
            let x: Vec<f32> = (0..n * cols).map(|i| rng.unit() * [0.5, 4.0, 30.0][i % 3]).collect();
            for kernel in Kernel::available().into_iter().skip(1) {
                let all = m.matmul(&x, n, kernel);
                for i in 0..n {
                    let one = m.matmul(&x[i * cols..(i + 1) * cols], 1, kernel);
                    assert_eq!(bits(&one), bits(&all[i * rows..(i + 1) * rows]), "{kernel:?}: row {i} of {n} alone");
                }
            }
        }
    }

    /// The block layout as candle's quantizer writes it and its dequantizer reads it.
    #[test]
    fn blocks_read_as_candle_writes_them() {
        use candle_core::Device;
        use candle_core::quantized::{GgmlDType, QTensor};
        let mut rng = Rng(3);
        let (rows, cols, n) = (64, 576, 3);
        let w = Tensor::from_vec((0..rows * cols).map(|_| rng.unit() * 0.1).collect::<Vec<f32>>(), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let ours = Q41Matrix::from_gguf_bytes(rows, cols, &q.data().unwrap()).unwrap();
        let exact = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(dequantized(&ours), exact);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.unit() * 4.0).collect();
        let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
        let got = ours.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..n {
            for j in 0..rows {
                let want: f32 = (0..cols).map(|k| x[i * cols + k] * exact[j * cols + k]).sum();
                let bound: f32 = (0..cols).map(|k| exact[j * cols + k].abs() * 4.0 / 254.0).sum::<f32>() + 1e-3;
                assert!((got[i * rows + j] - want).abs() <= bound, "[{i},{j}]: {} vs {want}", got[i * rows + j]);
            }
        }
    }

    /// The q8_0 products have candle's bits, for any number of rows (candle's own results do
    /// not depend on how many rows run together either).
    #[test]
    fn q8_0_products_are_candles_bit_for_bit() {
        use candle_core::Device;
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        use candle_core::Module;
        if !Q80Matrix::supported(576) {
            return;
        }
        let mut rng = Rng(5);
        let (rows, cols) = (72, 576);
        let w = Tensor::from_vec((0..rows * cols).map(|_| rng.unit() * 0.2).collect::<Vec<f32>>(), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let ours = Q80Matrix::from_gguf_bytes(rows, cols, &q.data().unwrap()).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap();
        let bits = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for n in [1, 3, 4, 9] {
            // Activations of several magnitudes, with exact halves for the rounding.
            let mut x: Vec<f32> = (0..n * cols).map(|i| rng.unit() * [0.5, 4.0, 30.0][i % 3]).collect();
            x[5] = 2.5;
            let x = Tensor::from_vec(x, (n, cols), &Device::Cpu).unwrap();
            assert_eq!(bits(ours.forward(&x).unwrap()), bits(theirs.forward(&x).unwrap()), "{n} rows");
        }
    }

    #[test]
    fn activations_round_half_to_even() {
        let mut x = [0f32; BLOCK];
        x[0] = 127.0;
        (x[1], x[2], x[3], x[4], x[5]) = (2.5, -2.5, 3.5, 0.49, -126.6);
        let a = quantize_q8_1(&x);
        assert_eq!(&a.qs[..6], &[127, 2, -2, 4, 0, -127]);
        for (q, v) in a.qs.iter().zip(x) {
            assert_eq!(*q, v.round_ties_even() as i8);
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(Q41Matrix::from_gguf_bytes(2, 48, &[0; 60]).is_err());
        assert!(Q41Matrix::from_gguf_bytes(2, 64, &[0; 79]).is_err());
    }
}
