//! Checking a completion without generating it again: one teacher-forced forward pass over
//! prompt + output gives the logits that decided every output token, and the sampler's own
//! rule, replayed on them, says which token an honest node had to pick at each position.
//!
//! The pass does not reproduce decoding's logits bit for bit: the weight products are the same
//! bits for one row and for many, but attention is not (decoding runs one query row against the
//! cache, the pass a masked matrix), and the 8-bit rounding of activations in every layer turns
//! those last bits into logit differences of up to ~1.5. So a token is also accepted where the
//! logits that decide it are within [`CheckTolerance::logit_gap`] of choosing it; every such
//! acceptance is reported.
//!
//! The rule, at output position `i` with the teacher-forced logits `l` and the claimed token
//! `c` (`g` = the tolerance):
//!
//! - **greedy** (temperature 0): `c` is the argmax (lowest id on exact ties), or a near tie:
//!   `max(l) - l[c] <= g`.
//! - **sampled**: `c` is the token [`Candidates::draw`] picks with `u = uniform(seed, i)`, or
//!   a near tie: `c` is drawn by `u` for some logits `l'` whose pairwise differences are each
//!   within `g` of those of `l` (`|(l'_a - l'_b) - (l_a - l_b)| <= g`). Then every ratio of
//!   weights moves by at most `exp(g / T)`, so each cumulative mass that bounds the interval
//!   of `c` moves by at most `g / T` in log-odds; tokens whose logits are within `g` of `l[c]`
//!   may sit on either side of `c` in the order, and tokens within `g` of the nucleus edge may
//!   be in or out of the nucleus. `u` must lie in the widest interval those allow (see
//!   `sampled_accepts`). With `g = 0` it is the exact interval.
//!
//! The reported `gap` of a deviation is the smallest tolerance that accepts its token, in
//! logits for both modes, so one number bounds both.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::engine::end_after;
use crate::{Candidates, Finish, GenRequest, LanguageModel, LlmError, Result, SamplingParams, argmax, uniform};

/// How far a claimed token's logits may be from choosing it and still be accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckTolerance {
    /// The largest logit gap accepted as a near tie: how much the logit differences of a
    /// position may move between the honest run and the check.
    ///
    /// The default, 1.0, is measured (`cargo run --release -p verinet-llm --example
    /// check_gaps -- "" 36`): 500 honest completions of SmolLM2-135M Q4_1 (50 prompts; greedy
    /// and T 0.3-1.2; each generated alone and again in a batch of four), 28,424 tokens, of
    /// which 4,364 were not the check's own choice (greedy 2%, sampled 19%). The smallest gap
    /// accepting each: median 0.037, 99th percentile 0.25, largest 0.43 (greedy 0.38). The
    /// tail grows by ~0.13 per tenfold more deviations: 0.5 would be passed about every 10^5
    /// honest tokens, 1.0 (2.3x the largest) about every 10^9, which also leaves room for other
    /// CPUs (not measured). The price: a forger may swap in a token within 1.0 of the check's
    /// choice (docs/llm.md, "Checking a completion").
    pub logit_gap: f32,
}

impl Default for CheckTolerance {
    fn default() -> Self {
        Self { logit_gap: 1.0 }
    }
}

/// What [`check_completion`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionCheck {
    /// Output positions whose token was checked against the teacher-forced logits: up to the
    /// end of the generation, or up to and including a refuted token.
    pub checked: usize,
    /// Positions whose token was not the check's own choice but within the tolerance.
    pub near_ties: Vec<Deviation>,
    /// The first position at fault, if any.
    pub refuted: Option<Refutation>,
}

impl CompletionCheck {
    /// Whether the completion is accepted.
    pub fn accepted(&self) -> bool {
        self.refuted.is_none()
    }
}

