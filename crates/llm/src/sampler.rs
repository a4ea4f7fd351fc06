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
    Candidates::new(logits, p).draw(uniform(p.seed, step))
}

/// What a draw at temperature > 0 chooses from: every token's weight, in the sampler's order,
/// and the nucleus. [`sample`] is `Candidates::new` then [`Candidates::draw`]; a checker holding
/// the logits of a position reads the same numbers (the interval of a claimed token).
#[derive(Debug, Clone)]
pub struct Candidates {
    /// Every token with its weight `exp((l - max) / T)`, by weight (highest first), then id.
    pub sorted: Vec<(u32, f64)>,
    /// The nucleus is `sorted[..keep]`: the shortest prefix whose mass reaches `top_p` of the
    /// total.
    pub keep: usize,
    /// The nucleus mass, summed in order (the scale of the draw).
    pub nucleus: f64,
}

impl Candidates {
    /// The candidates of `logits` under `p` (temperature > 0).
    pub fn new(logits: &[f32], p: &SamplingParams) -> Self {
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
        Self { sorted: cand, keep, nucleus }
    }

    /// The token drawn by `u` in [0, 1): the first whose cumulative mass exceeds `u * nucleus`.
    pub fn draw(&self, u: f64) -> u32 {
        let target = u * self.nucleus;
        let mut acc = 0.0;
        for c in &self.sorted[..self.keep] {
            acc += c.1;
            if acc > target {
                return c.0;
            }
        }
        self.sorted[self.keep - 1].0
    }

    /// The draws that choose `token`: `[lo, hi)` such that [`Candidates::draw`] returns
    /// `token` exactly when `lo <= u * nucleus < hi` (cumulative masses summed as `draw` sums
    /// them); `None` outside the nucleus.
    pub fn interval(&self, token: u32) -> Option<(f64, f64)> {
        let mut acc = 0.0;
        for c in &self.sorted[..self.keep] {
            let lo = acc;
            acc += c.1;
            if c.0 == token {
                return Some((lo, acc));
            }
        }
        None
    }
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

    /// `sample` as it was before it was split into `Candidates`, kept to pin its outputs.
    fn reference_sample(logits: &[f32], p: &SamplingParams, step: u32) -> u32 {
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

    #[test]
    fn candidates_draw_as_before_and_intervals_say_which_draws_choose_a_token() {
        let mut draws = 0;
        for case in 0..40u64 {
            // Logits with ties, a long flat tail and a few peaks.
            let logits: Vec<f32> = (0..500u64).map(|i| ((uniform(case, i as u32) * 12.0).floor() as f32 - 6.0) * if i % 7 == 0 { 1.5 } else { 0.5 }).collect();
            for (temperature, top_p) in [(0.3, 0.5), (0.8, 0.9), (1.0, 1.0), (1.7, 0.95)] {
                let p = SamplingParams { temperature, top_p, seed: case * 31 + 5 };
                let c = Candidates::new(&logits, &p);
                for step in 0..20 {
                    let u = uniform(p.seed, step);
                    let id = sample(&logits, &p, step);
                    assert_eq!(id, reference_sample(&logits, &p, step));
                    let (lo, hi) = c.interval(id).expect("the drawn token is in the nucleus");
                    assert!(lo <= u * c.nucleus && u * c.nucleus < hi);
                    draws += 1;
                }
                let outside = c.sorted.get(c.keep).map(|x| x.0);
                assert!(outside.is_none_or(|t| c.interval(t).is_none()));
            }
        }
        assert_eq!(draws, 3200);
    }
}
