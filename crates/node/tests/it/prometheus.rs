//! `/metrics` as Prometheus reads it: `promtool check metrics` finds nothing to complain about,
//! and a real Prometheus server scraping a node computes `rate()` of the request counter that
//! matches the requests sent.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use verinet_primitives::wire::InferRequest;
use verinet_runtime::test_utils::parse_reference;

use crate::helpers::{TestNode, repo_root};

fn prometheus_dir() -> PathBuf {
    PathBuf::from(std::env::var("VERINET_TEST_PROMETHEUS").unwrap_or_else(|_| {
        panic!("VERINET_TEST_PROMETHEUS is not set: run scripts/test.sh, which installs Debian's prometheus (prometheus, promtool)")
    }))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the server when the test ends, passed or failed.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(http: &reqwest::Client, base: &str, q: &str) -> f64 {
    let body: serde_json::Value =
        http.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "success", "{q}: {body}");
    let v = &body["data"]["result"][0]["value"][1];
    v.as_str().unwrap_or_else(|| panic!("{q}: no value in {body}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_passes_and_prometheus_rate_matches_the_requests_sent() {
    let n = TestNode::start_with(|_| {}).await;
    let r = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    let req = InferRequest::new("digits", r.cases[0].inputs.clone());
    n.client.infer(&req).await.unwrap();
    // An error of each kind the counters label.
    assert!(n.client.infer(&InferRequest::new("nope", r.cases[0].inputs.clone())).await.is_err());

    let http = reqwest::Client::new();
    let metrics = http.get(format!("{}/metrics", n.node.url())).send().await.unwrap().text().await.unwrap();
    let mut check = Command::new(prometheus_dir().join("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{metrics}");
    assert!(metrics.contains("verinet_requests_total{model=\"digits\",mode=\"none\",status=\"200\",code=\"ok\"} 1\n"), "{metrics}");
    assert!(metrics.contains("# TYPE verinet_request_duration_seconds histogram"), "{metrics}");
    assert!(metrics.contains("verinet_layer_shortfall_ratio{layer="), "{metrics}");

    // A Prometheus server of our own, scraping the node every second.
    let dir = tempfile::tempdir().unwrap();
    let target = n.node.url().trim_start_matches("http://").to_string();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: verinet\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        Command::new(prometheus_dir().join("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ready = false;
    for _ in 0..100 {
        if http.get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "prometheus did not start");
    // Scraped a few times before the load, so the counter's series exists and is flat.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 60 requests at 10 a second, then a quiet spell.
    let sent = 60;
    for _ in 0..sent {
        n.client.infer(&req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ok = r#"verinet_requests_total{job="verinet",model="digits",code="ok"}"#;
    assert_eq!(query(&http, &base, &format!("sum({ok})")).await, f64::from(sent + 1));
    // rate() over a range that holds the whole load, times its length: the requests sent,
    // within Prometheus' extrapolation to the range's edges.
    let range = 14;
    let from_rate = query(&http, &base, &format!("sum(rate({ok}[{range}s])) * {range}")).await;
    assert!((from_rate - f64::from(sent)).abs() <= 0.15 * f64::from(sent), "rate() * {range} s = {from_rate}, sent {sent}");

    // Every query of the shipped Grafana dashboard runs on this Prometheus against these metrics.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/grafana-dashboard.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().replace("$__rate_interval", "1m")))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for q in &exprs {
        let body: serde_json::Value =
            http.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["status"], "success", "{q}: {body}");
    }
    let p95 = query(&http, &base, "histogram_quantile(0.95, sum by (le) (rate(verinet_request_duration_seconds_bucket[1m])))").await;
    assert!(p95 > 0.0 && p95 < 1.0, "p95 {p95} s");
    n.node.stop().await.unwrap();
}
