//! Receipts: every result carries the node's EIP-712 receipt, bound to the model bytes, the
//! inputs, the outputs returned and the payment; eth_account recovers the same signer.

use alloy_primitives::B256;
use serde_json::Value;
use verinet_primitives::{Address, TensorMap, tensors_hash, wire::InferRequest};
use verinet_runtime::test_utils::parse_reference;
use verinet_verify::verify_receipt;

use crate::helpers::{TestNode, repo_root};

fn digits_req() -> InferRequest {
    let inputs: TensorMap = parse_reference(&repo_root().join("fixtures/digits/reference.json")).cases[0].inputs.clone();
    InferRequest { model: "digits".into(), inputs, app: None, verification: Default::default(), output_encoding: Default::default() }
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
