//! Verification with a cheating worker (a backend that corrupts a chosen share of outputs):
//! quorum outvotes it every time; sampled re-execution catches it at the rate sampling predicts,
//! slashes it, refunds the payer, and never touches an honest node.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy_signer_local::PrivateKeySigner;
use serde_json::Value;
use verinet_node::Overrides;
use verinet_primitives::{
    Address,
    wire::{InferRequest, VerificationMode},
};
use verinet_runtime::{
    TractBackend,
    test_utils::{CorruptingBackend, Tolerance, assert_outputs, parse_reference},
};

use crate::helpers::{TestNode, repo_root};

const TOL: Tolerance = Tolerance { abs: 1e-5, rel: 1e-5 };
const SLASH: u128 = 1_000;
const STAKE: u128 = 1_000_000;

fn req(case: usize, mode: VerificationMode) -> (InferRequest, verinet_primitives::TensorMap) {
    let r = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    let c = &r.cases[case % r.cases.len()];
    let req = InferRequest { verification: mode, ..InferRequest::new("digits", c.inputs.clone()) };
    (req, c.outputs.clone())
}

async fn nodes(url: &str) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{url}/v1/nodes")).await.unwrap().json().await.unwrap();
    v["nodes"].as_array().unwrap().clone()
}

fn node(list: &[Value], address: Address) -> &Value {
    list.iter().find(|n| n["address"].as_str().unwrap().parse::<Address>().unwrap() == address).unwrap()
}

/// A node whose worker `cheater` corrupts `share` of its runs; returns the node and the
/// corruption counter.
async fn with_cheater(
    workers: usize,
    cheater: usize,
    share: f64,
    tweak: impl FnOnce(&mut verinet_node::Config),
) -> (TestNode, Arc<std::sync::atomic::AtomicU64>) {
    let backend = CorruptingBackend::new(Arc::new(TractBackend::new()), share, 7);
    let counter = backend.counter();
    let overrides = Overrides { worker_backends: vec![(cheater, Arc::new(backend))], ..Overrides::default() };
    let n = TestNode::start_with_overrides(
        |c| {
            c.verification.workers = workers;
            c.verification.validators = 1;
            c.verification.min_stake = "1".into();
            c.verification.devnet_stake = STAKE.to_string();
            c.verification.slash_amount = SLASH.to_string();
            c.verification.seed = Some(42);
            tweak(c);
        },
        overrides,
    )
    .await;
    (n, counter)
}

#[tokio::test]
async fn quorum_with_one_cheater_of_three_returns_the_honest_answer_every_time() {
    // The cheater corrupts every run and stays routable (threshold 0) so it sits in every quorum.
    let (n, corrupted) = with_cheater(3, 2, 1.0, |c| {
        c.verification.quorum_k = 3;
        c.verification.min_reputation = 0.0;
        c.payments.operator_fee = "100".into();
    })
    .await;
    let url = n.node.url();
    let before = nodes(&url).await;
    let cheater: Address = before[2]["address"].as_str().unwrap().parse().unwrap();
    let payer = PrivateKeySigner::random();
    n.client.faucet(payer.address(), Some(10_000)).await.unwrap();

    const RUNS: usize = 8;
    for i in 0..RUNS {
        let (r, expected) = req(i, VerificationMode::Quorum);
        let (resp, _) = n.client.infer_paid(&r, &payer).await.unwrap();
        assert_outputs("quorum answer", &resp.tensors().unwrap(), &expected, TOL);
        let check = resp.check.unwrap();
        assert_eq!((check.status.as_str(), check.disputed.as_slice()), ("quorum", [cheater].as_slice()));
        assert_eq!(check.checked_by.len(), 2);
        assert_ne!(resp.receipt.unwrap().receipt.node, cheater, "the receipt is an honest worker's");
    }
    assert_eq!(corrupted.load(Ordering::SeqCst), RUNS as u64);
    // Verified answers are paid once each.
    let paid = n.client.account(payer.address()).await.unwrap();
    assert_eq!(paid.balance, (10_000 - 100 * RUNS as u128).to_string());

    let after = nodes(&url).await;
    let c = node(&after, cheater);
    assert_eq!(c["stats"]["failed"], RUNS);
    assert_eq!(c["stake"], (STAKE - SLASH * RUNS as u128).to_string());
    for honest in after.iter().filter(|x| x["address"].as_str().unwrap().parse::<Address>().unwrap() != cheater) {
        assert_eq!(honest["stats"]["failed"], 0, "{honest}");
        assert_eq!(honest["stake"], STAKE.to_string(), "{honest}");
    }
}

