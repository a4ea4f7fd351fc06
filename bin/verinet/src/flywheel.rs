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

/// The report as a table, the bottleneck's row marked.
pub fn print(r: &verinet_flywheel::Report) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    println!("flywheel over the last {} s", r.window_secs);
    println!("USAGE         {} trusted decisions ({} verified)", r.usage.trusted_decisions, r.usage.verified_decisions);
    let t = &r.usage.tokens;
    if t.total() > 0 {
        let apps = r.usage.tokens_per_app.len();
        println!(
            "              {} prompt + {} completion tokens in them, on {} models, {} apps, {} paying users",
            t.prompt,
            t.completion,
            r.usage.tokens_per_model.len(),
            apps,
            r.usage.tokens_per_user.len()
        );
    }
    let rows = [
        ("compute", format!(
            "{} requests, {} served, {} rejected ({}), {}/{} executors active, p50 {:.2} ms",
            r.compute.requests, r.compute.served, r.compute.rejected, pct(r.compute.rejection_rate),
            r.compute.active_executors, r.compute.executors, r.compute.latency_p50_ms
        )),
        ("models", format!(
            "{} hosted, {} active, top model {} of results",
            r.models.hosted, r.models.active, pct(r.models.top_share)
        )),
        ("applications", format!(
            "{} active apps, {} of requests through an app",
            r.applications.active, pct(r.applications.share_via_apps)
        )),
        ("users", format!(
            "{} paying users, {} returning ({} retention), {:.1} requests each",
            r.users.unique, r.users.recurring, pct(r.users.retention), r.users.requests_per_user
        )),
        ("payments", format!(
            "{} paid, volume {}, {} unpaid 402s, failures {:?} ({})",
            r.payments.paid, r.payments.volume, r.payments.unpaid, r.payments.failures, pct(r.payments.failure_rate)
        )),
        ("incentives", format!(
            "earnings {:?}, operator {:.0}/request vs cost {} (margin {:.0})",
            r.incentives.earnings, r.incentives.operator_per_request, r.incentives.operator_cost_per_request, r.incentives.operator_margin
        )),
        ("verification", format!(
            "{} checked ({} of results), {} disputes ({} of checked){}",
            r.verification.checked, pct(r.verification.share_verified), r.verification.disputes, pct(r.verification.dispute_rate),
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
    for (layer, line) in rows {
        let mark = if layer == r.bottleneck.layer { "=>" } else { "  " };
        println!("{mark} {layer:<12} {line}");
    }
    println!("\nBOTTLENECK    {}", r.bottleneck.reason);
}