/// A position where the claimed token is not the one the check picks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deviation {
    /// Output position (0 = the first generated token).
    pub position: usize,
    /// The token the output has there.
    pub claimed: u32,
    /// The token the sampler picks from the teacher-forced logits.
    pub expected: u32,
    /// The smallest [`CheckTolerance::logit_gap`] that accepts `claimed` (greedy: the
    /// expected token's logit minus the claimed one's; infinite when no tolerance would).
    pub gap: f32,
    /// Sampled decoding: how far the draw `u` lies outside the claimed token's interval of the
    /// teacher-forced nucleus, as a share of the nucleus; `None` for greedy decoding or a
    /// claimed token outside that nucleus.
    pub margin: Option<f64>,
}

/// Why a completion is refuted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refutation {
    /// The token is not acceptable at its position.
    Token(Deviation),
    /// The output goes on after the generation had ended (an end-of-turn token, a stop
    /// string, or `max_tokens`): `position` is the first token past the end.
    AfterEnd {
        /// The first position past the end.
        position: usize,
        /// The token there.
        claimed: u32,
        /// How the generation had ended.
        ended: Finish,
    },
    /// The finish reason does not match how the output ends: `actual` is `None` when it
    /// neither stops nor reaches `max_tokens` (cut short; `position` is one past the last
    /// token), else the reason the last token gives (`position` is the last token).
    Finish {
        /// The position at fault.
        position: usize,
        /// The finish reason claimed.
        claimed: Finish,
        /// How the output really ends.
        actual: Option<Finish>,
    },
}

impl Refutation {
    /// The output position at fault.
    pub fn position(&self) -> usize {
        match *self {
            Refutation::Token(d) => d.position,
            Refutation::AfterEnd { position, .. } | Refutation::Finish { position, .. } => position,
        }
    }
}

/// Checks that `output` is what `request` (prompt, sampling, `max_tokens`, stop strings: the
/// terms a receipt binds) makes this model generate, ending with `finish`, within `tol`.
///
/// One teacher-forced forward pass over the prompt and the output up to its end, then per
/// position: the sampler's choice from those logits (greedy: an argmax; sampled: one sort of
/// the vocabulary, as the sampler does it). The ending is replayed as the engine decides it:
/// an end-of-turn token or a stop string ends with `Stop` (an end-of-turn token must itself
/// be acceptable at its position), reaching `request.max_tokens` ends with `Length`; tokens
/// after the end and an output that stops short are refuted. `max_tokens` is part of the
/// request because a `length` finish is only true at exactly `max_tokens` tokens.
///
/// Errors are the check's own failures (an empty prompt, `max_tokens` 0, a sequence longer
/// than the model's context, an engine failure), never a verdict on the output.
pub fn check_completion(
    model: &LanguageModel,
    request: &GenRequest,
    output: &[u32],
    finish: Finish,
    tol: &CheckTolerance,
) -> Result<CompletionCheck> {
    if request.prompt.is_empty() || request.max_tokens == 0 {
        return Err(LlmError::Input("a checked request needs a prompt and max_tokens of at least 1".into()));
    }
    // The ending first (no logits needed): where an honest generation of these tokens stops.
    let mut bytes = Vec::new();
    let mut ended = None;
    for (i, &id) in output.iter().enumerate() {
        if let (Some(how), _, _) = end_after(model.codec(), request, id, i + 1, &mut bytes) {
            ended = Some((i, how));
            break;
        }
    }
    let mut upto = ended.map_or(output.len(), |(i, _)| i + 1);
    // A token the model does not have is refuted at its position; it is never run (the last
    // checked token is not fed to the network).
    if let Some(bad) = output[..upto].iter().position(|&id| id as usize >= model.info().vocab_size) {
        upto = bad + 1;
        ended = None;
    }
    let mut check = CompletionCheck { checked: upto, near_ties: Vec::new(), refuted: None };
    if upto == 0 {
        check.refuted = Some(Refutation::Finish { position: 0, claimed: finish, actual: None });
        return Ok(check);
    }

    let logits = model.teacher_forced_logits(&request.prompt, &output[..upto])?;
    let rows = flat_rows(&logits)?;
    let vocab = rows.len() / upto;
    let verdicts: Vec<Option<(Deviation, bool)>> = (0..upto)
        .into_par_iter()
        .map(|i| position_verdict(&rows[i * vocab..(i + 1) * vocab], output[i], &request.sampling, i, tol.logit_gap))
        .collect();
    for (dev, accepted) in verdicts.into_iter().flatten() {
        if !accepted {
            check.checked = dev.position + 1;
            check.refuted = Some(Refutation::Token(dev));
            return Ok(check);
        }
        check.near_ties.push(dev);
    }
    check.refuted = match ended {
        Some((i, how)) if i + 1 < output.len() => Some(Refutation::AfterEnd { position: i + 1, claimed: output[i + 1], ended: how }),
        Some((i, how)) if how != finish => Some(Refutation::Finish { position: i, claimed: finish, actual: Some(how) }),
        None => Some(Refutation::Finish { position: output.len(), claimed: finish, actual: None }),
        Some(_) => None,
    };
    Ok(check)
}

