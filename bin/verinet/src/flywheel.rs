//! `verinet flywheel [--window SECS] [--json]`: the per-layer report as a table.

use verinet_client::Client;

use crate::cli::FlywheelArgs;

pub async fn run(a: FlywheelArgs) -> anyhow::Result<()> {
    let r = Client::new(&a.node.node).flywheel(a.window).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print(&r);
    }
    Ok(())
}

/// The report: the headline first, then a line per layer with its shortfall score, the
/// bottleneck's row marked.
pub fn print(r: &verinet_flywheel::Report) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    println!("{}", r.headline);
    println!("flywheel over the last {} s", r.window_secs);
    println!("USAGE         {} trusted decisions ({} verified)", r.usage.trusted_decisions, r.usage.verified_decisions);
    let t = &r.usage.tokens;
    if t.total() > 0 {
        println!(
            "              {} prompt + {} completion tokens in them, on {} models, {} apps, {} paying users",
            t.prompt,
            t.completion,
            r.usage.tokens_per_model.len(),
            r.usage.tokens_per_app.len(),
            r.usage.tokens_per_user.len()
        );
    }
    let u = &r.users;
    let retention = match (u.previous, u.retention) {
        (None, _) => "too little history for retention".to_string(),
        (Some(p), Some(x)) => format!("{} of {p} payers of the window before came back ({})", u.recurring, pct(x)),
        (Some(_), None) => "no payers in the window before".to_string(),
    };
    let p = &r.payments;
    let rows = [
        ("compute", format!(
            "{} requests, {} served, {} rejected ({}), {}/{} executors active, p50 {:.2} ms, p95 {:.2} ms",
            r.compute.requests, r.compute.served, r.compute.rejected, pct(r.compute.rejection_rate),
            r.compute.active_executors, r.compute.executors, r.compute.latency_p50_ms, r.compute.latency_p95_ms
        )),
        ("models", format!(
            "{} hosted, {} active, {} idle, {} failed, top model {} of results",
            r.models.hosted, r.models.active, r.models.idle, r.models.failed, pct(r.models.top_share)
        )),
        ("applications", format!(
            "{} active apps, {} of requests through an app",
            r.applications.active, pct(r.applications.share_via_apps)
        )),
        ("users", format!(
            "{} payers tried, {} new; {retention}; {:.1} requests each",
            u.unique, u.new, u.requests_per_user
        )),
        ("payments", format!(
            "{} paid, volume {}, {} 402 challenges ({} never paid), refused {:?} ({})",
            p.paid, p.volume, p.challenges, p.unpaid, p.failures, pct(p.failure_rate)
        )),
        ("incentives", format!(
            "earnings {:?}, operator {:.0}/request vs cost {} (margin {:.0})",
            r.incentives.earnings, r.incentives.operator_per_request, r.incentives.operator_cost_per_request, r.incentives.operator_margin
        )),
        ("verification", format!(
            "{} asked for a check, {} checked ({} of results), {} refuted ({} of checked; {} refutations of {} workers){}",
            r.verification.requested, r.verification.checked, pct(r.verification.share_verified), r.verification.disputed,
            pct(r.verification.dispute_rate), r.verification.disputes, r.verification.workers_refuted,
            if r.verification.tokens_requested > 0 {
                format!(", verification {:.0} per 1k tokens", r.verification.cost_per_1k_tokens)
            } else {
                String::new()
            }
        )),
        ("trust", format!(
            "{} of results paid and receipted, reputation {:.2}..{:.2}",
            pct(r.trust.trusted_share), r.trust.reputation_min, r.trust.reputation_max
        )),
    ];
    println!("   {:<12} {:>5}  numbers", "layer", "score");
    for (layer, line) in rows {
        let mark = if layer == r.bottleneck.layer { "=>" } else { "  " };
        let score = r.scores.iter().find(|s| s.layer == layer).and_then(|s| s.score).map_or("-".to_string(), |x| format!("{x:.2}"));
        println!("{mark} {layer:<12} {score:>5}  {line}");
    }
    println!("\nBOTTLENECK    {}", r.bottleneck.reason);
    if let Some(next) = &r.bottleneck.runner_up {
        println!("RUNNER-UP     {next}");
    }
}
