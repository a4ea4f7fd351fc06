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

    /// `out[i][j] = x[i] · w[j]` for `x` of `n` rows of `cols`, `out` of `n` rows of `rows`.
    fn matmul(&self, x: &[f32], n: usize, kernel: Kernel) -> Vec<f32> {
        let acts: Vec<ABlock> = x.chunks_exact(BLOCK).map(quantize_q8_1).collect();
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

    fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        let acts: Vec<Q8Block> = x.chunks_exact(BLOCK).map(quantize_q8_0).collect();
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
        let out = self.matmul(&data[start..end], n);
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
    let mut out = vec![0f32; n * rows];
    for (j, col) in t.chunks_exact(n).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * rows + j] = *v;
        }
    }
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
        Kernel::Vnni => unsafe { x86::vnni(w, a) },
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

    use super::{ABlock, WBlock, sum_lanes};

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
