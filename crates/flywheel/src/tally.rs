//! Roll-ups: request events counted per time bucket and per key (model, app, payer, mode,
//! outcome, check). The report reads only these, so a report over a stored roll-up and one over
//! the raw events it came from are the same report (docs/flywheel.md, "Roll-ups").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use verinet_primitives::Address;

use crate::RequestEvent;

/// What a request is counted under: everything the report groups or filters by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TallyKey {
    /// Model name (empty when the request never resolved one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// App id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Who paid or tried to (never the zero address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Address>,
    /// Verification mode.
    pub mode: String,
    /// HTTP status.
    pub status: u16,
    /// Error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Check outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// Something was captured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paid: bool,
}

/// Sums over the requests of one key in one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Requests.
    #[serde(rename = "n")]
    pub requests: u64,
    /// Of them, with a payment attached.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payment_attempts: u64,
    /// Captured, base units.
    #[serde(default, skip_serializing_if = "is_zero_u128", with = "crate::event::amount")]
    pub charged: u128,
    /// The captured split by role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "crate::event::amounts")]
    pub earnings: BTreeMap<String, u128>,
    /// Language models: prompt (or embedding input) tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_tokens: u64,
    /// Language models: tokens generated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completion_tokens: u64,
    /// The `validator` part of the split, of requests with tokens (verification per token).
    #[serde(default, skip_serializing_if = "is_zero_u128", with = "crate::event::amount")]
    pub token_validator_fees: u128,
    /// Requests with at least one worker refuted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disputed_requests: u64,
    /// Refutations (a request can refute several workers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refutations: u64,
    /// The workers refuted.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub refuted: BTreeSet<Address>,
    /// Whole-request time, ms.
    #[serde(default, skip_serializing_if = "Hist::is_empty")]
    pub latency: Hist,
    /// Wait for an execution slot, ms.
    #[serde(default, skip_serializing_if = "Hist::is_empty")]
    pub queue: Hist,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u128(v: &u128) -> bool {
    *v == 0
}

impl Tally {
    /// Adds one request.
    pub fn add(&mut self, r: &RequestEvent) {
        self.requests += 1;
        self.payment_attempts += u64::from(r.payment_attempted);
        self.charged += r.charged;
        for (role, a) in &r.earnings {
            *self.earnings.entry(role.clone()).or_default() += a;
        }
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        if r.prompt_tokens + r.completion_tokens > 0 {
            self.token_validator_fees += r.earnings.get("validator").copied().unwrap_or(0);
        }
        self.disputed_requests += u64::from(!r.disputed.is_empty());
        self.refutations += r.disputed.len() as u64;
        self.refuted.extend(r.disputed.iter().copied());
        self.latency.add(r.total_ms);
        self.queue.add(r.queue_ms);
    }

    /// Adds another tally of the same key.
    pub fn merge(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.payment_attempts += o.payment_attempts;
        self.charged += o.charged;
        for (role, a) in &o.earnings {
            *self.earnings.entry(role.clone()).or_default() += a;
        }
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.token_validator_fees += o.token_validator_fees;
        self.disputed_requests += o.disputed_requests;
        self.refutations += o.refutations;
        self.refuted.extend(o.refuted.iter().copied());
        self.latency.merge(&o.latency);
        self.queue.merge(&o.queue);
    }
}

impl TallyKey {
    /// The key of one request.
    pub fn of(r: &RequestEvent) -> TallyKey {
        TallyKey {
            model: r.model.clone().unwrap_or_default(),
            app: r.app.clone(),
            payer: r.payer.filter(|p| !p.is_zero()),
            mode: r.mode.clone(),
            status: r.status,
            error: r.error.clone(),
            check: r.check.clone(),
            paid: r.charged > 0,
        }
    }

    /// Answered; a stream its client left midway counts when it was paid for the tokens sent
    /// (docs/llm.md).
    pub fn is_served(&self) -> bool {
        (self.status == 200 && self.error.is_none()) || (self.error.as_deref() == Some("client_closed") && self.paid)
    }

    /// A trusted decision: served, paid, and not refuted by a check.
    pub fn is_trusted(&self) -> bool {
        self.is_served() && self.paid && self.check.as_deref() != Some("disputed")
    }
}

/// A latency histogram: counts per bucket, four buckets per doubling from 10 µs, so any
/// quantile read from it is within 9% of the true value. Sparse: only buckets that were hit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hist(BTreeMap<u8, u64>);

/// Lower edge of bucket 0, ms.
const HIST_BASE_MS: f64 = 0.01;
/// Buckets per doubling.
const HIST_PER_OCTAVE: f64 = 4.0;

