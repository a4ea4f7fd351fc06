//! Inference over HTTP against onnxruntime reference outputs, and bad requests.

use alloy_signer_local::PrivateKeySigner;
use serde_json::json;
use verinet_client::ClientError;
use verinet_primitives::{
    Tensor, TensorMap,
    wire::{InferRequest, OutputEncoding},
};

use verinet_runtime::test_utils::{Tolerance, assert_outputs, parse_reference};

use crate::helpers::{TestNode, repo_root, signed, test_models_dir};

/// Digits is tiny and exact to a few ulps; the registry models get the usual float slack.
const DIGITS_TOL: Tolerance = Tolerance { abs: 1e-5, rel: 1e-5 };
const MODEL_TOL: Tolerance = Tolerance { abs: 1e-4, rel: 1e-4 };

fn req(model: &str, inputs: TensorMap) -> InferRequest {
    InferRequest::new(model, inputs)
}

#[tokio::test]
async fn bundled_digits_matches_onnxruntime_for_every_fixture() {
    let n = TestNode::start().await;
    let reference = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    assert!(reference.cases.len() >= 5);
    for case in &reference.cases {
        let resp = n.client.infer(&req("digits", case.inputs.clone())).await.unwrap();
        assert_eq!(resp.model.name, "digits");
        assert_eq!(resp.price, "0");
        assert!(resp.timings_ms.total >= resp.timings_ms.compute);
        assert_outputs("digits over http", &resp.tensors().unwrap(), &case.outputs, DIGITS_TOL);
    }
    // Same answer by version and by content id, and in b64 encoding.
    let case = &reference.cases[0];
    let info = n.client.model("digits").await.unwrap();
    assert_eq!(info.usage.calls, reference.cases.len() as u64, "every call is counted");
    for model in ["digits@1.0.0".to_string(), info.latest.sha256.to_string()] {
        let mut r = req(&model, case.inputs.clone());
        r.output_encoding = OutputEncoding::B64;
        let resp = n.client.infer(&r).await.unwrap();
        assert!(resp.outputs["label"].get("b64").is_some());
        assert_outputs(&model, &resp.tensors().unwrap(), &case.outputs, DIGITS_TOL);
    }
}

/// Publishes a registry-fetched model over HTTP and checks every reference case through the node.
async fn publish_and_match_onnxruntime(name: &str, first_input: &str) {
    let dir = test_models_dir().join(name);
    let n = TestNode::start().await;
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let v = n.client.publish_bytes(&signed(name, "1.0.0", &bytes, &PrivateKeySigner::random()), bytes).await.unwrap();
    assert!(v.io.inputs.iter().any(|s| s.name == first_input), "{:?}", v.io);
    for (i, case) in parse_reference(&dir.join("reference.json")).cases.into_iter().enumerate() {
        let resp = n.client.infer(&req(name, case.inputs.clone())).await.unwrap();
        assert_outputs(&format!("{name} case {i}"), &resp.tensors().unwrap(), &case.outputs, MODEL_TOL);
    }
}

#[tokio::test]
async fn minilm_transformer_published_and_served_matches_onnxruntime() {
    publish_and_match_onnxruntime("minilm", "input_ids").await;
}

