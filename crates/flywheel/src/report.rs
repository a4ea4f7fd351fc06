//! Per-layer metrics over a window of roll-ups, the trend against the window before, and the
//! bottleneck: the layer that loses the most demand (docs/flywheel.md, "The method").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use verinet_primitives::Address;

use crate::tally::{Hist, Tallies, TallyKey};
use crate::{Event, Tally};

/// What the events alone cannot tell: the inventory now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inventory {
    /// Models hosted (published, any version).
    pub hosted_models: u64,
    /// The executors and their standing.
    pub executors: Vec<ExecutorInfo>,
    /// What serving one request costs an operator (config), base units.
    pub operator_cost_per_request: u128,
    /// Since when the flywheel has data (unix ms): the oldest roll-up kept, or the node's start
    /// if that is older. Before it, "nothing happened" is unknown rather than zero.
    #[serde(default)]
    pub history_since_ms: i64,
}

/// One executor's standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutorInfo {
    /// Address.
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub address: Address,
    /// `worker` or `validator`.
    pub role: String,
    /// Reputation in (0, 1].
    pub reputation: f64,
    /// Gets work.
    pub active: bool,
}

/// The span a report covers: `[end - secs, end)`, compared with `[end - 2 secs, end - secs)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Window {
    /// Length, seconds (whole buckets).
    pub secs: u64,
    /// End, unix ms, exclusive: the end of the bucket holding "now".
    pub end_ms: i64,
    /// Roll-up bucket, ms: a second for windows up to [`Window::FINE_MAX_SECS`], else a minute.
    pub bucket_ms: i64,
}

impl Window {
    /// Longest window read from per-second roll-ups (its previous window included, 30 minutes).
    pub const FINE_MAX_SECS: u64 = 900;
    /// Per-second buckets.
    pub const SECOND_MS: i64 = 1_000;
    /// Per-minute buckets.
    pub const MINUTE_MS: i64 = 60_000;

    /// The window of `secs` ending with the bucket that holds `now_ms`.
    pub fn new(secs: u64, now_ms: i64) -> Window {
        let bucket_ms = if secs <= Self::FINE_MAX_SECS { Self::SECOND_MS } else { Self::MINUTE_MS };
        let bucket_secs = (bucket_ms / 1000) as u64;
        let secs = secs.max(1).div_ceil(bucket_secs) * bucket_secs;
        Window { secs, end_ms: (now_ms.div_euclid(bucket_ms) + 1) * bucket_ms, bucket_ms }
    }

    /// Window length, ms.
    pub fn len_ms(&self) -> i64 {
        i64::try_from(self.secs).unwrap_or(i64::MAX / 4000).saturating_mul(1000)
    }

    /// Start of this window.
    pub fn start_ms(&self) -> i64 {
        self.end_ms - self.len_ms()
    }

    /// Start of the window before, the first roll-up bucket the report reads.
    pub fn previous_start_ms(&self) -> i64 {
        self.end_ms - 2 * self.len_ms()
    }
}

/// The flywheel over a window: the headline and trend, one section per layer, every layer's
/// shortfall score, and the bottleneck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// Window length, seconds.
    pub window_secs: u64,
    /// Window end, unix ms (exclusive).
    pub end_ms: i64,
    /// The first line: is trusted usage growing, flat or shrinking, and why.
    pub headline: String,
    /// Usage, the headline: paid, receipted results (and how many of them were also checked).
    pub usage: Usage,
    /// Compute layer.
    pub compute: Compute,
    /// Models layer.
    pub models: Models,
    /// Applications layer.
    pub applications: Applications,
    /// Users layer.
    pub users: Users,
    /// Payments layer.
    pub payments: Payments,
    /// Incentives layer.
    pub incentives: Incentives,
    /// Verification layer.
    pub verification: Verification,
    /// Trust layer.
    pub trust: Trust,
    /// Every layer's shortfall, in flywheel order.
    pub scores: Vec<LayerScore>,
    /// Where demand stops.
    pub bottleneck: Bottleneck,
    /// The window in 20 slices, for charts.
    pub series: Vec<Point>,
}

/// The layer holding demand back, and why, with the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bottleneck {
    /// `compute`, `models`, `applications`, `users`, `payments`, `incentives`, `verification`,
    /// `trust`, or `none`.
    pub layer: String,
    /// One sentence with the numbers.
    pub reason: String,
    /// Its shortfall score (0 for `none`).
    pub score: f64,
    /// The next worst layer, when another one falls short too.
    pub runner_up: Option<String>,
    /// When this layer's failure shows as another layer's symptom: that layer (e.g. refused
    /// payments seen as users who do not return).
    pub symptom_in: Option<String>,
}

/// How far one layer falls below its healthy threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerScore {
    /// Layer.
    pub layer: String,
    /// `(healthy - passed) / healthy`, clamped to 0..=1: 0 healthy, 1 nothing gets through.
    /// `None`: too little traffic or history to judge.
    pub score: Option<f64>,
    /// The share of demand that got through this layer.
    pub passed: f64,
    /// The share a healthy layer lets through.
    pub healthy: f64,
    /// One sentence with the numbers.
    pub reason: String,
}

/// A count now against the window before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trend {
    /// In this window.
    pub now: u64,
    /// In the window before; `None` when the flywheel's data does not reach back that far.
    pub before: Option<u64>,
    /// `(now - before) / before`; `None` when there is no `before` or it is 0.
    pub growth: Option<f64>,
    /// `growing`, `flat`, `shrinking`, or `unknown` (too little history).
    pub direction: String,
}

