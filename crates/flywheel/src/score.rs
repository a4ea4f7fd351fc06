//! The method: every layer's shortfall, computed one way, and the layer that loses the most
//! demand (docs/flywheel.md, "The method").

use crate::report::{Bottleneck, Inventory, LAYERS, LayerScore, Report, Window};

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// `(healthy - passed) / healthy`, clamped to 0..=1.
fn shortfall(passed: f64, healthy: f64) -> f64 {
    ((healthy - passed) / healthy).clamp(0.0, 1.0)
}

fn judged(layer: &str, passed: f64, healthy: f64, reason: String) -> LayerScore {
    LayerScore { layer: layer.into(), score: Some(shortfall(passed, healthy)), passed, healthy, reason }
}

fn unjudged(layer: &str, reason: String) -> LayerScore {
    LayerScore { layer: layer.into(), score: None, passed: 0.0, healthy: 0.0, reason }
}

/// Fewer observations than this and a layer is not judged.
pub const MIN_OBSERVATIONS: u64 = 10;
/// Fewer payers than this in the window before and retention is not judged.
pub const MIN_PAYERS: u64 = 5;

/// Every layer's score, in flywheel order.
pub fn scores(r: &Report) -> Vec<LayerScore> {
    LAYERS.iter().map(|l| score(r, l)).collect()
}

fn score(r: &Report, layer: &str) -> LayerScore {
    let c = &r.compute;
    match layer {
        "compute" if c.requests >= MIN_OBSERVATIONS => judged(
            layer,
            1.0 - c.rejection_rate,
            0.95,
            format!(
                "{} of {} requests ({}) were turned away for lack of capacity with {} of {} executors active",
                c.rejected, c.requests, pct(c.rejection_rate), c.active_executors, c.executors
            ),
        ),
        "compute" => unjudged(layer, format!("{} requests, too few to judge", c.requests)),
        "models" if r.models.hosted == 0 => judged(layer, 0.0, 0.95, "no model is hosted, so there is nothing to call".into()),
        "models" if c.requests >= MIN_OBSERVATIONS => judged(
            layer,
            1.0 - r.models.failed as f64 / c.requests as f64,
            0.95,
            format!(
                "{} of {} requests failed at the model (unknown model, execution failed); {} of {} hosted models were used, {} idle",
                r.models.failed, c.requests, r.models.active, r.models.hosted, r.models.idle
            ),
        ),
        "models" => unjudged(layer, format!("{} hosted, {} used; too few requests to judge", r.models.hosted, r.models.active)),
        "applications" if c.requests == 0 && r.payments.challenges == 0 => judged(
            layer,
            0.0,
            0.95,
            format!("no request reached the network in the window; {} hosted models wait for an app to bring users", r.models.hosted),
        ),
        "applications" if c.requests >= MIN_OBSERVATIONS => judged(
            layer,
            1.0 - r.applications.unknown_app as f64 / c.requests as f64,
            0.95,
            format!(
                "{} apps brought {} of served requests ({} named an unknown app); direct calls are healthy demand too",
                r.applications.active, pct(r.applications.share_via_apps), r.applications.unknown_app
            ),
        ),
        "applications" => unjudged(layer, format!("{} requests, too few to judge", c.requests)),
        "users" => {
            let u = &r.users;
            match (u.previous, u.retention) {
                (None, _) => unjudged(layer, format!("{} payers; too little history to compare with the window before", u.unique)),
                (Some(p), Some(ret)) if p >= MIN_PAYERS => judged(
                    layer,
                    ret,
                    0.2,
                    format!("{} of {} payers of the window before came back ({} retention); {} new", u.recurring, p, pct(ret), u.new),
                ),
                (Some(p), _) => unjudged(layer, format!("{p} payers in the window before, too few to judge retention")),
            }
        }
        "payments" => {
            let p = &r.payments;
            let failed: u64 = p.failures.values().sum();
            if p.paid + failed < MIN_OBSERVATIONS {
                return unjudged(layer, format!("{} payment attempts, too few to judge", p.paid + failed));
            }
            let (code, n) = p.failures.iter().max_by_key(|(_, n)| **n).map(|(c, n)| (c.as_str(), *n)).unwrap_or(("", 0));
            let most = if n > 0 { format!(", most often {code} ({n}x)") } else { String::new() };
            judged(
                layer,
                1.0 - p.failure_rate,
                0.9,
                format!("{} of {} payment attempts were refused ({}){most}", failed, p.paid + failed, pct(p.failure_rate)),
            )
        }
        "incentives" => {
            let i = &r.incentives;
            if c.served < MIN_OBSERVATIONS || i.operator_cost_per_request == 0 {
                return unjudged(layer, "no operator cost configured, or too few served requests".into());
            }
            judged(
                layer,
                (i.operator_per_request / i.operator_cost_per_request as f64).clamp(0.0, 1.0),
                1.0,
                format!(
                    "operators earn {:.0} base units per request against a cost of {} (margin {:.0})",
                    i.operator_per_request, i.operator_cost_per_request, i.operator_margin
                ),
            )
        }
        "verification" => {
            let v = &r.verification;
            let lag = (v.requested >= MIN_OBSERVATIONS).then(|| shortfall(v.requested_checked as f64 / v.requested as f64, 0.05));
            let refuted = (v.checked >= 5).then(|| shortfall(1.0 - v.dispute_rate, 0.95));
            let text = format!(
                "{} requests asked for a check and {} of them were checked; {} of {} checked results were refuted ({}), {} refutations of {} workers",
                v.requested,
                v.requested_checked,
                v.disputed,
                v.checked,
                pct(v.dispute_rate),
                v.disputes,
                v.workers_refuted
            );
            match (lag, refuted) {
                (None, None) => unjudged(layer, text),
                (l, d) if d.unwrap_or(0.0) >= l.unwrap_or(0.0) => {
                    LayerScore { layer: layer.into(), score: d, passed: 1.0 - v.dispute_rate, healthy: 0.95, reason: text }
                }
                (l, _) => LayerScore {
                    layer: layer.into(),
                    score: l,
                    passed: v.requested_checked as f64 / v.requested.max(1) as f64,
                    healthy: 0.05,
                    reason: text,
                },
            }
        }
        _ /* trust */ => {
            let t = &r.trust;
            if c.served >= MIN_OBSERVATIONS || (c.served > 0 && r.usage.trusted_decisions == 0) {
                judged(
                    layer,
                    t.trusted_share,
                    0.5,
                    format!(
                        "{} of {} results were paid and receipted ({}); free calls do not feed the flywheel",
                        r.usage.trusted_decisions, c.served, pct(t.trusted_share)
                    ),
                )
            } else {
                unjudged(layer, format!("{} results served, too few to judge", c.served))
            }
        }
    }
}