#[tokio::test]
async fn quorum_routing_drops_a_slashed_worker_below_the_threshold() {
    // Four workers, quorum of three, default threshold: once caught, the cheater gets no work.
    let (n, corrupted) = with_cheater(4, 1, 1.0, |c| c.verification.quorum_k = 3).await;
    for i in 0..12 {
        let (r, expected) = req(i, VerificationMode::Quorum);
        let resp = n.client.infer(&r).await.unwrap();
        assert_outputs("quorum answer", &resp.tensors().unwrap(), &expected, TOL);
    }
    assert_eq!(corrupted.load(Ordering::SeqCst), 1, "caught once, then never routed to again");
    let list = nodes(&n.node.url()).await;
    let inactive: Vec<_> = list.iter().filter(|x| x["active"] == false).collect();
    assert_eq!(inactive.len(), 1);
    assert_eq!(inactive[0]["stats"]["failed"], 1);
}

/// Sampled mode, p = 0.3, a worker corrupting half its results: every sampled result is judged
/// right (honest passes, corrupted disputes), detections follow Binomial(corrupted, p), disputed
/// payers are refunded, and the honest validator is never slashed.
#[tokio::test]
async fn sampled_reexecution_catches_cheats_at_the_sampling_rate() {
    let (n, corrupted) = with_cheater(1, 0, 0.5, |c| {
        c.verification.sample_rate = 0.3;
        c.verification.min_reputation = 0.0;
        c.payments.operator_fee = "100".into();
    })
    .await;
    let payer = PrivateKeySigner::random();
    n.client.faucet(payer.address(), Some(1_000_000)).await.unwrap();
    const N: usize = 120;
    let (mut passed, mut disputed, mut unchecked) = (0usize, 0usize, 0usize);
    let mut charged = 0u128;
    for i in 0..N {
        let (r, expected) = req(i, VerificationMode::Sampled);
        let (resp, _) = n.client.infer_paid(&r, &payer).await.unwrap();
        match resp.check.as_ref().unwrap().status.as_str() {
            "passed" => {
                passed += 1;
                assert_outputs("checked result", &resp.tensors().unwrap(), &expected, TOL);
            }
            "disputed" => {
                disputed += 1;
                // The payer gets the validator's (right) answer, free.
                assert_outputs("validator's result", &resp.tensors().unwrap(), &expected, TOL);
                assert_eq!(resp.price, "0");
                assert!(resp.payment.is_none());
                let info: Value = reqwest::get(format!("{}/v1/receipts/{}", n.node.url(), resp.request_id))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(info["status"], "disputed", "{info}");
                assert_eq!(info["disputes"][0]["mode"], "sampled");
                assert_ne!(info["disputes"][0]["worker_output"], info["disputes"][0]["validator_output"]);
            }
            "unchecked" => unchecked += 1,
            other => panic!("unexpected status {other}"),
        }
        charged += resp.price.parse::<u128>().unwrap();
    }
    let cheats = corrupted.load(Ordering::SeqCst) as f64;
    let p = 0.3;
    let sampled = (passed + disputed) as f64;
    let sigma = |n: f64, p: f64| (n * p * (1.0 - p)).sqrt();
    eprintln!("n={N} corrupted={cheats} sampled={sampled} disputed={disputed} passed={passed} unchecked={unchecked}");
    // Sampling rate over all requests, detection rate over corrupted ones: within 4 sigma.
    assert!((sampled - p * N as f64).abs() <= 4.0 * sigma(N as f64, p) + 1.0, "sampled {sampled} of {N}");
    assert!((disputed as f64 - p * cheats).abs() <= 4.0 * sigma(cheats, p) + 1.0, "{disputed} of {cheats} cheats");
    assert!(disputed >= 1 && (disputed as f64) <= cheats);

    // Money: only undisputed answers were paid; the cheater lost one slash per detection.
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!(charged, 100 * (N - disputed) as u128);
    assert_eq!(a.balance, (1_000_000 - charged).to_string());
    let list = nodes(&n.node.url()).await;
    let (worker, validator) = (&list[0], &list[1]);
    assert_eq!(worker["stats"]["failed"], disputed);
    assert_eq!(worker["stake"], (STAKE - SLASH * disputed as u128).to_string());
    assert_eq!(validator["stats"]["failed"], 0);
    assert_eq!(validator["stake"], STAKE.to_string());
    // Half of each slash rewards the validator that caught it.
    let v: Address = validator["address"].as_str().unwrap().parse().unwrap();
    let earned = n.client.account(v).await.unwrap();
    assert_eq!(earned.earnings.get("validator"), Some(&(SLASH / 2 * disputed as u128).to_string()));
}

