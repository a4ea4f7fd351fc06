//! Per-layer metrics over a window of events, and the bottleneck.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use verinet_primitives::Address;

use crate::{Event, RequestEvent};

/// What the events alone cannot tell: the inventory now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Models hosted (published, any version).
    pub hosted_models: u64,
    /// The executors and their standing.
    pub executors: Vec<ExecutorInfo>,
    /// What serving one request costs an operator (config), base units.
    pub operator_cost_per_request: u128,
}

/// One executor's standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// Address.
    pub address: Address,
    /// `worker` or `validator`.
    pub role: String,
    /// Reputation in (0, 1].
    pub reputation: f64,
    /// Gets work.
    pub active: bool,
}

/// The layer holding demand back, and why, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// `compute`, `models`, `applications`, `users`, `payments`, `incentives`, `verification`,
    /// `trust`, or `none`.
    pub layer: String,
    /// One sentence with the numbers.
    pub reason: String,
}

/// The flywheel over a window: one section per layer, the headline, the bottleneck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Window length, seconds.
    pub window_secs: u64,
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
    /// Where demand stops.
    pub bottleneck: Bottleneck,
    /// Requests per time bucket (for charts): `[bucket start ms, requests, served, trusted]`.
    pub series: Vec<[i64; 4]>,
}

/// Headline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Results that were paid for and carry a signed receipt.
    pub trusted_decisions: u64,
    /// Of those, re-executed or quorum-agreed.
    pub verified_decisions: u64,
    /// Trusted decisions per model.
    pub per_model: BTreeMap<String, u64>,
    /// Trusted decisions per app.
    pub per_app: BTreeMap<String, u64>,
}

/// Compute: capacity against demand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compute {
    /// Requests received (402 challenges excluded: see [`Payments::unpaid`]).
    pub requests: u64,
    /// Answered with a result.
    pub served: u64,
    /// Turned away for capacity: `overloaded`, `timeout`, `no_workers`.
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
}

/// Models: hosted against used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Models {
    /// Hosted.
    pub hosted: u64,
    /// Served at least once in the window.
    pub active: u64,
    /// Served results per model, most used first (top 10).
    pub volume: Vec<(String, u64)>,
    /// Share of served results going to the most used model.
    pub top_share: f64,
}

/// Applications.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applications {
    /// Apps that brought at least one served request.
    pub active: u64,
    /// Served requests per app (top 10).
    pub requests_per_app: Vec<(String, u64)>,
    /// Share of served requests that came through an app.
    pub share_via_apps: f64,
}

/// Users (payers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Users {
    /// Distinct payers of served requests.
    pub unique: u64,
    /// Payers served in both halves of the window.
    pub recurring: u64,
    /// `recurring / unique`.
    pub retention: f64,
    /// Served requests per payer.
    pub requests_per_user: f64,
}

/// Payments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payments {
    /// Requests captured.
    pub paid: u64,
    /// Base units captured.
    pub volume: u128,
    /// 402 challenges: priced requests sent without payment (an x402 client's first try is one;
    /// challenges far above `paid` mean demand that does not pay).
    pub unpaid: u64,
    /// Payments refused, by code.
    pub failures: BTreeMap<String, u64>,
    /// `failures / (paid + failures)`.
    pub failure_rate: f64,
    /// Captured per served request.
    pub revenue_per_request: f64,
}

/// Incentives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Results checked (passed, disputed or quorum).
    pub checked: u64,
    /// `checked / served`.
    pub share_verified: f64,
    /// Workers refuted.
    pub disputes: u64,
    /// Requests with a refuted result / checked.
    pub dispute_rate: f64,
    /// Requests that asked for `sampled` or `quorum`.
    pub requested: u64,
}

/// Trust.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trust {
    /// `trusted_decisions / served`.
    pub trusted_share: f64,
    /// Lowest executor reputation.
    pub reputation_min: f64,
    /// Highest executor reputation.
    pub reputation_max: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn top(counts: BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(10);
    v
}

const CAPACITY_CODES: [&str; 3] = ["overloaded", "timeout", "no_workers"];
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