/// The logits `[n, vocab]` as one row-major buffer: the only copy the check makes.
fn flat_rows(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits.flatten_all()?.to_vec1::<f32>()?)
}

/// `None` when `claimed` is the sampler's own choice from `row`; otherwise the deviation and
/// whether it is within `gap` (a near tie).
fn position_verdict(row: &[f32], claimed: u32, p: &SamplingParams, position: usize, gap: f32) -> Option<(Deviation, bool)> {
    if p.temperature <= 0.0 {
        let expected = argmax(row);
        if expected == claimed {
            return None;
        }
        // A token outside the vocabulary is never acceptable, whatever the tolerance.
        let (need, known) = match row.get(claimed as usize) {
            Some(l) => (row[expected as usize] - l, true),
            None => (f32::INFINITY, false),
        };
        return Some((Deviation { position, claimed, expected, gap: need, margin: None }, known && need <= gap));
    }
    let cands = Candidates::new(row, p);
    let u = uniform(p.seed, position as u32);
    let expected = cands.draw(u);
    if expected == claimed {
        return None;
    }
    let margin = cands.interval(claimed).map(|(lo, hi)| {
        let t = u * cands.nucleus;
        (if t < lo { lo - t } else { t - hi }) / cands.nucleus
    });
    let view = SampledView::new(row, &cands, claimed, p);
    let gap = f64::from(gap);
    let accepted = view.as_ref().is_some_and(|v| sampled_accepts(v, u, gap));
    let need = view.as_ref().map_or(f32::INFINITY, |v| {
        // Bisect below the tolerance when accepted, above it when not, within MAX_GAP.
        let (lo, hi) = match (accepted, gap < MAX_GAP) {
            (true, true) => (0.0, gap),
            (true, false) => (0.0, MAX_GAP),
            (false, _) => (gap.min(MAX_GAP), MAX_GAP),
        };
        if (accepted && hi == gap) || sampled_accepts(v, u, hi) { smallest_gap(v, u, lo, hi) } else { f32::INFINITY }
    });
    Some((Deviation { position, claimed, expected, gap: need, margin }, accepted))
}

/// Beyond this a gap is reported as infinite: no honest noise comes close.
const MAX_GAP: f64 = 64.0;

/// The smallest gap in `(lo, hi]` under which `sampled_accepts` holds, knowing it holds at
/// `hi` (bisection; it is monotone in the gap).
fn smallest_gap(v: &SampledView<'_>, u: f64, mut lo: f64, mut hi: f64) -> f32 {
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if sampled_accepts(v, u, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi as f32
}

/// One position's candidates as the tolerance rule reads them.
struct SampledView<'a> {
    /// The teacher-forced logits.
    row: &'a [f32],
    /// Token ids in the sampler's order.
    ids: Vec<u32>,
    /// `mass[k]`: the weight of the first `k` candidates, summed in order.
    mass: Vec<f64>,
    /// Rank of the claimed token.
    rank: usize,
    temperature: f64,
    top_p: f64,
}