/// The layer with the highest shortfall (the earlier in flywheel order on a tie), unless its
/// symptom has a cause upstream: users who do not return after their payments were refused (or
/// after being turned away for capacity) name payments (or compute).
pub fn bottleneck(r: &Report) -> Bottleneck {
    let mut ranked: Vec<(&LayerScore, f64)> =
        r.scores.iter().filter_map(|s| s.score.filter(|x| *x > 0.0).map(|x| (s, x))).collect();
    // Stable: equal scores keep flywheel order.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let Some((worst, score)) = ranked.first().copied() else {
        return Bottleneck {
            layer: "none".into(),
            reason: format!(
                "none: demand flows through every layer: {} trusted decisions ({} verified) from {} payers on {} models",
                r.usage.trusted_decisions, r.usage.verified_decisions, r.users.unique, r.models.active
            ),
            score: 0.0,
            runner_up: None,
            symptom_in: None,
        };
    };
    let runner_up = ranked.get(1).map(|(s, _)| s.layer.clone());
    let u = &r.users;
    if worst.layer == "users" && u.lapsed > 0 {
        let cause = if 2 * u.lapsed_after_refusal >= u.lapsed {
            Some(("payments", u.lapsed_after_refusal, "had a payment refused"))
        } else if 2 * u.lapsed_after_rejection >= u.lapsed {
            Some(("compute", u.lapsed_after_rejection, "were turned away for capacity"))
        } else {
            None
        };
        if let Some((layer, n, what)) = cause {
            return Bottleneck {
                layer: layer.into(),
                reason: format!(
                    "{layer}: users look like churn ({}), but {n} of the {} payers who did not come back {what} in the window before, so the cause is {layer}",
                    worst.reason, u.lapsed
                ),
                score,
                runner_up: ranked.iter().map(|(s, _)| s.layer.clone()).find(|l| l != layer),
                symptom_in: Some("users".into()),
            };
        }
    }
    Bottleneck { layer: worst.layer.clone(), reason: format!("{}: {}", worst.layer, worst.reason), score, runner_up, symptom_in: None }
}

/// The first line: is trusted usage growing, flat or shrinking, and why.
pub fn headline(r: &Report, inventory: &Inventory, w: Window) -> String {
    let t = &r.usage.trend;
    let span = format!("{} s", w.secs);
    let why = |up: bool| {
        // The model whose change moved the total most, in the direction of the total.
        let best = r
            .usage
            .trend_per_model
            .iter()
            .map(|(m, t)| (m, t.now as i64 - t.before.unwrap_or(0) as i64))
            .filter(|(_, d)| if up { *d > 0 } else { *d < 0 })
            .max_by_key(|(_, d)| d.abs());
        match best {
            Some((m, d)) => format!("; most of the change is {} ({d:+})", if m.is_empty() { "unnamed" } else { m }),
            None => String::new(),
        }
    };
    match (t.direction.as_str(), t.before) {
        ("unknown", _) => format!(
            "usage: {} trusted decisions in the last {span}; too little history to say whether it is growing (data since {} s before the window's end)",
            t.now,
            (w.end_ms - inventory.history_since_ms).max(0) / 1000
        ),
        ("growing", Some(0)) => format!("usage is growing: {} trusted decisions in the last {span}, none in the {span} before{}", t.now, why(true)),
        ("growing", Some(b)) => {
            format!("usage is growing: {} trusted decisions in the last {span}, up {} on the {span} before ({b}){}", t.now, pct(t.growth.unwrap_or(0.0)), why(true))
        }
        ("shrinking", Some(b)) => format!(
            "usage is shrinking: {} trusted decisions in the last {span}, down {} on the {span} before ({b}){}; the bottleneck is {}",
            t.now,
            pct(-t.growth.unwrap_or(0.0)),
            why(false),
            r.bottleneck.layer
        ),
        (_, b) => format!("usage is flat: {} trusted decisions in the last {span}, {} in the {span} before", t.now, b.unwrap_or(0)),
    }
}
