//! The sampler: a pure function of (logits, parameters, seed, step), so that anyone holding the
//! logits of a position can say which token an honest node had to pick there.
//!
//! - temperature 0: greedy, the highest logit (the lowest token id among equal ones).
//! - temperature > 0: `p_i ∝ exp((l_i - max) / T)` computed in f64; candidates sorted by
//!   probability (ties by token id); nucleus: the shortest prefix whose mass reaches
//!   `top_p` of the total; one uniform draw `u` in [0, 1) from SplitMix64 seeded with
//!   `seed ^ (step * 0x9E3779B97F4A7C15)` (its first output, top 53 bits); the token is the
//!   first whose cumulative mass exceeds `u * nucleus_mass`.

use serde::{Deserialize, Serialize};

/// How tokens are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// The PRNG seed (always reported, so every completion can be re-executed).
    pub seed: u64,
}

/// The token chosen at `step` (0 = the first generated token) from `logits`.
pub fn sample(logits: &[f32], p: &SamplingParams, step: u32) -> u32 {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let t = f64::from(p.temperature);
    let mut cand: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &l)| (i as u32, ((f64::from(l) - f64::from(max)) / t).exp())).collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = cand.iter().map(|c| c.1).sum();
    let top_p = f64::from(p.top_p.clamp(f32::MIN_POSITIVE, 1.0));
    let mut mass = 0.0;
    let mut keep = cand.len();
    for (i, c) in cand.iter().enumerate() {
        mass += c.1;
        if mass >= top_p * total {
            keep = i + 1;
            break;
        }
    }
    let nucleus: f64 = cand[..keep].iter().map(|c| c.1).sum();
    let target = uniform(p.seed, step) * nucleus;
    let mut acc = 0.0;
    for c in &cand[..keep] {
        acc += c.1;
        if acc > target {
            return c.0;
        }
    }
    cand[keep - 1].0
}

/// Index of the largest value (the first of equal ones).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The uniform draw in [0, 1) of `step` under `seed`.
pub fn uniform(seed: u64, step: u32) -> f64 {
    let mut z = (seed ^ u64::from(step).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_sampling_is_a_function_of_its_inputs() {
        let logits = [0.1, 2.0, 2.0, -1.0];
        let greedy = SamplingParams { temperature: 0.0, top_p: 1.0, seed: 7 };
        assert_eq!(sample(&logits, &greedy, 0), 1, "ties go to the lower id");
        let warm = SamplingParams { temperature: 1.0, top_p: 1.0, seed: 42 };
        let a: Vec<u32> = (0..50).map(|s| sample(&logits, &warm, s)).collect();
        let b: Vec<u32> = (0..50).map(|s| sample(&logits, &warm, s)).collect();
        assert_eq!(a, b);
        assert!(a.contains(&0) && a.contains(&1) && a.contains(&2), "draws spread: {a:?}");
        let other: Vec<u32> = (0..50).map(|s| sample(&logits, &SamplingParams { seed: 43, ..warm }, s)).collect();
        assert_ne!(a, other);
        // A tiny nucleus keeps only the most likely token.
        let narrow = SamplingParams { temperature: 1.0, top_p: 0.01, seed: 1 };
        assert!((0..20).all(|s| sample(&logits, &narrow, s) == 1));
        // The draw is uniform-ish: mean near 0.5.
        let mean: f64 = (0..10_000).map(|s| uniform(9, s)).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