impl<'a> SampledView<'a> {
    fn new(row: &'a [f32], cands: &Candidates, claimed: u32, p: &SamplingParams) -> Option<Self> {
        let rank = cands.sorted.iter().position(|c| c.0 == claimed)?;
        let mut mass = Vec::with_capacity(cands.sorted.len() + 1);
        let mut acc = 0.0;
        mass.push(acc);
        for c in &cands.sorted {
            acc += c.1;
            mass.push(acc);
        }
        let ids = cands.sorted.iter().map(|c| c.0).collect();
        Some(Self { row, ids, mass, rank, temperature: f64::from(p.temperature), top_p: f64::from(p.top_p.clamp(f32::MIN_POSITIVE, 1.0)) })
    }

    fn logit(&self, k: usize) -> f64 {
        f64::from(self.row[self.ids[k] as usize])
    }

    /// Candidates whose logit is above `x` (a prefix of the order).
    fn above(&self, x: f64) -> usize {
        self.ids.partition_point(|&id| f64::from(self.row[id as usize]) > x)
    }

    /// Candidates whose logit is at least `x`.
    fn at_least(&self, x: f64) -> usize {
        self.ids.partition_point(|&id| f64::from(self.row[id as usize]) >= x)
    }
}

/// Whether some logits within `gap` of the teacher-forced ones (pairwise differences) make the
/// draw `u` choose the claimed token. A relaxation of that question, from bounds that each
/// hold (the two ends of the interval may use different admissible logits):
///
/// - `A` = candidates above `l[c] + gap` come before `c` whatever the noise; `B` = candidates
///   at least `l[c] - gap` (with `c`) may; so the mass before `c` is at least that of the
///   first `A` and the mass through `c` at most that of the first `B`.
/// - candidate `k` may be in the nucleus when the mass certainly before it may stay under
///   `top_p` of the total (`k < K_hi`), and certainly is when the mass possibly before it
///   stays under (`k < K_lo`); `c` must be below `K_hi`.
/// - every ratio of masses moves by at most `exp(gap / T)`.
///
/// Accepted when `u` lies in `[shrink(m(A) : m(K_hi) - m(A)), grow(m(B) : m(K_lo) - m(B)))`,
/// each end a share of the nucleus.
fn sampled_accepts(v: &SampledView<'_>, u: f64, gap: f64) -> bool {
    let s = gap / v.temperature;
    let total = v.mass[v.ids.len()];
    let lc = v.logit(v.rank);
    let k_hi = prefix_len(v.ids.len(), |k| {
        let before = v.mass[v.above(v.logit(k) + gap)];
        shrink(before, total - before, s) < v.top_p
    });
    if v.rank >= k_hi {
        return false;
    }
    let k_lo = prefix_len(v.ids.len(), |k| {
        let before = v.mass[v.at_least(v.logit(k) - gap)] - (v.mass[k + 1] - v.mass[k]);
        grow(before, total - before, s) < v.top_p
    });
    let a = v.above(lc + gap);
    let b = v.at_least(lc - gap);
    let lo = shrink(v.mass[a], v.mass[k_hi.max(a)] - v.mass[a], s);
    let hi = if k_lo <= b { 1.0 } else { grow(v.mass[b], v.mass[k_lo] - v.mass[b], s) };
    lo <= u && u < hi
}

