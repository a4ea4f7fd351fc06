//! The flywheel over real traffic: every request emits its event, the report counts each layer,
//! Prometheus shows the same, and events survive a restart.

use alloy_signer_local::PrivateKeySigner;
use verinet_client::{Client, ClientError};
use verinet_node::{Config, Node};
use verinet_primitives::wire::InferRequest;
use verinet_runtime::test_utils::parse_reference;

use crate::helpers::repo_root;

fn req(model: &str) -> InferRequest {
    let r = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    InferRequest::new(model, r.cases[0].inputs.clone())
}

#[tokio::test]
async fn every_request_feeds_the_flywheel_report_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.verification.workers = 1;
    config.payments.operator_fee = "100".into();
    config.flywheel.event_flush_ms = 20;
    let node = Node::spawn(&config).await.unwrap();
    let client = Client::new(node.url());

    let (alice, bob, poor) = (PrivateKeySigner::random(), PrivateKeySigner::random(), PrivateKeySigner::random());
    for k in [&alice, &bob] {
        client.faucet(k.address(), Some(10_000)).await.unwrap();
    }
    client.faucet(poor.address(), Some(50)).await.unwrap();
    for i in 0..6 {
        let payer = if i % 2 == 0 { &alice } else { &bob };
        client.infer_paid(&req("digits"), payer).await.unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(client.infer(&req("digits")).await, Err(ClientError::Api { status: 402, .. })));
    }
    assert!(matches!(client.infer_paid(&req("digits"), &poor).await, Err(ClientError::Api { status: 402, .. })));
    assert!(matches!(client.infer(&req("nope")).await, Err(ClientError::Api { status: 404, .. })));

    let r = client.flywheel(600).await.unwrap();
    // Each paid call is a 402 challenge then the paid request: 6 + 1 (poor) challenges were
    // followed by a payment, 2 never were (`unpaid`).
    assert_eq!((r.compute.requests, r.compute.served), (8, 6));
    assert_eq!((r.payments.paid, r.payments.volume, r.payments.challenges, r.payments.unpaid), (6, 600, 9, 2));
    assert_eq!(r.payments.failures.get("insufficient_funds"), Some(&1));
    // Users are payers who tried, refused ones included; a node up for seconds has no window
    // before to compare with.
    assert_eq!((r.users.unique, r.users.previous, r.usage.trusted_decisions), (3, None, 6));
    assert_eq!(r.usage.trend.direction, "unknown");
    assert_eq!(r.usage.per_model.get("digits"), Some(&6));
    assert_eq!((r.models.hosted, r.models.active), (1, 1));
    assert_eq!(r.incentives.earnings.get("operator"), Some(&600));
    assert_eq!(r.bottleneck.layer, "none", "{}", r.bottleneck.reason);
    assert_eq!(r.series.iter().map(|s| s.requests).sum::<u64>(), 8);
    assert_eq!(r.scores.len(), 8);

    let metrics = reqwest::get(format!("{}/metrics", node.url())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("verinet_compute_requests 8"), "{metrics}");
    assert!(metrics.contains("verinet_usage_trusted_decisions 6"), "{metrics}");
    assert!(metrics.contains("verinet_bottleneck{layer=\"none\"} 1"), "{metrics}");
    let bad = reqwest::get(format!("{}/v1/flywheel?window=0", node.url())).await.unwrap();
    assert_eq!(bad.status(), 400);

    // Events are durable: a restarted node reports the same window.
    node.stop().await.unwrap();
    let node = Node::spawn(&config).await.unwrap();
    let again = Client::new(node.url()).flywheel(600).await.unwrap();
    assert_eq!((again.compute.requests, again.usage.trusted_decisions), (8, 6));
    node.stop().await.unwrap();
}