impl Report {
    /// Computes the report over `events` (at unix ms) in a window of `window_secs` ending at
    /// `now_ms`.
    pub fn compute(events: &[(i64, Event)], inventory: &Inventory, window_secs: u64, now_ms: i64) -> Report {
        let all: Vec<(i64, &RequestEvent)> = events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Request(r) => Some((*at, r.as_ref())),
                _ => None,
            })
            .collect();
        // A 402 challenge is the first half of an x402 payment, not a request of its own: it is
        // counted under payments (`unpaid`), and the paid retry is the request.
        let requests: Vec<(i64, &RequestEvent)> =
            all.iter().filter(|(_, r)| r.error.as_deref() != Some("payment_required")).copied().collect();
        let served: Vec<(i64, &RequestEvent)> = requests.iter().filter(|(_, r)| r.status == 200).copied().collect();
        let trusted = |r: &RequestEvent| r.status == 200 && r.charged > 0;
        let verified = |r: &RequestEvent| matches!(r.check.as_deref(), Some("passed" | "disputed" | "quorum"));

        // Usage.
        let mut usage = Usage::default();
        for (_, r) in served.iter().filter(|(_, r)| trusted(r)) {
            usage.trusted_decisions += 1;
            usage.verified_decisions += u64::from(verified(r));
            *usage.per_model.entry(r.model.clone().unwrap_or_default()).or_default() += 1;
            if let Some(app) = &r.app {
                *usage.per_app.entry(app.clone()).or_default() += 1;
            }
        }

        // Compute.
        let rejected =
            requests.iter().filter(|(_, r)| r.error.as_deref().is_some_and(|c| CAPACITY_CODES.contains(&c))).count() as u64;
        let compute = Compute {
            requests: requests.len() as u64,
            served: served.len() as u64,
            rejected,
            rejection_rate: ratio(rejected, requests.len() as u64),
            executors: inventory.executors.len() as u64,
            active_executors: inventory.executors.iter().filter(|e| e.active).count() as u64,
            queue_p50_ms: median(served.iter().map(|(_, r)| r.queue_ms).collect()),
            latency_p50_ms: median(served.iter().map(|(_, r)| r.total_ms).collect()),
        };

        // Models.
        let mut per_model: BTreeMap<String, u64> = BTreeMap::new();
        for (_, r) in &served {
            *per_model.entry(r.model.clone().unwrap_or_default()).or_default() += 1;
        }
        let max_model = per_model.values().copied().max().unwrap_or(0);
        let models = Models {
            hosted: inventory.hosted_models,
            active: per_model.len() as u64,
            top_share: ratio(max_model, served.len() as u64),
            volume: top(per_model),
        };

        // Applications.
        let mut per_app: BTreeMap<String, u64> = BTreeMap::new();
        for (_, r) in &served {
            if let Some(a) = &r.app {
                *per_app.entry(a.clone()).or_default() += 1;
            }
        }
        let via_apps: u64 = per_app.values().sum();
        let applications = Applications {
            active: per_app.len() as u64,
            share_via_apps: ratio(via_apps, served.len() as u64),
            requests_per_app: top(per_app),
        };

        // Users: payers served in both halves of the window return.
        let half = now_ms - i64::try_from(window_secs).unwrap_or(i64::MAX / 2000) * 500;
        let mut first: BTreeSet<Address> = BTreeSet::new();
        let mut second: BTreeSet<Address> = BTreeSet::new();
        for (at, r) in &served {
            if let Some(p) = r.payer.filter(|p| !p.is_zero()) {
                if *at < half { first.insert(p) } else { second.insert(p) };
            }
        }
        let unique = first.union(&second).count() as u64;
        let recurring = first.intersection(&second).count() as u64;
        let paid_served = served.iter().filter(|(_, r)| r.payer.is_some_and(|p| !p.is_zero())).count() as u64;
        let users = Users { unique, recurring, retention: ratio(recurring, unique), requests_per_user: ratio(paid_served, unique) };

        // Payments.
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut unpaid = 0;
        for (_, r) in &all {
            match r.error.as_deref() {
                Some("payment_required") => unpaid += 1,
                Some(code) if PAYMENT_CODES.contains(&code) => *failures.entry(code.to_owned()).or_default() += 1,
                _ => {}
            }
        }
        let paid = served.iter().filter(|(_, r)| r.charged > 0).count() as u64;
        let volume: u128 = served.iter().map(|(_, r)| r.charged).sum();
        let failed: u64 = failures.values().sum();
        let payments = Payments {
            paid,
            volume,
            unpaid,
            failure_rate: ratio(failed, paid + failed),
            revenue_per_request: if served.is_empty() { 0.0 } else { volume as f64 / served.len() as f64 },
            failures,
        };

        // Incentives.
        let mut earnings: BTreeMap<String, u128> = BTreeMap::new();
        for (_, r) in &served {
            for (role, a) in &r.earnings {
                *earnings.entry(role.clone()).or_default() += a;
            }
        }
        let operator_per_request = if served.is_empty() {
            0.0
        } else {
            earnings.get("operator").copied().unwrap_or(0) as f64 / served.len() as f64
        };
        let incentives = Incentives {
            operator_margin: operator_per_request - inventory.operator_cost_per_request as f64,
            operator_per_request,
            operator_cost_per_request: inventory.operator_cost_per_request,
            earnings,
        };

        // Verification.
        let checked = served.iter().filter(|(_, r)| verified(r)).count() as u64;
        let disputed_requests = served.iter().filter(|(_, r)| !r.disputed.is_empty()).count() as u64;
        let verification = Verification {
            checked,
            share_verified: ratio(checked, served.len() as u64),
            disputes: served.iter().map(|(_, r)| r.disputed.len() as u64).sum(),
            dispute_rate: ratio(disputed_requests, checked),
            requested: requests.iter().filter(|(_, r)| r.mode == "sampled" || r.mode == "quorum").count() as u64,
        };

        // Trust.
        let reps: Vec<f64> = inventory.executors.iter().map(|e| e.reputation).collect();
        let trust = Trust {
            trusted_share: ratio(usage.trusted_decisions, served.len() as u64),
            reputation_min: reps.iter().copied().fold(f64::INFINITY, f64::min).clamp(0.0, 1.0),
            reputation_max: reps.iter().copied().fold(0.0, f64::max),
        };

        // Series: 20 buckets over the window.
        let start = now_ms - i64::try_from(window_secs).unwrap_or(0).saturating_mul(1000);
        let width = ((now_ms - start) / 20).max(1);
        let mut series: Vec<[i64; 4]> = (0..20).map(|i| [start + i * width, 0, 0, 0]).collect();
        for (at, r) in &requests {
            let i = ((at - start) / width).clamp(0, 19) as usize;
            series[i][1] += 1;
            series[i][2] += i64::from(r.status == 200);
            series[i][3] += i64::from(trusted(r));
        }

        let mut report = Report {
            window_secs,
            usage,
            compute,
            models,
            applications,
            users,
            payments,
            incentives,
            verification,
            trust,
            bottleneck: Bottleneck { layer: String::new(), reason: String::new() },
            series,
        };
        report.bottleneck = report.find_bottleneck();
        report
    }

    /// The first layer, in flywheel order, whose test fails (see docs/flywheel.md).
    fn find_bottleneck(&self) -> Bottleneck {
        let b = |layer: &str, reason: String| Bottleneck { layer: layer.to_owned(), reason };
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        let c = &self.compute;
        if c.requests >= 10 && c.rejection_rate > 0.05 {
            return b(
                "compute",
                format!(
                    "compute: {} of {} requests ({}) were turned away for lack of capacity with {} of {} executors active; demand exceeds what the nodes can serve",
                    c.rejected, c.requests, pct(c.rejection_rate), c.active_executors, c.executors
                ),
            );
        }
        if self.models.hosted == 0 {
            return b("models", "models: no model is hosted, so there is nothing to call".into());
        }
        if c.requests == 0 {
            return b(
                "applications",
                format!("applications: no request reached the network in the window; {} hosted models wait for an app to bring users", self.models.hosted),
            );
        }
        let a = &self.applications;
        if c.served >= 10 && self.models.hosted >= 3 * (a.active + 1) && a.share_via_apps < 0.5 {
            return b(
                "applications",
                format!(
                    "applications: {} models are hosted ({} used) but only {} apps bring requests ({} of served requests come through an app)",
                    self.models.hosted, self.models.active, a.active, pct(a.share_via_apps)
                ),
            );
        }
        let u = &self.users;
        if u.unique >= 5 && u.retention < 0.2 {
            return b(
                "users",
                format!("users: only {} of {} paying users came back in the second half of the window ({} retention)", u.recurring, u.unique, pct(u.retention)),
            );
        }
        let p = &self.payments;
        let failed: u64 = p.failures.values().sum();
        if p.paid + failed >= 10 && p.failure_rate > 0.1 {
            let (reason, n) = p.failures.iter().max_by_key(|(_, n)| **n).map(|(r, n)| (r.as_str(), *n)).unwrap_or(("", 0));
            return b(
                "payments",
                format!("payments: {} of {} payment attempts failed ({}), most often {} ({}x)", failed, p.paid + failed, pct(p.failure_rate), reason, n),
            );
        }
        let i = &self.incentives;
        if c.served >= 10 && i.operator_cost_per_request > 0 && i.operator_margin < 0.0 {
            return b(
                "incentives",
                format!(
                    "incentives: operators earn {:.0} base units per request against a cost of {}, a margin of {:.0}; serving loses money",
                    i.operator_per_request, i.operator_cost_per_request, i.operator_margin
                ),
            );
        }
        let v = &self.verification;
        if v.requested >= 10 && v.share_verified < 0.05 {
            return b(
                "verification",
                format!("verification: {} requests asked for verification but only {} of {} results were checked ({})", v.requested, v.checked, c.served, pct(v.share_verified)),
            );
        }
        if v.checked >= 5 && v.dispute_rate > 0.05 {
            return b(
                "verification",
                format!("verification: {} of {} checked results were refuted ({}), {} workers slashed", (v.dispute_rate * v.checked as f64).round(), v.checked, pct(v.dispute_rate), v.disputes),
            );
        }
        let t = &self.trust;
        if c.served >= 10 && t.trusted_share < 0.5 {
            return b(
                "trust",
                format!("trust: only {} of {} results were paid and receipted ({}); free calls do not feed the flywheel", self.usage.trusted_decisions, c.served, pct(t.trusted_share)),
            );
        }
        // Too little traffic for the tests above, but nothing paid at all is still no flywheel.
        if self.usage.trusted_decisions == 0 {
            return b(
                "trust",
                format!("trust: {} results were served but none was paid and receipted, so none counts as usage", c.served),
            );
        }
        b(
            "none",
            format!(
                "none: demand flows through every layer: {} trusted decisions ({} verified) from {} users on {} models",
                self.usage.trusted_decisions, self.usage.verified_decisions, u.unique, self.models.active
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(model: &str, status: u16, error: Option<&str>, charged: u128, payer: u8) -> Event {
        Event::Request(Box::new(RequestEvent {
            model: Some(model.into()),
            mode: "none".into(),
            status,
            error: error.map(str::to_owned),
            price: charged,
            charged,
            payer: (payer > 0).then(|| Address::repeat_byte(payer)),
            earnings: BTreeMap::from([("operator".to_string(), charged / 2)]),
            ..Default::default()
        }))
    }

    fn inv(hosted: u64) -> Inventory {
        Inventory {
            hosted_models: hosted,
            executors: vec![ExecutorInfo { address: Address::repeat_byte(9), role: "worker".into(), reputation: 0.5, active: true }],
            operator_cost_per_request: 0,
        }
    }

    /// Events spread over the window (both halves), `n` copies of `e` from `payers` payers.
    fn spread(n: usize, f: impl Fn(usize) -> Event) -> Vec<(i64, Event)> {
        (0..n).map(|i| (1_000_000 + (i as i64) * 3_600_000 / n as i64, f(i))).collect()
    }

    fn bottleneck(events: &[(i64, Event)], inventory: &Inventory) -> Bottleneck {
        Report::compute(events, inventory, 3600, 1_000_000 + 3_600_000).bottleneck
    }

    #[test]
    fn each_layer_is_named_when_it_fails() {
        // Healthy: paid, returning users on a few models.
        let healthy = spread(40, |i| req(&format!("m{}", i % 2), 200, None, 10, (i % 5 + 1) as u8));
        assert_eq!(bottleneck(&healthy, &inv(2)).layer, "none");

        // Compute: a fifth of requests overloaded.
        let mut e = healthy.clone();
        e.extend(spread(10, |_| req("m0", 503, Some("overloaded"), 0, 1)));
        assert_eq!(bottleneck(&e, &inv(2)).layer, "compute");

        // Models: nothing hosted.
        assert_eq!(bottleneck(&[], &inv(0)).layer, "models");
        // Applications: no demand at all, or many models and no apps.
        assert_eq!(bottleneck(&[], &inv(5)).layer, "applications");
        let b = bottleneck(&healthy, &inv(30));
        assert_eq!(b.layer, "applications", "{}", b.reason);
        assert!(b.reason.contains("30 models"), "{}", b.reason);

        // Users: twenty payers, each seen once.
        let once = spread(20, |i| req("m0", 200, None, 10, (i + 1) as u8));
        assert_eq!(bottleneck(&once, &inv(1)).layer, "users");

        // Payments: a third of attempts refused for funds.
        let mut e = healthy.clone();
        e.extend(spread(20, |_| req("m0", 402, Some("insufficient_funds"), 0, 1)));
        let b = bottleneck(&e, &inv(2));
        assert_eq!(b.layer, "payments");
        assert!(b.reason.contains("insufficient_funds"), "{}", b.reason);

        // Incentives: operators earn 5 a request against a cost of 8.
        let mut i = inv(2);
        i.operator_cost_per_request = 8;
        assert_eq!(bottleneck(&healthy, &i).layer, "incentives");

        // Verification: asked for, never checked.
        let lagging = spread(40, |i| {
            let Event::Request(mut r) = req(&format!("m{}", i % 2), 200, None, 10, (i % 5 + 1) as u8) else {
                unreachable!()
            };
            r.mode = "sampled".into();
            r.check = Some("unchecked".into());
            Event::Request(r)
        });
        assert_eq!(bottleneck(&lagging, &inv(2)).layer, "verification");

        // Trust: a few free calls only (below every minimum) still name trust, not none.
        let few_free = spread(3, |i| req("m0", 200, None, 0, (i + 1) as u8));
        assert_eq!(bottleneck(&few_free, &inv(1)).layer, "trust");

        // Trust: mostly free calls.
        let free = spread(40, |i| req("m0", 200, None, if i % 4 == 0 { 10 } else { 0 }, (i % 5 + 1) as u8));
        assert_eq!(bottleneck(&free, &inv(1)).layer, "trust");
    }

    #[test]
    fn metrics_count_each_layer() {
        let mut e = spread(10, |i| req("a", 200, None, 10, (i % 2 + 1) as u8));
        e.push((2_000_000, req("b", 402, Some("payment_required"), 0, 0)));
        e.push((2_000_000, req("b", 402, Some("nonce_used"), 0, 3)));
        let r = Report::compute(&e, &inv(3), 3600, 1_000_000 + 3_600_000);
        assert_eq!((r.compute.requests, r.compute.served), (11, 10));
        assert_eq!((r.models.hosted, r.models.active, r.models.top_share), (3, 1, 1.0));
        assert_eq!((r.users.unique, r.users.recurring), (2, 2));
        assert_eq!((r.payments.paid, r.payments.volume, r.payments.unpaid), (10, 100, 1));
        assert_eq!(r.payments.failures.get("nonce_used"), Some(&1));
        assert_eq!(r.incentives.earnings.get("operator"), Some(&50));
        assert_eq!(r.usage.trusted_decisions, 10);
        assert_eq!(r.series.iter().map(|s| s[1]).sum::<i64>(), 11);
    }
}