#[tokio::test]
async fn magika_classifier_published_and_served_matches_onnxruntime() {
    publish_and_match_onnxruntime("magika", "bytes").await;
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_codes() {
    let n = TestNode::start_with(|c| c.server.max_infer_body_mib = 1).await;
    let pixels = |shape: Vec<usize>| {
        let len = shape.iter().product();
        [("pixels".to_string(), Tensor::from_f32(shape, &vec![1.0; len]).unwrap())].into()
    };
    let cases: Vec<(InferRequest, u16, &str)> = vec![
        (req("no-such-model", pixels(vec![1, 64])), 404, "not_found"),
        (req("digits@9.9.9", pixels(vec![1, 64])), 404, "not_found"),
        (req("Not A Name", pixels(vec![1, 64])), 400, "invalid_model_ref"),
        (req("sha256:1234", pixels(vec![1, 64])), 400, "invalid_model_ref"),
        (req("digits", pixels(vec![1, 63])), 422, "input_mismatch"),
        (req("digits", pixels(vec![64])), 422, "input_mismatch"),
        (req("digits", TensorMap::new()), 422, "input_mismatch"),
        (req("digits", [("image".to_string(), Tensor::from_f32(vec![1, 64], &[0.0; 64]).unwrap())].into()), 422, "input_mismatch"),
        (req("digits", [("pixels".to_string(), Tensor::from_i64(vec![1, 64], &[0; 64]).unwrap())].into()), 422, "input_mismatch"),
    ];
    for (r, status, code) in cases {
        match n.client.infer(&r).await {
            Err(ClientError::Api { status: s, code: c, .. }) => assert_eq!((s, c.as_str()), (status, code), "{}", r.model),
            other => panic!("{}: expected {status}, got {other:?}", r.model),
        }
    }
    let raw: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "invalid_json"),
        (json!({"model": "digits"}).to_string(), 400, "invalid_json"),
        (json!({"model": "digits", "inputs": {"pixels": {"dtype": "float32", "shape": [1, 64], "data": [1]}}}).to_string(), 400, "invalid_json"),
        (json!({"model": "digits", "inputs": {}, "surprise": 1}).to_string(), 400, "invalid_json"),
        (json!({"model": "digits", "inputs": {}, "verification": "sampled"}).to_string(), 422, "input_mismatch"),
        (json!({"model": "digits", "inputs": {}, "verification": "majority"}).to_string(), 400, "invalid_json"),
        (json!({"model": "digits", "inputs": {}, "verification": "sampled", "sample_rate": 1.5}).to_string(), 400, "invalid_parameter"),
        ("x".repeat(2 << 20), 413, "payload_too_large"),
    ];
    for (body, status, code) in raw {
        match n.client.infer_raw(body.clone()).await {
            Err(ClientError::Api { status: s, code: c, .. }) => assert_eq!((s, c.as_str()), (status, code), "{}", &body[..body.len().min(80)]),
            other => panic!("expected {status}, got {other:?}"),
        }
    }
    // Unknown routes and methods answer in the same error shape.
    let r = reqwest::get(format!("{}/v2/nothing", n.node.url())).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "not_found");
    let r = reqwest::Client::new().delete(format!("{}/v1/infer", n.node.url())).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // Rejected requests are not usage.
    assert_eq!(n.client.model("digits").await.unwrap().usage.calls, 0);
    assert_eq!(n.client.health().await.unwrap().status, "ok");
}

