//! The dashboard in a real browser: headless Chromium loads `/dashboard` from a node with real
//! traffic, the charts render with data, and a screenshot is saved.

use alloy_signer_local::PrivateKeySigner;
use verinet_primitives::wire::InferRequest;
use verinet_runtime::test_utils::parse_reference;

use crate::helpers::{TestNode, repo_root};

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let bin = std::env::var("VERINET_TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!("VERINET_TEST_CHROMIUM is not set: run scripts/test.sh, which installs Debian's chromium")
    });
    let profile = tempfile::tempdir().unwrap();
    // Flags of a closed network: no background fetches, no component updates, no sandbox (root).
    std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

#[tokio::test]
async fn dashboard_renders_charts_with_data_in_headless_chromium() {
    let n = TestNode::start_with(|c| {
        c.payments.operator_fee = "100".into();
        c.flywheel.event_flush_ms = 20;
    })
    .await;
    let r = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    let payers: Vec<PrivateKeySigner> = (0..3).map(|_| PrivateKeySigner::random()).collect();
    for p in &payers {
        n.client.faucet(p.address(), Some(10_000)).await.unwrap();
    }
    for (i, case) in r.cases.iter().cycle().take(12).enumerate() {
        let req = InferRequest::new("digits", case.inputs.clone());
        n.client.infer_paid(&req, &payers[i % 3]).await.unwrap();
    }
    let url = format!("{}/dashboard", n.node.url());

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&["--dump-dom"], &url)
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains(r#"data-rendered="true""#), "the page did not render: {}\n{}", dom, String::from_utf8_lossy(&out.stderr));
    assert_eq!(dom.matches(r#"class="series""#).count(), 3, "three lines on the volume chart");
    assert_eq!(dom.matches(r#"class="line""#).count(), 5, "rate, errors, refuted; p95 and queue p95");
    assert!(dom.matches(r#"class="bar""#).count() >= 7, "funnel and model bars");
    assert_eq!(dom.matches(r#"data-points="20""#).count(), 3, "the volume, rate and latency charts have every slice");
    assert!(dom.contains("bottleneck: "), "the bottleneck banner");
    assert!(dom.contains(">12<"), "12 trusted decisions in the headline: {dom}");
    // A node up for seconds: growth is unknown, not a fall; the executors are listed; the time
    // of the last update is shown; the default window is 15 minutes.
    assert!(dom.contains(r#"data-direction="unknown""#), "growth indicator: {dom}");
    assert!(dom.contains(r#"id="executors" data-rows="2""#), "a worker and a validator: {dom}");
    assert!(dom.contains("updated at "), "updated at: {dom}");
    assert!(dom.contains(r#"<option value="900" selected="">"#), "default window: {dom}");

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::task::spawn_blocking({
        let arg = format!("--screenshot={}", shot.display());
        move || chromium(&[&arg, "--window-size=1280,1400"], &url)
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot of {} bytes", png.len());
    if let Ok(dest) = std::env::var("VERINET_SCREENSHOT_OUT") {
        std::fs::write(dest, &png).unwrap();
    }
}

/// A live node whose only worker corrupts every result, under sampled checks of every request:
/// the dashboard, at its default window, names verification and shows the dispute rate.
#[tokio::test]
async fn a_live_node_with_disputes_names_verification_on_the_dashboard() {
    use std::sync::Arc;

    use verinet_primitives::wire::VerificationMode;
    use verinet_runtime::{TractBackend, test_utils::CorruptingBackend};

    let backend = CorruptingBackend::new(Arc::new(TractBackend::new()), 1.0, 7);
    let overrides = verinet_node::Overrides { worker_backends: vec![(0, Arc::new(backend))], ..Default::default() };
    let n = TestNode::start_with_overrides(
        |c| {
            c.payments.operator_fee = "100".into();
            c.flywheel.event_flush_ms = 20;
            c.verification.workers = 1;
            c.verification.validators = 1;
            c.verification.min_stake = "1".into();
            c.verification.min_reputation = 0.0;
            c.verification.slash_amount = "1".into();
        },
        overrides,
    )
    .await;
    let r = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    let payers: Vec<PrivateKeySigner> = (0..3).map(|_| PrivateKeySigner::random()).collect();
    for p in &payers {
        n.client.faucet(p.address(), Some(100_000)).await.unwrap();
    }
    for (i, case) in r.cases.iter().cycle().take(12).enumerate() {
        let req = InferRequest {
            verification: VerificationMode::Sampled,
            sample_rate: Some(1.0),
            ..InferRequest::new("digits", case.inputs.clone())
        };
        // Refuted: the payer is refunded; the call itself is answered with the check's verdict.
        let _ = n.client.infer_paid(&req, &payers[i % 3]).await;
    }
    let report = n.client.flywheel(900).await.unwrap();
    assert_eq!((report.verification.checked, report.verification.disputed), (12, 12), "{:?}", report.verification);
    let url = format!("{}/dashboard", n.node.url());
    let out = tokio::task::spawn_blocking(move || chromium(&["--dump-dom"], &url)).await.unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains(r#"data-rendered="true""#), "the page did not render: {dom}");
    assert!(dom.contains("bottleneck: verification"), "{dom}");
    assert!(dom.contains("12 of 12 checked results were refuted"), "{dom}");
    assert!(dom.contains(r#"class="alarm" id="disputes""#), "dispute rate highlighted: {dom}");
    assert!(dom.contains(r#"class="slashed""#), "the cheating worker's row: {dom}");
}
