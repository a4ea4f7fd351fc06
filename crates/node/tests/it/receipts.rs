//! Receipts: every result carries the node's EIP-712 receipt, bound to the model bytes, the
//! inputs, the outputs returned and the payment; eth_account recovers the same signer.

use alloy_primitives::B256;
use serde_json::Value;
use verinet_primitives::{Address, TensorMap, tensors_hash, wire::InferRequest};
use verinet_runtime::test_utils::parse_reference;
use verinet_verify::{InclusionProof, batch_hash, merkle, verify_receipt};

use crate::helpers::{TestNode, repo_root};

fn digits_req() -> InferRequest {
    let inputs: TensorMap = parse_reference(&repo_root().join("fixtures/digits/reference.json")).cases[0].inputs.clone();
    InferRequest::new("digits", inputs)
}

#[tokio::test]
async fn every_result_carries_a_receipt_python_recovers() {
    let python = std::env::var("VERINET_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("VERINET_TEST_PYTHON is not set: run scripts/test.sh, which installs eth_account into target/pyenv")
    });
    let n = TestNode::start_with(|c| c.payments.operator_fee = "77".into()).await;
    let payer = alloy_signer_local::PrivateKeySigner::random();
    n.client.faucet(payer.address(), Some(1_000)).await.unwrap();
    let req = digits_req();
    let (resp, _) = n.client.infer_paid(&req, &payer).await.unwrap();
    let signed = resp.receipt.clone().expect("a receipt");
    let r = &signed.receipt;

    // What it binds.
    let node = verify_receipt(&signed).unwrap();
    assert_eq!(node, r.node);
    assert_eq!(r.request_id, resp.request_id);
    assert_eq!(r.model_hash, B256::from(*resp.model.sha256.digest()));
    assert_eq!(r.input_hash, tensors_hash(&req.inputs));
    assert_eq!(r.output_hash, tensors_hash(&resp.tensors().unwrap()));
    assert_eq!((r.payer, r.price.as_str(), r.mode.as_str()), (payer.address(), "77", "none"));
    let paid_to: Address = n.client.quote(&req).await.unwrap().accepts[0].pay_to.parse().unwrap();
    assert_eq!(node, paid_to, "the node that was paid is the node that signed");

    // An independent EIP-712 implementation recovers the same signer and digest.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("response.json");
    std::fs::write(&file, serde_json::to_vec(&resp).unwrap()).unwrap();
    let script = repo_root().join("scripts/verify_receipt.py");
    let out = std::process::Command::new(&python).arg(&script).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signer"].as_str().unwrap().parse::<Address>().unwrap(), node);
    assert_eq!(v["digest"].as_str().unwrap(), format!("{:#x}", signed.digest));

    // Free calls are receipted too, with the zero payer and price 0.
    let free = TestNode::start().await;
    let resp = free.client.infer(&digits_req()).await.unwrap();
    let r = resp.receipt.expect("a receipt");
    verify_receipt(&r).unwrap();
    assert_eq!((r.receipt.payer, r.receipt.price.as_str()), (Address::ZERO, "0"));
}

async fn get_json(url: &str) -> (reqwest::StatusCode, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status(), r.json().await.unwrap())
}

