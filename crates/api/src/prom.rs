//! Prometheus counters and histograms of every served request, with labels, in the text
//! exposition format (docs/flywheel.md, "Prometheus"). Counted in [`crate::traffic::served`],
//! so `rate()` over them is the request rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use verinet_flywheel::{RequestEvent, TallyKey};

/// Histogram upper bounds, seconds.
const BOUNDS: [f64; 15] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Default)]
struct Histogram {
    /// Per bound, then +Inf (not cumulative; cumulated when written).
    counts: [u64; BOUNDS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = BOUNDS.iter().position(|b| secs <= *b).unwrap_or(BOUNDS.len());
        self.counts[i] += 1;
        self.sum += secs.max(0.0);
    }
}

#[derive(Default)]
struct Inner {
    /// (model, mode, status, code).
    requests: BTreeMap<(String, String, u16, String), u64>,
    duration: BTreeMap<String, Histogram>,
    queue: BTreeMap<String, Histogram>,
    paid: BTreeMap<String, u64>,
    /// (model, app).
    trusted: BTreeMap<(String, String), u64>,
    /// (model, outcome).
    checks: BTreeMap<(String, String), u64>,
    refutations: BTreeMap<String, u64>,
    /// (model, kind).
    tokens: BTreeMap<(String, &'static str), u64>,
}

/// The counters since the process started.
#[derive(Default)]
pub struct Counters(Mutex<Inner>);

impl Counters {
    /// Counts one answered request.
    pub fn observe(&self, ev: &RequestEvent) {
        let key = TallyKey::of(ev);
        let model = key.model.clone();
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let code = ev.error.clone().unwrap_or_else(|| "ok".into());
        *c.requests.entry((model.clone(), ev.mode.clone(), ev.status, code)).or_default() += 1;
        c.duration.entry(model.clone()).or_default().observe(ev.total_ms / 1000.0);
        if key.is_served() {
            c.queue.entry(model.clone()).or_default().observe(ev.queue_ms / 1000.0);
        }
        if key.is_served() && ev.charged > 0 {
            *c.paid.entry(model.clone()).or_default() += 1;
        }
        if key.is_trusted() {
            *c.trusted.entry((model.clone(), ev.app.clone().unwrap_or_default())).or_default() += 1;
        }
        if let Some(check @ ("passed" | "disputed" | "quorum")) = ev.check.as_deref() {
            *c.checks.entry((model.clone(), check.to_owned())).or_default() += 1;
        }
        if !ev.disputed.is_empty() {
            *c.refutations.entry(model.clone()).or_default() += ev.disputed.len() as u64;
        }
        if ev.prompt_tokens > 0 {
            *c.tokens.entry((model.clone(), "prompt")).or_default() += ev.prompt_tokens;
        }
        if ev.completion_tokens > 0 {
            *c.tokens.entry((model, "completion")).or_default() += ev.completion_tokens;
        }
    }

    /// The counters and histograms in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        family(out, "verinet_requests_total", "counter", "requests answered, by model, verification mode, HTTP status and code (ok or the error code)");
        for ((model, mode, status, code), n) in &c.requests {
            sample(out, "verinet_requests_total", &[("model", model), ("mode", mode), ("status", &status.to_string()), ("code", code)], *n as f64);
        }
        histograms(out, "verinet_request_duration_seconds", "time to answer a request, by model", &c.duration);
        histograms(out, "verinet_queue_wait_seconds", "wait for an execution slot of served requests, by model", &c.queue);
        family(out, "verinet_paid_requests_total", "counter", "served requests with a captured payment, by model");
        for (model, n) in &c.paid {
            sample(out, "verinet_paid_requests_total", &[("model", model)], *n as f64);
        }
        family(out, "verinet_trusted_decisions_total", "counter", "served results paid, receipted and not refuted, by model and app (empty: none)");
        for ((model, app), n) in &c.trusted {
            sample(out, "verinet_trusted_decisions_total", &[("model", model), ("app", app)], *n as f64);
        }
        family(out, "verinet_checks_total", "counter", "results checked by another executor, by model and outcome (passed, disputed, quorum)");
        for ((model, outcome), n) in &c.checks {
            sample(out, "verinet_checks_total", &[("model", model), ("outcome", outcome)], *n as f64);
        }
        family(out, "verinet_refutations_total", "counter", "workers refuted by a check, by model");
        for (model, n) in &c.refutations {
            sample(out, "verinet_refutations_total", &[("model", model)], *n as f64);
        }
        family(out, "verinet_tokens_total", "counter", "language-model tokens of served calls, by model and kind (prompt, completion)");
        for ((model, kind), n) in &c.tokens {
            sample(out, "verinet_tokens_total", &[("model", model), ("kind", kind)], *n as f64);
        }
    }
}

/// `# HELP` and `# TYPE` of one family.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line.
pub(crate) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", val.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {v}");
}

fn histograms(out: &mut String, name: &str, help: &str, by_model: &BTreeMap<String, Histogram>) {
    family(out, name, "histogram", help);
    for (model, h) in by_model {
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = BOUNDS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            sample(out, &format!("{name}_bucket"), &[("model", model), ("le", &le)], cumulative as f64);
        }
        sample(out, &format!("{name}_sum"), &[("model", model)], h.sum);
        sample(out, &format!("{name}_count"), &[("model", model)], cumulative as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_with_labels_and_histograms_cumulate() {
        let c = Counters::default();
        let ev = |status: u16, error: Option<&str>, ms: f64| RequestEvent {
            model: Some("digits".into()),
            mode: "none".into(),
            status,
            error: error.map(str::to_owned),
            total_ms: ms,
            charged: u128::from(status == 200),
            ..Default::default()
        };
        c.observe(&ev(200, None, 0.7));
        c.observe(&ev(200, None, 3.0));
        c.observe(&ev(402, Some("payment_required"), 0.2));
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("verinet_requests_total{model=\"digits\",mode=\"none\",status=\"200\",code=\"ok\"} 2\n"), "{out}");
        assert!(out.contains("verinet_requests_total{model=\"digits\",mode=\"none\",status=\"402\",code=\"payment_required\"} 1\n"), "{out}");
        assert!(out.contains("verinet_request_duration_seconds_bucket{model=\"digits\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("verinet_request_duration_seconds_bucket{model=\"digits\",le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("verinet_request_duration_seconds_bucket{model=\"digits\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("verinet_request_duration_seconds_count{model=\"digits\"} 3\n"), "{out}");
        assert!(out.contains("verinet_trusted_decisions_total{model=\"digits\",app=\"\"} 2\n"), "{out}");
        let mut escaped = String::new();
        sample(&mut escaped, "m", &[("a", "x\"y\\z")], 1.0);
        assert_eq!(escaped, "m{a=\"x\\\"y\\\\z\"} 1\n");
    }
}