/// No false alarms: honest workers checked on every request are never disputed. (Across
/// backends, tract and onnxruntime agree with the onnxruntime references within 1e-5 in the
/// runtime tests, ten times inside the default tolerance.)
#[tokio::test]
async fn honest_workers_are_never_disputed() {
    let n = TestNode::start_with(|c| {
        c.verification.workers = 2;
        c.verification.validators = 1;
        c.verification.sample_rate = 1.0;
    })
    .await;
    for i in 0..10 {
        let (r, _) = req(i, VerificationMode::Sampled);
        let resp = n.client.infer(&r).await.unwrap();
        assert_eq!(resp.check.unwrap().status, "passed");
    }
    let list = nodes(&n.node.url()).await;
    assert!(list.iter().all(|x| x["stats"]["failed"] == 0), "{list:?}");
    assert_eq!(list.iter().filter(|x| x["role"] == "validator").count(), 1);
}

/// The sampling mechanism alone: over many trials of n results each, a cheater is caught at
/// least once with probability 1 - (1 - p)^n.
#[test]
fn detection_probability_over_n_results_is_one_minus_one_minus_p_to_the_n() {
    let pool = verinet_verify::Pool::new(vec![], vec![], 0.0, 0, Some(3));
    let (p, n, trials) = (0.2, 10, 4000);
    let caught = (0..trials).filter(|_| (0..n).any(|_| pool.sample(p))).count() as f64;
    let expected = 1.0 - (1.0f64 - p).powi(n);
    let sigma = (trials as f64 * expected * (1.0 - expected)).sqrt();
    assert!((caught - expected * trials as f64).abs() <= 4.0 * sigma, "caught {caught} of {trials}, expected {expected}");
}

/// A model's policy set at publish (sampling rate, tolerance) overrides the node's default, and
/// a request's `sample_rate` overrides both; bad policies are refused at publish.
#[tokio::test]
async fn per_model_policy_overrides_the_node_and_requests_override_it() {
    let n = TestNode::start_with(|c| {
        c.verification.workers = 1;
        c.verification.validators = 1;
        c.verification.sample_rate = 0.0;
    })
    .await;
    let key = PrivateKeySigner::random();
    let bytes = crate::helpers::digits_bytes();
    let mut meta = crate::helpers::signed("always-checked", "1.0.0", &bytes, &key);
    meta.verification = Some(serde_json::json!({"sample_rate": 1.0, "tolerance_abs": 0.001}));
    let info = n.client.publish_bytes(&meta, bytes.clone()).await.unwrap();
    assert_eq!(info.verification.unwrap()["sample_rate"], 1.0);

    let (mut r, _) = req(0, VerificationMode::Sampled);
    r.model = "always-checked".into();
    assert_eq!(n.client.infer(&r).await.unwrap().check.unwrap().status, "passed", "model policy: p = 1");
    r.sample_rate = Some(0.0);
    assert_eq!(n.client.infer(&r).await.unwrap().check.unwrap().status, "unchecked", "request overrides model");
    let (plain, _) = req(0, VerificationMode::Sampled);
    assert_eq!(n.client.infer(&plain).await.unwrap().check.unwrap().status, "unchecked", "node default: p = 0");

    for bad in [serde_json::json!({"sample_rate": 2.0}), serde_json::json!({"tolerance_rel": -1}), serde_json::json!({"k": 3})] {
        let mut meta = crate::helpers::signed("bad-policy", "1.0.0", &bytes, &key);
        meta.verification = Some(bad.clone());
        let e = n.client.publish_bytes(&meta, bytes.clone()).await.unwrap_err();
        assert!(matches!(e, verinet_client::ClientError::Api { status: 422, ref code, .. } if code == "invalid_metadata"), "{bad}: {e}");
    }
}

/// Stake gates work: executors below `min_stake` are not routed to, and a slash that takes a
/// cheater below it removes it from routing even when its reputation would not.
#[tokio::test]
async fn executors_below_the_minimum_stake_get_no_work() {
    // Every executor bonds exactly the minimum; one slash puts the cheater under it.
    let (n, corrupted) = with_cheater(4, 0, 1.0, |c| {
        c.verification.quorum_k = 3;
        c.verification.min_reputation = 0.0;
        c.verification.min_stake = STAKE.to_string();
    })
    .await;
    for i in 0..10 {
        let (r, expected) = req(i, VerificationMode::Quorum);
        let resp = n.client.infer(&r).await.unwrap();
        assert_outputs("quorum answer", &resp.tensors().unwrap(), &expected, TOL);
    }
    assert_eq!(corrupted.load(Ordering::SeqCst), 1, "slashed under the minimum after its first cheat");
    let list = nodes(&n.node.url()).await;
    let out: Vec<_> = list.iter().filter(|x| x["active"] == false).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["stake"], (STAKE - SLASH).to_string());

    // A node that bonds nothing (not a devnet) with a minimum: no worker qualifies.
    let strict = TestNode::start_with(|c| {
        c.payments.devnet = false;
        c.verification.min_stake = "1".into();
    })
    .await;
    let e = strict.client.infer(&req(0, VerificationMode::None).0).await.unwrap_err();
    assert!(matches!(e, verinet_client::ClientError::Api { status: 503, ref code, .. } if code == "no_workers"), "{e}");
}