/// numpy's `tolist()` as it is: `{"pixels": [[...]]}` answers exactly as the explicit form,
/// the shape taken from the nesting and the dtype from the model; what cannot fit is a 4xx
/// naming the input.
#[tokio::test]
async fn bare_nested_lists_take_the_models_dtype_and_their_shape() {
    let n = TestNode::start().await;
    let reference = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    let case = &reference.cases[0];
    let pixels = case.inputs["pixels"].to_f64_vec();
    let explicit = n.client.infer(&req("digits", case.inputs.clone())).await.unwrap();
    // Read as int64 or float64 (whatever the values look like), then made float32.
    let nested: Vec<Vec<f64>> = vec![pixels.clone()];
    let bare = n.client.infer_raw(json!({"model": "digits", "inputs": {"pixels": nested}}).to_string()).await.unwrap();
    assert_eq!(bare.outputs, explicit.outputs);
    // The receipt binds the same canonical input: the typed tensor, not the JSON text.
    assert_eq!(bare.receipt.unwrap().receipt.input_hash, explicit.receipt.unwrap().receipt.input_hash);
    let halves: Vec<f64> = pixels.iter().map(|p| p + 0.5).collect();
    assert!(n.client.infer_raw(json!({"model": "digits", "inputs": {"pixels": [halves]}}).to_string()).await.is_ok());
    let cases: Vec<(serde_json::Value, u16, &str, &str)> = vec![
        (json!({"pixels": [[0, 1]]}), 422, "input_mismatch", "dim 1 is 2, expected 64"),
        (json!({"pixels": pixels}), 422, "input_mismatch", "rank 1, expected 2"),
        (json!({"pixels": [[true, 1]]}), 400, "invalid_json", "mixes booleans and numbers"),
        (json!({"pixels": [[1, [2]]]}), 400, "invalid_json", "not regular"),
        (json!({"pixels": [[1, "a"]]}), 400, "invalid_json", "a number, a boolean, null or a list"),
    ];
    for (inputs, status, code, says) in cases {
        match n.client.infer_raw(json!({"model": "digits", "inputs": inputs}).to_string()).await {
            Err(ClientError::Api { status: s, code: c, message, .. }) => {
                assert_eq!((s, c.as_str()), (status, code), "{inputs}: {message}");
                assert!(message.contains(says), "{inputs}: {message}");
            }
            other => panic!("{inputs}: expected {status}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn graceful_stop_finishes_and_restart_keeps_models() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = verinet_node::Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let node = verinet_node::Node::spawn(&config).await.unwrap();
    let client = verinet_client::Client::new(node.url());
    let key = PrivateKeySigner::random();
    let bytes = crate::helpers::digits_bytes();
    client.publish_bytes(&signed("kept", "1.0.0", &bytes, &key), bytes).await.unwrap();
    node.stop().await.unwrap();

    let node = verinet_node::Node::spawn(&config).await.unwrap();
    let client = verinet_client::Client::new(node.url());
    let info = client.model("kept").await.unwrap();
    assert_eq!(info.owner, key.address());
    let digits = client.list_models(&Default::default()).await.unwrap();
    assert_eq!(digits.models.len(), 2, "bundled model published once, not again on restart");
    node.stop().await.unwrap();
}

/// One model of the scikit-learn table (`fixtures/sklearn/make_sklearn.py` -> `index.json`).
#[derive(serde::Deserialize)]
struct SklearnModel {
    name: String,
    tolerance: SklearnTolerance,
}

#[derive(serde::Deserialize)]
struct SklearnTolerance {
    abs: f64,
    rel: f64,
}

/// Every model of the table published over HTTP to a node on `backend` and called with every
/// reference case: answers within tolerance of onnxruntime running the bytes as exported.
async fn sklearn_table_over_http(backend: &str) {
    let dir = test_models_dir().join("sklearn");
    let table: Vec<SklearnModel> = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap_or_else(|e| {
        panic!("{}: {e}; scripts/test.sh runs fixtures/sklearn/make_sklearn.py", dir.join("index.json").display())
    }))
    .unwrap();
    assert!(table.len() >= 12, "{} models in the table", table.len());
    let n = TestNode::start_with(|c| c.runtime.backend = backend.into()).await;
    assert_eq!(n.client.health().await.unwrap().backend, backend);
    let creator = PrivateKeySigner::random();
    for m in &table {
        let bytes = std::fs::read(dir.join(&m.name).join("model.onnx")).unwrap();
        let published = n.client.publish_bytes(&signed(&m.name, "1.0.0", &bytes, &creator), bytes).await;
        published.unwrap_or_else(|e| panic!("{backend}: publishing {}: {e}", m.name));
        let tol = Tolerance { abs: m.tolerance.abs, rel: m.tolerance.rel };
        let reference = parse_reference(&dir.join(&m.name).join("reference.json"));
        for (i, case) in reference.cases.into_iter().enumerate() {
            let resp = n.client.infer(&req(&m.name, case.inputs)).await;
            let resp = resp.unwrap_or_else(|e| panic!("{backend}: {} case {i}: {e}", m.name));
            assert_outputs(&format!("{backend}: {} case {i}", m.name), &resp.tensors().unwrap(), &case.outputs, tol);
        }
    }
}

#[tokio::test]
async fn scikit_learn_models_publish_and_answer_on_tract() {
    sklearn_table_over_http("tract").await;
}

#[tokio::test]
async fn scikit_learn_models_publish_and_answer_on_onnxruntime() {
    sklearn_table_over_http("onnxruntime").await;
}