/// How many of `0..n` satisfy `pred`, which holds for a prefix of them.
fn prefix_len(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The share of `x` in `x + rest` after `x` loses a factor `exp(s)` against `rest`.
fn shrink(x: f64, rest: f64, s: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else if rest <= 0.0 {
        1.0
    } else {
        let x = x * (-s).exp();
        x / (x + rest)
    }
}

/// The share of `x` in `x + rest` after `x` gains a factor `exp(s)` against `rest`.
fn grow(x: f64, rest: f64, s: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else if rest <= 0.0 {
        1.0
    } else {
        x / (x + rest * (-s).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn params(temperature: f32, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_p, seed }
    }

    /// Logits of a small vocabulary: a few likely tokens over a long flat-ish tail.
    fn logits(case: u64) -> Vec<f32> {
        (0..300u32).map(|i| (uniform(case, i) * 4.0) as f32 + if i % 37 == 0 { 5.0 } else { 0.0 }).collect()
    }

    #[test]
    fn at_zero_gap_the_sampled_rule_is_the_draw_and_it_only_widens() {
        for case in 0..30 {
            let row = logits(case);
            let p = params([0.4, 0.8, 1.0, 1.5][case as usize % 4], [0.5, 0.9, 1.0][case as usize % 3], case);
            let cands = Candidates::new(&row, &p);
            for step in 0..10u32 {
                let u = uniform(p.seed, step);
                let drawn = cands.draw(u);
                for &(token, _) in cands.sorted.iter().take(40) {
                    let v = SampledView::new(&row, &cands, token, &p).unwrap();
                    assert_eq!(sampled_accepts(&v, u, 0.0), token == drawn, "case {case} step {step} token {token}");
                    let mut before = false;
                    for gap in [0.0, 0.01, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0] {
                        let now = sampled_accepts(&v, u, gap);
                        assert!(now || !before, "acceptance is monotone in the gap");
                        before = now;
                    }
                }
                assert!(position_verdict(&row, drawn, &p, step as usize, 0.0).is_none());
            }
        }
    }

    #[test]
    fn two_near_tied_tokens_may_swap_within_the_gap_and_no_further() {
        // Token 0 just above token 1; the rest far below. A draw in token 0's interval may have
        // been token 1's under logits 0.05 apart the other way.
        let mut row = vec![-10f32; 50];
        (row[0], row[1]) = (3.0, 2.95);
        let p = params(1.0, 1.0, 3);
        let step = (0..100u32).find(|&s| uniform(3, s) < 0.3).unwrap() as usize;
        assert_eq!(sample(&row, &p, step as u32), 0);
        let (dev, accepted) = position_verdict(&row, 1, &p, step, 0.5).unwrap();
        assert!(accepted && (0.0499..0.0501).contains(&dev.gap), "{dev:?}");
        assert_eq!(dev.expected, 0);
        let (_, accepted) = position_verdict(&row, 1, &p, step, 0.04).unwrap();
        assert!(!accepted);
        // A tail token is nowhere near.
        let (dev, accepted) = position_verdict(&row, 7, &p, step, 0.5).unwrap();
        assert!(!accepted && dev.gap > 10.0, "{dev:?}");
    }

    #[test]
    fn greedy_gaps_are_logit_differences() {
        let row = [1.0f32, 4.0, 3.75, -2.0];
        let p = params(0.0, 1.0, 0);
        assert!(position_verdict(&row, 1, &p, 0, 0.0).is_none());
        let (dev, accepted) = position_verdict(&row, 2, &p, 0, 0.3).unwrap();
        assert!(accepted && dev.gap == 0.25 && dev.expected == 1 && dev.margin.is_none());
        assert!(!position_verdict(&row, 0, &p, 0, 0.3).unwrap().1);
        assert!(position_verdict(&row, 9, &p, 0, 100.0).unwrap().0.gap.is_infinite(), "a token outside the vocabulary");
    }

    #[test]
    fn a_token_outside_the_nucleus_needs_the_gap_that_brings_it_in() {
        // top_p 0.5 keeps token 0 alone (p 0.58); token 1 (p 0.21) enters once the mass
        // before it can fall under half: token 0's odds (1.36) down to 1, a gap of ln 1.36.
        let mut row = vec![f32::NEG_INFINITY; 10];
        (row[0], row[1], row[2]) = (1.0, 0.0, 0.0);
        let p = params(1.0, 0.5, 11);
        let cands = Candidates::new(&row, &p);
        assert_eq!(cands.keep, 1);
        let v = SampledView::new(&row, &cands, 1, &p).unwrap();
        let need = smallest_gap(&v, 0.9, 0.0, MAX_GAP);
        let share = (1f64.exp() / (1f64.exp() + 2.0)) as f32;
        let want = (share / (1.0 - share)).ln(); // odds of token 0 down to 1
        assert!((need - want).abs() < 1e-4, "{need} vs {want}");
    }
}