/// Receipts are sealed into node-signed batches; every proof verifies in Rust and with
/// OpenZeppelin's library, against a root the node signed.
#[tokio::test]
async fn sealed_receipts_prove_inclusion_with_openzeppelin() {
    let modules = std::env::var("VERINET_NODE_MODULES").unwrap_or_else(|_| {
        panic!("VERINET_NODE_MODULES is not set: run scripts/test.sh, which installs @openzeppelin/merkle-tree")
    });
    let n = TestNode::start_with(|c| {
        c.receipts.batch_max = 4;
        c.receipts.batch_interval_ms = 50;
    })
    .await;
    let url = n.node.url();
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(n.client.infer(&digits_req()).await.unwrap().request_id);
    }
    // Sealed within a few intervals; bounded wait.
    let mut proofs: Vec<InclusionProof> = Vec::new();
    for id in &ids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = get_json(&format!("{url}/v1/receipts/{id}/proof")).await;
            if status == reqwest::StatusCode::OK {
                proofs.push(serde_json::from_value(body).unwrap());
                break;
            }
            assert_eq!(body["error"]["code"], "receipt_pending", "{body}");
            assert!(std::time::Instant::now() < deadline, "receipt {id} never sealed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let batches: std::collections::BTreeSet<_> = proofs.iter().map(|p| p.batch.id.clone()).collect();
    assert!(batches.len() >= 2, "7 receipts at 4 per batch make at least 2 batches");
    for p in &proofs {
        assert!(merkle::verify(p.batch.root, &p.digest, &p.proof), "{}", p.request_id);
        // The node signed the root it published.
        let hash = batch_hash(p.batch.root, p.batch.size, p.batch.timestamp, p.batch.chain_id);
        let sig: alloy_primitives::Signature = p.batch.signature.parse().unwrap();
        assert_eq!(sig.recover_address_from_prehash(&hash).unwrap(), p.batch.node);
        let (_, r) = get_json(&format!("{url}/v1/receipts/{}", p.request_id)).await;
        assert_eq!(r["status"], "final");
        assert_eq!(r["receipt"]["digest"].as_str().unwrap(), format!("{:#x}", p.digest));
    }
    // Tampered proofs fail in Rust.
    let mut bad = proofs[0].clone();
    bad.digest = B256::repeat_byte(7);
    assert!(!merkle::verify(bad.batch.root, &bad.digest, &bad.proof));

    // OpenZeppelin's StandardMerkleTree.verify accepts every proof and rejects the tampered one.
    proofs.push(bad);
    let verdicts = oz_verify(&modules, &proofs);
    let (last, good) = verdicts.split_last().unwrap();
    assert!(good.iter().all(|v| v["verified"] == true && v["leaf_matches"] == true), "{verdicts:?}");
    assert_eq!(last["verified"], false);

    // Unknown ids are 404 not_found.
    let (status, body) = get_json(&format!("{url}/v1/receipts/nope/proof")).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")));
}

/// `scripts/oz_verify_proof.mjs` over `proofs`: one verdict each.
fn oz_verify(modules: &str, proofs: &[InclusionProof]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proofs.json");
    std::fs::write(&file, serde_json::to_vec(proofs).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg(repo_root().join("scripts/oz_verify_proof.mjs"))
        .arg(&file)
        .env("VERINET_NODE_MODULES", modules)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Retention: past the window a receipt's body goes (410 `receipt_pruned`, naming its batch)
/// and its proof stays, still verified by OpenZeppelin against the node-signed root, for the
/// digest the payer was given.
#[tokio::test]
async fn pruned_receipts_still_prove_inclusion_with_openzeppelin() {
    let modules = std::env::var("VERINET_NODE_MODULES").unwrap_or_else(|_| {
        panic!("VERINET_NODE_MODULES is not set: run scripts/test.sh, which installs @openzeppelin/merkle-tree")
    });
    let n = TestNode::start_with(|c| {
        c.receipts.batch_max = 4;
        c.receipts.batch_interval_ms = 50;
        c.receipts.retention_secs = 0;
    })
    .await;
    let url = n.node.url();
    let mut given = Vec::new();
    for _ in 0..7 {
        let r = n.client.infer(&digits_req()).await.unwrap();
        given.push((r.request_id.clone(), r.receipt.unwrap().digest));
    }
    let mut proofs: Vec<InclusionProof> = Vec::new();
    for (id, digest) in &given {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = get_json(&format!("{url}/v1/receipts/{id}")).await;
            if status.as_u16() == 410 {
                assert_eq!(body["error"]["code"], "receipt_pruned", "{body}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "receipt {id} never pruned: {status} {body}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (status, body) = get_json(&format!("{url}/v1/receipts/{id}/proof")).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let p: InclusionProof = serde_json::from_value(body).unwrap();
        assert_eq!(&p.digest, digest, "the proof is for the receipt the payer holds");
        assert!(merkle::verify(p.batch.root, &p.digest, &p.proof), "{id}");
        let hash = batch_hash(p.batch.root, p.batch.size, p.batch.timestamp, p.batch.chain_id);
        let sig: alloy_primitives::Signature = p.batch.signature.parse().unwrap();
        assert_eq!(sig.recover_address_from_prehash(&hash).unwrap(), p.batch.node);
        proofs.push(p);
    }
    let verdicts = oz_verify(&modules, &proofs);
    assert!(verdicts.iter().all(|v| v["verified"] == true && v["leaf_matches"] == true), "{verdicts:?}");
}

#[tokio::test]
async fn receipts_are_pending_until_sealed() {
    let n = TestNode::start_with(|c| c.receipts.batch_interval_ms = 600_000).await;
    let id = n.client.infer(&digits_req()).await.unwrap().request_id;
    let (status, body) = get_json(&format!("{}/v1/receipts/{id}", n.node.url())).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(body["status"], "pending");
    let (status, body) = get_json(&format!("{}/v1/receipts/{id}/proof", n.node.url())).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("receipt_pending")));
}