impl Trend {
    /// Growth beyond this share either way is growing or shrinking.
    pub const FLAT_BAND: f64 = 0.1;

    fn new(now: u64, before: Option<u64>) -> Trend {
        let growth = before.filter(|b| *b > 0).map(|b| (now as f64 - b as f64) / b as f64);
        let direction = match (before, growth) {
            (None, _) => "unknown",
            (Some(0), _) if now > 0 => "growing",
            (_, Some(g)) if g > Self::FLAT_BAND => "growing",
            (_, Some(g)) if g < -Self::FLAT_BAND => "shrinking",
            _ => "flat",
        };
        Trend { now, before, growth, direction: direction.into() }
    }
}

/// One slice of the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Point {
    /// Slice start, unix ms.
    pub start_ms: i64,
    /// Requests (402 challenges excluded).
    pub requests: u64,
    /// Answered with a result.
    pub served: u64,
    /// Trusted decisions.
    pub trusted: u64,
    /// Answered with an error.
    pub errors: u64,
    /// Refuted results.
    pub disputed: u64,
    /// 95th percentile of request time, ms.
    pub p95_ms: f64,
    /// 95th percentile of the wait for an execution slot, ms.
    pub queue_p95_ms: f64,
}

/// Headline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Results that were paid for, carry a signed receipt and were not refuted by a check.
    pub trusted_decisions: u64,
    /// Of those, re-executed or quorum-agreed.
    pub verified_decisions: u64,
    /// Trusted decisions against the window before.
    pub trend: Trend,
    /// Trusted decisions per model.
    pub per_model: BTreeMap<String, u64>,
    /// Trusted decisions per app.
    pub per_app: BTreeMap<String, u64>,
    /// The trend per model (models with trusted decisions in either window).
    pub trend_per_model: BTreeMap<String, Trend>,
    /// The trend per app.
    pub trend_per_app: BTreeMap<String, Trend>,
    /// Language-model tokens of the trusted decisions.
    #[serde(default)]
    pub tokens: Tokens,
    /// Those tokens per model (language and embedding models only).
    #[serde(default)]
    pub tokens_per_model: BTreeMap<String, Tokens>,
    /// Those tokens per app.
    #[serde(default)]
    pub tokens_per_app: BTreeMap<String, Tokens>,
    /// Those tokens per paying user (address), the 10 with the most.
    #[serde(default)]
    pub tokens_per_user: Vec<(String, Tokens)>,
}

/// Prompt (or embedding input) and completion tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tokens {
    /// Read.
    pub prompt: u64,
    /// Generated.
    pub completion: u64,
}

impl Tokens {
    fn add(&mut self, t: &Tally) {
        self.prompt += t.prompt_tokens;
        self.completion += t.completion_tokens;
    }

    /// Both.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// Compute: capacity against demand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Compute {
    /// Requests received (402 challenges excluded: see [`Payments::challenges`]).
    pub requests: u64,
    /// Answered with a result.
    pub served: u64,
    /// Turned away for capacity: `overloaded`, `timeout`, `no_workers`, `busy`.
    pub rejected: u64,
    /// `rejected / requests`.
    pub rejection_rate: f64,
    /// Executors known.
    pub executors: u64,
    /// Executors in good standing.
    pub active_executors: u64,
    /// Median wait for an execution slot, ms.
    pub queue_p50_ms: f64,
    /// Median request time, ms.
    pub latency_p50_ms: f64,
    /// 95th percentile of request time, ms.
    pub latency_p95_ms: f64,
}

/// Models: hosted against used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Models {
    /// Hosted.
    pub hosted: u64,
    /// Served at least once in the window.
    pub active: u64,
    /// Hosted and not served in the window (reported, never a bottleneck on its own).
    pub idle: u64,
    /// Requests the model layer failed: unknown model, execution failed, every worker failed.
    pub failed: u64,
    /// Served results per model, most used first (top 10).
    pub volume: Vec<(String, u64)>,
    /// Share of served results going to the most used model.
    pub top_share: f64,
    /// Language models: prompt (and embedding input) tokens of served calls.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Language models: tokens generated by served calls.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// Applications.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applications {
    /// Apps that brought at least one served request.
    pub active: u64,
    /// Served requests per app (top 10).
    pub requests_per_app: Vec<(String, u64)>,
    /// Share of served requests that came through an app.
    pub share_via_apps: f64,
    /// Requests naming an app that does not exist.
    pub unknown_app: u64,
}

/// Users: payers who tried (served or refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Users {
    /// Distinct payers who tried in this window.
    pub unique: u64,
    /// Payers who tried in the window before (`None`: too little history).
    pub previous: Option<u64>,
    /// Payers of the window before who tried again in this one.
    pub recurring: u64,
    /// `recurring / previous`; `None` when the window before is not covered by history or had
    /// no payers.
    pub retention: Option<f64>,
    /// Payers new in this window.
    pub new: u64,
    /// Served requests per payer.
    pub requests_per_user: f64,
    /// Payers of the window before who did not come back, and of them how many had a payment
    /// refused or were turned away for capacity then.
    pub lapsed: u64,
    /// Of `lapsed`: refused a payment in the window before.
    pub lapsed_after_refusal: u64,
    /// Of `lapsed`: turned away for capacity in the window before.
    pub lapsed_after_rejection: u64,
}