impl Hist {
    fn bucket(ms: f64) -> u8 {
        if ms.is_nan() || ms <= HIST_BASE_MS {
            return 0;
        }
        ((ms / HIST_BASE_MS).log2() * HIST_PER_OCTAVE).floor().clamp(0.0, 255.0) as u8
    }

    /// The middle (geometric) of bucket `i`, ms.
    fn value(i: u8) -> f64 {
        HIST_BASE_MS * ((f64::from(i) + 0.5) / HIST_PER_OCTAVE).exp2()
    }

    /// The upper edge of bucket `i`, ms.
    pub fn upper_edge(i: u8) -> f64 {
        HIST_BASE_MS * ((f64::from(i) + 1.0) / HIST_PER_OCTAVE).exp2()
    }

    /// Counts one value.
    pub fn add(&mut self, ms: f64) {
        *self.0.entry(Self::bucket(ms)).or_default() += 1;
    }

    /// Adds another histogram.
    pub fn merge(&mut self, o: &Hist) {
        for (b, n) in &o.0 {
            *self.0.entry(*b).or_default() += n;
        }
    }

    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// `(bucket, count)`, lowest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.0.iter().map(|(b, n)| (*b, *n))
    }

    /// The `q` quantile (0..=1), ms; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (b, c) in &self.0 {
            seen += c;
            if seen >= rank {
                return Self::value(*b);
            }
        }
        0.0
    }
}

/// Tallies by `(bucket start ms, key)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies(pub BTreeMap<(i64, TallyKey), Tally>);

impl Tallies {
    /// Counts `r` at `at_ms` in buckets of `bucket_ms`.
    pub fn add(&mut self, at_ms: i64, bucket_ms: i64, r: &RequestEvent) {
        let start = at_ms.div_euclid(bucket_ms) * bucket_ms;
        self.0.entry((start, TallyKey::of(r))).or_default().add(r);
    }

    /// Adds a tally (merging with one of the same bucket and key).
    pub fn merge(&mut self, bucket: i64, key: TallyKey, t: &Tally) {
        self.0.entry((bucket, key)).or_default().merge(t);
    }

    /// The same counts in coarser buckets of `bucket_ms`.
    pub fn coarsen(&self, bucket_ms: i64) -> Tallies {
        let mut out = Tallies::default();
        for ((b, k), t) in &self.0 {
            out.merge(b.div_euclid(bucket_ms) * bucket_ms, k.clone(), t);
        }
        out
    }

    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut h = Hist::default();
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 0.1).collect();
        for v in &values {
            h.add(*v);
        }
        for (q, truth) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0)] {
            let got = h.quantile(q);
            assert!((got / truth - 1.0).abs() < 0.1, "q{q}: {got} vs {truth}");
        }
        assert_eq!(Hist::default().quantile(0.5), 0.0);
    }

    #[test]
    fn tallies_round_trip_through_json_and_merge_like_their_events() {
        let ev = |ms: f64, payer: u8, charged: u128| RequestEvent {
            model: Some("m".into()),
            payer: Some(Address::repeat_byte(payer)),
            mode: "sampled".into(),
            status: 200,
            charged,
            payment_attempted: true,
            earnings: BTreeMap::from([("validator".to_string(), u128::MAX / 4)]),
            disputed: vec![Address::repeat_byte(9)],
            total_ms: ms,
            prompt_tokens: 3,
            ..Default::default()
        };
        let (a, b) = (ev(1.0, 1, 5), ev(30.0, 1, 7));
        let mut t = Tally::default();
        t.add(&a);
        t.add(&b);
        let (mut ta, mut tb) = (Tally::default(), Tally::default());
        ta.add(&a);
        tb.add(&b);
        ta.merge(&tb);
        assert_eq!(t, ta);
        assert_eq!((t.requests, t.charged, t.refutations, t.refuted.len(), t.prompt_tokens), (2, 12, 2, 1, 6));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Tally>(&json).unwrap(), t);
        let key = TallyKey::of(&a);
        assert_eq!(serde_json::from_str::<TallyKey>(&serde_json::to_string(&key).unwrap()).unwrap(), key);
        // A second's buckets coarsened to a minute are the minute's buckets.
        let mut secs = Tallies::default();
        let mut mins = Tallies::default();
        for (i, e) in [a, b].iter().enumerate() {
            secs.add(59_000 + i as i64 * 2_000, 1_000, e);
            mins.add(59_000 + i as i64 * 2_000, 60_000, e);
        }
        assert_eq!(secs.coarsen(60_000), mins);
        assert_eq!(mins.0.len(), 2);
    }
}