/// Payments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payments {
    /// Requests captured.
    pub paid: u64,
    /// Base units captured.
    pub volume: u128,
    /// 402 challenges: priced requests sent without payment (an x402 client's first try is one).
    pub challenges: u64,
    /// Challenges not followed by a payment: `challenges - payment attempts`, at least 0. Far
    /// above zero means demand that does not pay.
    pub unpaid: u64,
    /// Requests that carried a payment.
    pub attempts: u64,
    /// Payments refused, by code.
    pub failures: BTreeMap<String, u64>,
    /// `failures / (paid + failures)`.
    pub failure_rate: f64,
    /// Captured per served request.
    pub revenue_per_request: f64,
}

/// Incentives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incentives {
    /// Captured by role.
    pub earnings: BTreeMap<String, u128>,
    /// Operator earnings per served request.
    pub operator_per_request: f64,
    /// Configured operator cost per request.
    pub operator_cost_per_request: u128,
    /// `operator_per_request - cost`.
    pub operator_margin: f64,
}

/// Verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// Requests that asked for `sampled` or `quorum`.
    pub requested: u64,
    /// Results checked (passed, disputed or quorum).
    pub checked: u64,
    /// Of `requested`, served and checked.
    pub requested_checked: u64,
    /// `checked / served`.
    pub share_verified: f64,
    /// Requests with a refuted result.
    pub disputed: u64,
    /// Refutations (one request can refute several workers).
    pub disputes: u64,
    /// Distinct workers refuted.
    pub workers_refuted: u64,
    /// `disputed / checked`.
    pub dispute_rate: f64,
    /// Language-model tokens of paid requests that asked for a check.
    #[serde(default)]
    pub tokens_requested: u64,
    /// What payers paid for verification per 1,000 of those tokens, base units.
    #[serde(default)]
    pub cost_per_1k_tokens: f64,
}

/// Trust.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trust {
    /// `trusted_decisions / served`.
    pub trusted_share: f64,
    /// Lowest executor reputation.
    pub reputation_min: f64,
    /// Highest executor reputation.
    pub reputation_max: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn top(counts: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(10);
    v
}

/// The layers, in flywheel order.
pub const LAYERS: [&str; 8] = ["compute", "models", "applications", "users", "payments", "incentives", "verification", "trust"];

const CAPACITY_CODES: [&str; 4] = ["overloaded", "timeout", "no_workers", "busy"];
const MODEL_CODES: [&str; 3] = ["not_found", "execution_failed", "workers_failed"];
const PAYMENT_CODES: [&str; 14] = [
    "payment_malformed",
    "unsupported_scheme",
    "network_mismatch",
    "asset_mismatch",
    "recipient_mismatch",
    "amount_mismatch",
    "authorization_expired",
    "authorization_not_yet_valid",
    "invalid_signature",
    "nonce_used",
    "insufficient_funds",
    "session_invalid",
    "budget_exceeded",
    "payment_state",
];

fn code(k: &TallyKey) -> Option<&str> {
    k.error.as_deref()
}

fn is_challenge(k: &TallyKey) -> bool {
    code(k) == Some("payment_required")
}

fn is_checked(k: &TallyKey) -> bool {
    matches!(k.check.as_deref(), Some("passed" | "disputed" | "quorum"))
}

fn asked_check(k: &TallyKey) -> bool {
    k.mode == "sampled" || k.mode == "quorum"
}

fn payment_refused(k: &TallyKey) -> bool {
    code(k).is_some_and(|c| PAYMENT_CODES.contains(&c))
}

fn capacity_rejected(k: &TallyKey) -> bool {
    code(k).is_some_and(|c| CAPACITY_CODES.contains(&c))
}

/// Per payer: tried, refused a payment, turned away for capacity.
#[derive(Default)]
struct PayerSets {
    tried: BTreeSet<Address>,
    refused: BTreeSet<Address>,
    rejected: BTreeSet<Address>,
}

impl PayerSets {
    fn of<'a>(rows: impl Iterator<Item = (&'a TallyKey, &'a Tally)>) -> PayerSets {
        let mut s = PayerSets::default();
        for (k, _) in rows {
            let Some(p) = k.payer else { continue };
            if k.is_served() || payment_refused(k) {
                s.tried.insert(p);
            }
            if payment_refused(k) {
                s.refused.insert(p);
            }
            if capacity_rejected(k) {
                s.rejected.insert(p);
                s.tried.insert(p);
            }
        }
        s
    }
}

fn trusted_per<'a>(rows: impl Iterator<Item = (&'a TallyKey, &'a Tally)>, by: impl Fn(&TallyKey) -> Option<String>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, t) in rows.filter(|(k, _)| k.is_trusted()) {
        if let Some(name) = by(k) {
            *out.entry(name).or_default() += t.requests;
        }
    }
    out
}

fn trends(now: &BTreeMap<String, u64>, before: Option<&BTreeMap<String, u64>>) -> BTreeMap<String, Trend> {
    let names: BTreeSet<&String> = now.keys().chain(before.into_iter().flat_map(|b| b.keys())).collect();
    names
        .into_iter()
        .map(|n| (n.clone(), Trend::new(now.get(n).copied().unwrap_or(0), before.map(|b| b.get(n).copied().unwrap_or(0)))))
        .collect()
}

impl Report {
    /// The report over raw events (at unix ms): rolled up in the window's buckets first, so it
    /// is the report the stored roll-ups give.
    pub fn from_events(events: &[(i64, Event)], inventory: &Inventory, window_secs: u64, now_ms: i64) -> Report {
        let w = Window::new(window_secs, now_ms);
        let mut t = Tallies::default();
        for (at, e) in events {
            if let Event::Request(r) = e {
                t.add(*at, w.bucket_ms, r);
            }
        }
        Report::compute(&t, inventory, w)
    }

    /// The report over roll-ups covering the window and the one before it (rows outside both
    /// are ignored).
    pub fn compute(tallies: &Tallies, inventory: &Inventory, w: Window) -> Report {
        let start = w.start_ms();
        let prev_start = w.previous_start_ms();
        let cur = || tallies.0.iter().filter(move |((b, _), _)| *b >= start && *b < w.end_ms).map(|((_, k), t)| (k, t));
        let prev = || tallies.0.iter().filter(move |((b, _), _)| *b >= prev_start && *b < start).map(|((_, k), t)| (k, t));
        // The window before is known when the flywheel's data reaches back to it (a bucket of
        // slack: history starts within a bucket).
        let has_before = inventory.history_since_ms <= prev_start + w.bucket_ms;

        let requests = || cur().filter(|(k, _)| !is_challenge(k));
        let served = || cur().filter(|(k, _)| k.is_served());
        let count = |it: &mut dyn Iterator<Item = (&TallyKey, &Tally)>| it.map(|(_, t)| t.requests).sum::<u64>();
        let n_requests = count(&mut requests());
        let n_served = count(&mut served());

        // Usage.
        let mut usage = Usage::default();
        let mut tokens_per_user: BTreeMap<String, Tokens> = BTreeMap::new();
        for (k, t) in cur().filter(|(k, _)| k.is_trusted()) {
            usage.trusted_decisions += t.requests;
            if is_checked(k) {
                usage.verified_decisions += t.requests;
            }
            if t.prompt_tokens + t.completion_tokens > 0 {
                usage.tokens.add(t);
                usage.tokens_per_model.entry(k.model.clone()).or_default().add(t);
                if let Some(app) = &k.app {
                    usage.tokens_per_app.entry(app.clone()).or_default().add(t);
                }
                if let Some(p) = k.payer {
                    tokens_per_user.entry(p.to_string()).or_default().add(t);
                }
            }
        }
        usage.per_model = trusted_per(cur(), |k| Some(k.model.clone()));
        usage.per_app = trusted_per(cur(), |k| k.app.clone());
        let before_trusted: Option<u64> = has_before.then(|| prev().filter(|(k, _)| k.is_trusted()).map(|(_, t)| t.requests).sum());
        usage.trend = Trend::new(usage.trusted_decisions, before_trusted);
        usage.trend_per_model = trends(&usage.per_model, has_before.then(|| trusted_per(prev(), |k| Some(k.model.clone()))).as_ref());
        usage.trend_per_app = trends(&usage.per_app, has_before.then(|| trusted_per(prev(), |k| k.app.clone())).as_ref());
        let mut users: Vec<(String, Tokens)> = tokens_per_user.into_iter().collect();
        users.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
        users.truncate(10);
        usage.tokens_per_user = users;

        // Compute.
        let rejected = count(&mut requests().filter(|(k, _)| capacity_rejected(k)));
        let (mut latency, mut queue) = (Hist::default(), Hist::default());
        for (_, t) in served() {
            latency.merge(&t.latency);
            queue.merge(&t.queue);
        }
        let compute = Compute {
            requests: n_requests,
            served: n_served,
            rejected,
            rejection_rate: ratio(rejected, n_requests),
            executors: inventory.executors.len() as u64,
            active_executors: inventory.executors.iter().filter(|e| e.active).count() as u64,
            queue_p50_ms: queue.quantile(0.5),
            latency_p50_ms: latency.quantile(0.5),
            latency_p95_ms: latency.quantile(0.95),
        };

        // Models.
        let mut per_model: BTreeMap<String, u64> = BTreeMap::new();
        for (k, t) in served() {
            *per_model.entry(k.model.clone()).or_default() += t.requests;
        }
        let max_model = per_model.values().copied().max().unwrap_or(0);
        let models = Models {
            hosted: inventory.hosted_models,
            active: per_model.len() as u64,
            idle: inventory.hosted_models.saturating_sub(per_model.len() as u64),
            failed: count(&mut requests().filter(|(k, _)| code(k).is_some_and(|c| MODEL_CODES.contains(&c)))),
            top_share: ratio(max_model, n_served),
            volume: top(&per_model),
            prompt_tokens: served().map(|(_, t)| t.prompt_tokens).sum(),
            completion_tokens: served().map(|(_, t)| t.completion_tokens).sum(),
        };

        // Applications.
        let mut per_app: BTreeMap<String, u64> = BTreeMap::new();
        for (k, t) in served() {
            if let Some(a) = &k.app {
                *per_app.entry(a.clone()).or_default() += t.requests;
            }
        }
        let via_apps: u64 = per_app.values().sum();
        let applications = Applications {
            active: per_app.len() as u64,
            share_via_apps: ratio(via_apps, n_served),
            requests_per_app: top(&per_app),
            unknown_app: count(&mut requests().filter(|(k, _)| code(k) == Some("unknown_app"))),
        };

        // Users: payers who tried, this window against the one before.
        let now_sets = PayerSets::of(cur());
        let before_sets = has_before.then(|| PayerSets::of(prev()));
        let paid_served: u64 = served().filter(|(k, _)| k.payer.is_some()).map(|(_, t)| t.requests).sum();
        let users = match &before_sets {
            Some(b) => {
                let lapsed: BTreeSet<&Address> = b.tried.difference(&now_sets.tried).collect();
                let recurring = b.tried.intersection(&now_sets.tried).count() as u64;
                Users {
                    unique: now_sets.tried.len() as u64,
                    previous: Some(b.tried.len() as u64),
                    recurring,
                    retention: (!b.tried.is_empty()).then(|| ratio(recurring, b.tried.len() as u64)),
                    new: now_sets.tried.difference(&b.tried).count() as u64,
                    requests_per_user: ratio(paid_served, now_sets.tried.len() as u64),
                    lapsed: lapsed.len() as u64,
                    lapsed_after_refusal: lapsed.iter().filter(|p| b.refused.contains(**p)).count() as u64,
                    lapsed_after_rejection: lapsed.iter().filter(|p| b.rejected.contains(**p)).count() as u64,
                }
            }
            None => Users {
                unique: now_sets.tried.len() as u64,
                new: now_sets.tried.len() as u64,
                requests_per_user: ratio(paid_served, now_sets.tried.len() as u64),
                ..Default::default()
            },
        };

        // Payments.
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        for (k, t) in cur().filter(|(k, _)| payment_refused(k)) {
            *failures.entry(k.error.clone().unwrap_or_default()).or_default() += t.requests;
        }
        let challenges = count(&mut cur().filter(|(k, _)| is_challenge(k)));
        let attempts: u64 = requests().map(|(_, t)| t.payment_attempts).sum();
        let paid = count(&mut served().filter(|(k, _)| k.paid));
        let volume: u128 = served().map(|(_, t)| t.charged).sum();
        let failed: u64 = failures.values().sum();
        let payments = Payments {
            paid,
            volume,
            challenges,
            unpaid: challenges.saturating_sub(attempts),
            attempts,
            failure_rate: ratio(failed, paid + failed),
            revenue_per_request: if n_served == 0 { 0.0 } else { volume as f64 / n_served as f64 },
            failures,
        };

        // Incentives.
        let mut earnings: BTreeMap<String, u128> = BTreeMap::new();
        for (_, t) in served() {
            for (role, a) in &t.earnings {
                *earnings.entry(role.clone()).or_default() += a;
            }
        }
        let operator_per_request =
            if n_served == 0 { 0.0 } else { earnings.get("operator").copied().unwrap_or(0) as f64 / n_served as f64 };
        let incentives = Incentives {
            operator_margin: operator_per_request - inventory.operator_cost_per_request as f64,
            operator_per_request,
            operator_cost_per_request: inventory.operator_cost_per_request,
            earnings,
        };

        // Verification.
        let checked = count(&mut served().filter(|(k, _)| is_checked(k)));
        let (mut tokens_requested, mut fees) = (0u64, 0u128);
        for (_, t) in served().filter(|(k, _)| asked_check(k) && k.paid) {
            tokens_requested += t.prompt_tokens + t.completion_tokens;
            fees += t.token_validator_fees;
        }
        let mut refuted: BTreeSet<Address> = BTreeSet::new();
        for (_, t) in served() {
            refuted.extend(t.refuted.iter().copied());
        }
        let disputed: u64 = served().map(|(_, t)| t.disputed_requests).sum();
        let verification = Verification {
            requested: count(&mut requests().filter(|(k, _)| asked_check(k))),
            checked,
            requested_checked: count(&mut served().filter(|(k, _)| asked_check(k) && is_checked(k))),
            share_verified: ratio(checked, n_served),
            disputed,
            disputes: served().map(|(_, t)| t.refutations).sum(),
            workers_refuted: refuted.len() as u64,
            dispute_rate: ratio(disputed, checked),
            tokens_requested,
            cost_per_1k_tokens: if tokens_requested == 0 { 0.0 } else { fees as f64 * 1000.0 / tokens_requested as f64 },
        };

        // Trust.
        let reps: Vec<f64> = inventory.executors.iter().map(|e| e.reputation).collect();
        let trust = Trust {
            trusted_share: ratio(usage.trusted_decisions, n_served),
            reputation_min: reps.iter().copied().fold(f64::INFINITY, f64::min).clamp(0.0, 1.0),
            reputation_max: reps.iter().copied().fold(0.0, f64::max),
        };

        // Series: 20 slices over the window.
        let width = (w.len_ms() / 20).max(1);
        let mut slices: Vec<(Point, Hist, Hist)> =
            (0..20).map(|i| (Point { start_ms: start + i * width, ..Default::default() }, Hist::default(), Hist::default())).collect();
        for ((b, k), t) in tallies.0.iter().filter(|((b, _), _)| *b >= start && *b < w.end_ms) {
            let (p, lat, q) = &mut slices[((b - start) / width).clamp(0, 19) as usize];
            if is_challenge(k) {
                continue;
            }
            p.requests += t.requests;
            if k.is_served() {
                p.served += t.requests;
                lat.merge(&t.latency);
                q.merge(&t.queue);
            } else {
                p.errors += t.requests;
            }
            if k.is_trusted() {
                p.trusted += t.requests;
            }
            p.disputed += t.disputed_requests;
        }
        let series = slices
            .into_iter()
            .map(|(mut p, lat, q)| {
                p.p95_ms = lat.quantile(0.95);
                p.queue_p95_ms = q.quantile(0.95);
                p
            })
            .collect();

        let mut report = Report {
            window_secs: w.secs,
            end_ms: w.end_ms,
            headline: String::new(),
            usage,
            compute,
            models,
            applications,
            users,
            payments,
            incentives,
            verification,
            trust,
            scores: Vec::new(),
            bottleneck: Bottleneck { layer: String::new(), reason: String::new(), score: 0.0, runner_up: None, symptom_in: None },
            series,
        };
        report.scores = crate::score::scores(&report);
        report.bottleneck = crate::score::bottleneck(&report);
        report.headline = crate::score::headline(&report, inventory, w);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestEvent;

    /// The report's window: an hour ending at `END` (a whole minute).
    const WINDOW: u64 = 3600;
    const END: i64 = 10 * 3_600_000;
    const NOW: i64 = END - 1;

    fn req(model: &str, status: u16, error: Option<&str>, charged: u128, payer: u8) -> Event {
        Event::Request(Box::new(RequestEvent {
            model: Some(model.into()),
            mode: "none".into(),
            status,
            error: error.map(str::to_owned),
            price: charged,
            charged,
            payer: (payer > 0).then(|| Address::repeat_byte(payer)),
            payment_attempted: payer > 0,
            earnings: BTreeMap::from([("operator".to_string(), charged / 2)]),
            total_ms: 2.0,
            ..Default::default()
        }))
    }

    fn inv(hosted: u64) -> Inventory {
        Inventory {
            hosted_models: hosted,
            executors: vec![ExecutorInfo { address: Address::repeat_byte(9), role: "worker".into(), reputation: 0.5, active: true }],
            operator_cost_per_request: 0,
            history_since_ms: 0,
        }
    }

    /// `n` events spread over this window.
    fn now(n: usize, f: impl Fn(usize) -> Event) -> Vec<(i64, Event)> {
        (0..n).map(|i| (END - 3_600_000 + (i as i64) * 3_600_000 / n as i64, f(i))).collect()
    }

    /// `n` events spread over the window before.
    fn before(n: usize, f: impl Fn(usize) -> Event) -> Vec<(i64, Event)> {
        (0..n).map(|i| (END - 7_200_000 + (i as i64) * 3_600_000 / n as i64, f(i))).collect()
    }

    fn report(events: &[(i64, Event)], inventory: &Inventory) -> Report {
        Report::from_events(events, inventory, WINDOW, NOW)
    }

    fn bottleneck(events: &[(i64, Event)], inventory: &Inventory) -> Bottleneck {
        report(events, inventory).bottleneck
    }

    /// Paid, returning payers (1..=5) on two models, in both windows.
    fn healthy() -> Vec<(i64, Event)> {
        let f = |i: usize| req(&format!("m{}", i % 2), 200, None, 10, (i % 5 + 1) as u8);
        let mut e = before(40, f);
        e.extend(now(40, f));
        e
    }

    fn with_mode(e: Event, mode: &str, check: &str, disputed: bool) -> Event {
        let Event::Request(mut r) = e else { unreachable!() };
        r.mode = mode.into();
        r.check = Some(check.into());
        if disputed {
            r.disputed = vec![Address::repeat_byte(7)];
            r.charged = 0;
        }
        Event::Request(r)
    }

    #[test]
    fn each_layer_is_named_when_it_fails() {
        let b = bottleneck(&healthy(), &inv(2));
        assert_eq!(b.layer, "none", "{}", b.reason);

        // Compute: a fifth of requests overloaded.
        let mut e = healthy();
        e.extend(now(10, |_| req("m0", 503, Some("overloaded"), 0, 1)));
        assert_eq!(bottleneck(&e, &inv(2)).layer, "compute");

        // Models: nothing hosted.
        assert_eq!(bottleneck(&[], &inv(0)).layer, "models");
        // Models: a third of the requests name a model that is not there.
        let mut e = healthy();
        e.extend(now(20, |_| req("gone", 404, Some("not_found"), 0, 0)));
        assert_eq!(bottleneck(&e, &inv(2)).layer, "models");
        // Applications: no demand at all.
        assert_eq!(bottleneck(&[], &inv(5)).layer, "applications");

        // Users: twenty payers, none of them back.
        let mut e = before(20, |i| req("m0", 200, None, 10, (i + 1) as u8));
        e.extend(now(20, |i| req("m0", 200, None, 10, (i + 101) as u8)));
        let b = bottleneck(&e, &inv(1));
        assert_eq!(b.layer, "users", "{}", b.reason);
        assert_eq!(b.score, 1.0);

        // Payments: a third of attempts refused for funds.
        let mut e = healthy();
        e.extend(now(20, |_| req("m0", 402, Some("insufficient_funds"), 0, 1)));
        let b = bottleneck(&e, &inv(2));
        assert_eq!(b.layer, "payments");
        assert!(b.reason.contains("insufficient_funds"), "{}", b.reason);

        // Incentives: operators earn 5 a request against a cost of 8.
        let mut i = inv(2);
        i.operator_cost_per_request = 8;
        assert_eq!(bottleneck(&healthy(), &i).layer, "incentives");

        // Verification: asked for, never checked.
        let lagging: Vec<_> = healthy().into_iter().map(|(at, e)| (at, with_mode(e, "sampled", "unchecked", false))).collect();
        assert_eq!(bottleneck(&lagging, &inv(2)).layer, "verification");

        // Trust: a few free calls only (below every minimum) still name trust, not none.
        let few_free = now(3, |i| req("m0", 200, None, 0, (i + 1) as u8));
        assert_eq!(bottleneck(&few_free, &inv(1)).layer, "trust");
        // Trust: mostly free calls.
        let f = |i: usize| req("m0", 200, None, if i.is_multiple_of(4) { 10 } else { 0 }, (i % 5 + 1) as u8);
        let mut free = before(40, f);
        free.extend(now(40, f));
        assert_eq!(bottleneck(&free, &inv(1)).layer, "trust");
    }

    #[test]
    fn severity_not_order_names_the_layer() {
        // Operators earn 1% less than their cost, and nothing that asked for a check was checked:
        // the first test in flywheel order would be incentives; verification loses far more.
        let mut i = inv(2);
        i.operator_cost_per_request = 5 * 101 / 100 + 1;
        let lagging: Vec<_> = healthy().into_iter().map(|(at, e)| (at, with_mode(e, "sampled", "unchecked", false))).collect();
        let r = report(&lagging, &i);
        assert_eq!(r.bottleneck.layer, "verification", "{:?}", r.scores);
        assert_eq!(r.bottleneck.runner_up.as_deref(), Some("incentives"));
        let score = |l: &str| r.scores.iter().find(|s| s.layer == l).unwrap().score;
        assert_eq!(score("verification"), Some(1.0));
        assert!(score("incentives").unwrap() > 0.0 && score("incentives").unwrap() < 0.2, "{:?}", score("incentives"));
        assert_eq!(score("users"), Some(0.0));
        assert_eq!(r.scores.len(), LAYERS.len());

        // Every checked result refuted: 16 of 16, and 3 workers behind 16 refutations.
        let cheated: Vec<_> = now(16, |i| {
            let Event::Request(mut r) = with_mode(req("m0", 200, None, 10, (i % 5 + 1) as u8), "sampled", "disputed", true) else {
                unreachable!()
            };
            r.disputed = vec![Address::repeat_byte((i % 3) as u8 + 20)];
            Event::Request(r)
        });
        let mut e = healthy();
        e.extend(cheated);
        let r = report(&e, &inv(2));
        assert_eq!(r.bottleneck.layer, "verification", "{}", r.bottleneck.reason);
        assert_eq!((r.verification.disputed, r.verification.disputes, r.verification.workers_refuted), (16, 16, 3));
        assert!(r.bottleneck.reason.contains("16 refutations of 3 workers"), "{}", r.bottleneck.reason);
    }

    #[test]
    fn payers_who_were_refused_count_as_users_and_name_payments() {
        // 80% of payment attempts fail for lack of funds, from payers who keep trying.
        let f = |i: usize| {
            if i.is_multiple_of(5) { req("m0", 200, None, 10, (i % 10 + 1) as u8) } else { req("m0", 402, Some("insufficient_funds"), 0, (i % 10 + 1) as u8) }
        };
        let mut e = before(50, f);
        e.extend(now(50, f));
        let r = report(&e, &inv(1));
        assert_eq!(r.users.unique, 10);
        assert_eq!(r.users.retention, Some(1.0));
        assert_eq!(r.bottleneck.layer, "payments", "{}", r.bottleneck.reason);

        // Refused payments that look like churn: nine of ten payers were refused and did not
        // come back; the tenth did, and new payers paid fine.
        let mut e = before(30, |i| {
            let p = (i % 10 + 1) as u8;
            if p == 1 { req("m0", 200, None, 10, p) } else { req("m0", 402, Some("insufficient_funds"), 0, p) }
        });
        e.extend(now(30, |i| req("m0", 200, None, 10, if i % 3 == 0 { 1 } else { (i % 10 + 50) as u8 })));
        let r = report(&e, &inv(1));
        assert_eq!((r.users.lapsed, r.users.lapsed_after_refusal), (9, 9));
        assert_eq!(r.bottleneck.layer, "payments", "{}", r.bottleneck.reason);
        assert_eq!(r.bottleneck.symptom_in.as_deref(), Some("users"));
        assert!(r.bottleneck.reason.contains("9 of the 9 payers who did not come back had a payment refused"), "{}", r.bottleneck.reason);
    }

    #[test]
    fn idle_models_are_reported_never_blamed() {
        let r = report(&healthy(), &inv(50));
        assert_eq!(r.bottleneck.layer, "none", "{}", r.bottleneck.reason);
        assert_eq!((r.models.hosted, r.models.active, r.models.idle), (50, 2, 48));
    }

    #[test]
    fn too_little_history_says_so_instead_of_zero() {
        // The node started ten minutes before the window's end: no window before to compare.
        let mut i = inv(1);
        i.history_since_ms = END - 600_000;
        let e: Vec<_> = (0..20).map(|k| (END - 500_000 + k * 1000, req("m0", 200, None, 10, (k % 8 + 1) as u8))).collect();
        let r = report(&e, &i);
        assert_eq!(r.users.retention, None);
        assert_eq!(r.usage.trend.direction, "unknown");
        assert_eq!(r.scores.iter().find(|s| s.layer == "users").unwrap().score, None);
        assert_eq!(r.bottleneck.layer, "none", "{}", r.bottleneck.reason);
        assert!(r.headline.contains("too little history"), "{}", r.headline);
    }

    #[test]
    fn the_headline_says_whether_usage_grows_and_why() {
        let mut e = before(10, |i| req("m0", 200, None, 10, (i % 5 + 1) as u8));
        e.extend(now(20, |i| req(if i < 12 { "m1" } else { "m0" }, 200, None, 10, (i % 5 + 1) as u8)));
        let r = report(&e, &inv(2));
        assert_eq!(r.usage.trend, Trend { now: 20, before: Some(10), growth: Some(1.0), direction: "growing".into() });
        assert_eq!(r.usage.trend_per_model["m1"].direction, "growing");
        assert_eq!(r.usage.trend_per_model["m0"].growth, Some(-0.2));
        assert!(r.headline.starts_with("usage is growing: 20 trusted decisions"), "{}", r.headline);
        assert!(r.headline.contains("m1 (+12)"), "{}", r.headline);

        let mut e = before(20, |i| req("m0", 200, None, 10, (i % 5 + 1) as u8));
        e.extend(now(19, |i| req("m0", 200, None, 10, (i % 5 + 1) as u8)));
        assert!(report(&e, &inv(1)).headline.starts_with("usage is flat"));
        let mut e = before(20, |i| req("m0", 200, None, 10, (i % 5 + 1) as u8));
        e.extend(now(5, |i| req("m0", 200, None, 10, (i % 5 + 1) as u8)));
        assert!(report(&e, &inv(1)).headline.starts_with("usage is shrinking"));
    }

    #[test]
    fn metrics_count_each_layer() {
        let mut e = now(10, |i| req("a", 200, None, 10, (i % 2 + 1) as u8));
        e.push((END - 1_000_000, req("b", 402, Some("payment_required"), 0, 0)));
        e.push((END - 1_000_000, req("b", 402, Some("nonce_used"), 0, 3)));
        let r = report(&e, &inv(3));
        assert_eq!((r.compute.requests, r.compute.served), (11, 10));
        assert_eq!((r.models.hosted, r.models.active, r.models.top_share), (3, 1, 1.0));
        assert_eq!((r.users.unique, r.users.previous), (3, Some(0)));
        // The one challenge was followed by payments: not demand that does not pay.
        assert_eq!((r.payments.paid, r.payments.volume, r.payments.challenges, r.payments.unpaid, r.payments.attempts), (10, 100, 1, 0, 11));
        assert_eq!(r.payments.failures.get("nonce_used"), Some(&1));
        assert_eq!(r.incentives.earnings.get("operator"), Some(&50));
        assert_eq!(r.usage.trusted_decisions, 10);
        assert_eq!(r.series.iter().map(|s| s.requests).sum::<u64>(), 11);
        assert_eq!(r.series.iter().map(|s| s.errors).sum::<u64>(), 1);
        assert!((r.compute.latency_p50_ms / 2.0 - 1.0).abs() < 0.1, "{}", r.compute.latency_p50_ms);
        // Events outside both windows are not counted.
        let mut old = e.clone();
        old.push((END - 7_200_001, req("a", 200, None, 10, 1)));
        old.push((END, req("a", 200, None, 10, 1)));
        assert_eq!(report(&old, &inv(3)), r);
    }

    /// A language call of `prompt` + `completion` tokens, paid `charged` (a tenth of it the
    /// verification fee when it asked for a check).
    #[allow(clippy::too_many_arguments)]
    fn chat(model: &str, app: Option<&str>, payer: u8, prompt: u64, completion: u64, charged: u128, mode: &str, check: &str) -> Event {
        let mut earnings = BTreeMap::from([("operator".to_string(), charged / 2)]);
        if mode != "none" {
            earnings.insert("validator".into(), charged / 10);
        }
        Event::Request(Box::new(RequestEvent {
            model: Some(model.into()),
            app: app.map(str::to_owned),
            mode: mode.into(),
            status: 200,
            price: charged,
            charged,
            payer: (payer > 0).then(|| Address::repeat_byte(payer)),
            earnings,
            check: Some(check.into()),
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..Default::default()
        }))
    }

    #[test]
    fn tokens_of_trusted_completions_are_usage_and_verification_is_priced_per_token() {
        let events = now(6, |i| match i {
            0 => chat("chat", Some("app-a"), 1, 10, 20, 1000, "none", "unchecked"),
            1 => chat("chat", Some("app-a"), 2, 5, 15, 2000, "sampled", "passed"),
            2 => chat("chat", None, 2, 7, 3, 3000, "sampled", "unchecked"),
            // Refuted: refunded (nothing charged) and never usage.
            3 => chat("chat", Some("app-a"), 3, 100, 100, 0, "sampled", "disputed"),
            // Free: served but not a trusted decision.
            4 => chat("embed", None, 0, 50, 0, 0, "none", "unchecked"),
            _ => chat("embed", Some("app-b"), 1, 8, 0, 500, "none", "unchecked"),
        });
        let r = report(&events, &inv(2));
        assert_eq!(r.usage.trusted_decisions, 4);
        assert_eq!(r.usage.tokens, Tokens { prompt: 30, completion: 38 });
        assert_eq!(r.usage.tokens_per_model["chat"], Tokens { prompt: 22, completion: 38 });
        assert_eq!(r.usage.tokens_per_model["embed"], Tokens { prompt: 8, completion: 0 });
        assert_eq!(r.usage.tokens_per_app["app-a"], Tokens { prompt: 15, completion: 35 });
        assert_eq!(r.usage.tokens_per_app["app-b"], Tokens { prompt: 8, completion: 0 });
        let users: Vec<(String, u64)> = r.usage.tokens_per_user.iter().map(|(u, t)| (u.clone(), t.total())).collect();
        assert_eq!(users, vec![(Address::repeat_byte(1).to_string(), 38), (Address::repeat_byte(2).to_string(), 30)]);
        // Verification: the two paid calls that asked for a check, 30 tokens, fees 200 + 300.
        assert_eq!(r.verification.tokens_requested, 30);
        assert!((r.verification.cost_per_1k_tokens - 500.0 * 1000.0 / 30.0).abs() < 1e-9, "{}", r.verification.cost_per_1k_tokens);
    }
}
