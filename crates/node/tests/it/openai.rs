//! The OpenAI-compatible routes on a real node with the real models (SmolLM2-135M GGUF and
//! all-MiniLM-L6-v2 from PyPI): shapes, receipts, determinism, streaming, cancellation, bad
//! input, and two remote workers giving the same tokens.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{Value, json};
use verinet_node::{Config, Node, Role, WorkerNode};
use verinet_primitives::{token_ids_hash, token_lists_hash};

use crate::helpers::{TestNode, repo_root, test_models_dir};

const CHAT: &str = "smollm2-135m-instruct";
const EMBED: &str = "all-minilm-l6-v2";

async fn llm_node() -> TestNode {
    TestNode::start_with(|c| c.bundled.language_models_dir = test_models_dir()).await
}

async fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{url}{path}")).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Checks the `verinet` proof of a completion: the receipt verifies, names this request and
/// model, and its hashes are those of the ids returned.
fn check_proof(proof: &Value) -> verinet_primitives::wire::SignedReceipt {
    let r: verinet_primitives::wire::SignedReceipt = serde_json::from_value(proof["receipt"].clone()).unwrap();
    assert_eq!(verinet_verify::verify_receipt(&r).unwrap(), r.receipt.node);
    assert_eq!(r.receipt.request_id, proof["request_id"].as_str().unwrap());
    assert_eq!(r.receipt.input_hash, token_ids_hash(&ids(&proof["prompt_ids"])));
    assert_eq!(r.receipt.output_hash, token_ids_hash(&ids(&proof["output_ids"])));
    let sha = proof["model"]["sha256"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    assert_eq!(format!("{:x}", r.receipt.model_hash), sha);
    let c = r.receipt.completion.clone().expect("a completion receipt");
    assert_eq!(c.seed, proof["seed"].as_u64().unwrap());
    assert_eq!(c.completion_tokens as usize, ids(&proof["output_ids"]).len());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_completions_and_embeddings_through_the_openai_routes() {
    let n = llm_node().await;
    let url = n.node.url();

    // The list: OpenAI's shape with the hub's fields inside.
    let list = n.client.get_json("/v1/models").await.unwrap();
    assert_eq!(list["object"], "list");
    let kind_of = |id: &str| list["data"].as_array().unwrap().iter().find(|m| m["id"] == id).map(|m| (m["object"].clone(), m["kind"].clone()));
    assert_eq!(kind_of(CHAT), Some((json!("model"), json!("llm"))));
    assert_eq!(kind_of(EMBED), Some((json!("model"), json!("embedding"))));
    assert_eq!(kind_of("digits").unwrap().1, json!("onnx"));

    // Greedy chat: the prompt is tokenized as llama.cpp tokenizes it (the fixture's ids), the
    // answer repeats exactly, and its receipt binds the ids.
    let fixture: Value = serde_json::from_slice(&std::fs::read(repo_root().join("fixtures/llm/smollm2_llamacpp.json")).unwrap()).unwrap();
    let case = &fixture["cases"][0];
    let req = json!({"model": CHAT, "messages": case["messages"], "max_tokens": 12, "temperature": 0});
    let (status, a) = post(&url, "/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    assert_eq!(ids(&a["verinet"]["prompt_ids"]), ids(&case["prompt_token_ids"]));
    assert_eq!(a["usage"]["prompt_tokens"], case["prompt_token_ids"].as_array().unwrap().len());
    assert_eq!(a["usage"]["completion_tokens"], 12);
    assert_eq!(a["usage"]["total_tokens"], a["usage"]["prompt_tokens"].as_u64().unwrap() + 12);
    let r1 = check_proof(&a["verinet"]);
    assert_eq!(r1.receipt.completion.as_ref().unwrap().temperature, "0");
    let (_, b) = post(&url, "/v1/chat/completions", &req).await;
    assert_eq!(b["verinet"]["output_ids"], a["verinet"]["output_ids"]);
    assert_eq!(b["choices"][0]["message"]["content"], a["choices"][0]["message"]["content"]);
    assert_eq!(check_proof(&b["verinet"]).receipt.output_hash, r1.receipt.output_hash);

    // Seeded sampling repeats too; the seed the node picks when none is given is reported and
    // reproduces the answer.
    let sampled = json!({"model": CHAT, "messages": [{"role": "user", "content": "Write a word."}], "max_tokens": 10, "temperature": 0.9, "seed": 7});
    let (_, s1) = post(&url, "/v1/chat/completions", &sampled).await;
    let (_, s2) = post(&url, "/v1/chat/completions", &sampled).await;
    assert_eq!(s1["verinet"]["output_ids"], s2["verinet"]["output_ids"]);
    assert_eq!(s1["verinet"]["seed"], 7);
    let mut unseeded = sampled.clone();
    unseeded.as_object_mut().unwrap().remove("seed");
    let (_, u) = post(&url, "/v1/chat/completions", &unseeded).await;
    unseeded["seed"] = u["verinet"]["seed"].clone();
    let (_, u2) = post(&url, "/v1/chat/completions", &unseeded).await;
    assert_eq!(u["verinet"]["output_ids"], u2["verinet"]["output_ids"]);

    // Text completions; a stop string ends the text before it.
    let (status, t) = post(&url, "/v1/completions", &json!({"model": CHAT, "prompt": "1, 2, 3, 4,", "max_tokens": 12, "temperature": 0, "stop": [" 7"]})).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["object"], "text_completion");
    let text = t["choices"][0]["text"].as_str().unwrap();
    assert!(!text.contains(" 7"), "{text:?}");
    if t["choices"][0]["finish_reason"] == "stop" {
        assert!(text.contains(" 6"), "{text:?}");
    }
    check_proof(&t["verinet"]);

    // Embeddings match sentence-transformers within 1e-4 cosine; base64 is the same floats.
    let reference: Value = serde_json::from_slice(&std::fs::read(repo_root().join("fixtures/embeddings/minilm_reference.json")).unwrap()).unwrap();
    let texts: Vec<&Value> = reference["texts"].as_array().unwrap().iter().filter(|t| t["truncated"] == false).take(3).collect();
    let input: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let (status, e) = post(&url, "/v1/embeddings", &json!({"model": EMBED, "input": input})).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["object"], "list");
    let want_tokens: u64 = texts.iter().map(|t| t["token_count"].as_u64().unwrap()).sum();
    assert_eq!(e["usage"]["prompt_tokens"], want_tokens);
    for (i, t) in texts.iter().enumerate() {
        let got: Vec<f32> = e["data"][i]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let want: Vec<f32> = t["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got.len(), 384);
        let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum::<f32>()
            / (got.iter().map(|a| a * a).sum::<f32>().sqrt() * want.iter().map(|b| b * b).sum::<f32>().sqrt());
        assert!((1.0 - cos).abs() < 1e-4, "{}: cosine {cos}", t["name"]);
    }
    let r: verinet_primitives::wire::SignedReceipt = serde_json::from_value(e["verinet"]["receipt"].clone()).unwrap();
    assert_eq!(verinet_verify::verify_receipt(&r).unwrap(), r.receipt.node);
    let token_ids: Vec<Vec<u32>> = texts.iter().map(|t| ids(&t["token_ids"])).collect();
    assert_eq!(r.receipt.input_hash, token_lists_hash(&token_ids));
    // The same batch (vectors of a padded batch differ from single ones in the last bits).
    let (_, e64) = post(&url, "/v1/embeddings", &json!({"model": EMBED, "input": input, "encoding_format": "base64"})).await;
    let raw = base64::engine::general_purpose::STANDARD.decode(e64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let plain: Vec<f32> = e["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(floats, plain);

    // The flywheel counts exactly the tokens in and out of the served calls (a sampled answer
    // may end before max_tokens, so the sums come from the answers' usage).
    let completions = [&a, &b, &s1, &s2, &u, &u2, &t];
    let used = |key: &str| completions.iter().map(|c| c["usage"][key].as_u64().unwrap()).sum::<u64>();
    let f = n.client.get_json("/v1/flywheel?window=3600").await.unwrap();
    assert_eq!(f["models"]["completion_tokens"].as_u64(), Some(used("completion_tokens")), "{}", f["models"]);
    assert_eq!(f["models"]["prompt_tokens"].as_u64(), Some(used("prompt_tokens") + want_tokens * 2), "{}", f["models"]);
    n.node.stop().await.unwrap();
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let body = resp.text().await.unwrap();
    body.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_end_with_usage_and_done_and_a_client_that_leaves_stops_the_generation() {
    let n = llm_node().await;
    let url = n.node.url();
    let http = reqwest::Client::new();
    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 20, "temperature": 0});
    let (_, whole) = post(&url, "/v1/chat/completions", &body).await;

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = http.post(format!("{url}/v1/chat/completions")).json(&streamed).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    let finish: Vec<&Value> = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
    assert_eq!(finish.len(), 1);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    assert_eq!(check_proof(&usage["verinet"]).receipt.output_hash, check_proof(&whole["verinet"]).receipt.output_hash);

    // A client that leaves after the first chunks: the generation stops at once (the worker
    // has nothing in flight well before 1,000 tokens could have been generated).
    let long = json!({"model": CHAT, "prompt": "Count: 1, 2, 3,", "max_tokens": 1000, "temperature": 0, "stream": true});
    let resp = http.post(format!("{url}/v1/completions")).json(&long).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    let inflight = || async {
        let v = n.client.get_json("/v1/nodes").await.unwrap();
        v["nodes"].as_array().unwrap().iter().map(|e| e["inflight"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(inflight().await, 1);
    drop(stream);
    let left = Instant::now();
    while inflight().await > 0 {
        assert!(left.elapsed() < Duration::from_secs(2), "the generation still runs after the client left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_language_requests_get_a_4xx_with_a_code() {
    let n = llm_node().await;
    let url = n.node.url();
    let user = |t: &str| json!([{"role": "user", "content": t}]);
    let long = "word ".repeat(3000);
    let cases = [
        ("/v1/chat/completions", json!({"model": "no-such-model", "messages": user("hi")}), 404, "not_found"),
        ("/v1/chat/completions", json!({"model": "digits", "messages": user("hi")}), 400, "wrong_model_kind"),
        ("/v1/embeddings", json!({"model": CHAT, "input": "hi"}), 400, "wrong_model_kind"),
        ("/v1/chat/completions", json!({"model": EMBED, "messages": user("hi")}), 400, "wrong_model_kind"),
        ("/v1/infer", json!({"model": CHAT, "inputs": {}}), 400, "wrong_model_kind"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": []}), 400, "empty_messages"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": [{"role": "wizard", "content": "hi"}]}), 400, "invalid_role"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), 400, "unsupported_content"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": user(&long)}), 400, "context_length_exceeded"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": user("hi"), "max_tokens": 100_000}), 400, "max_tokens_too_large"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": user("hi"), "n": 2}), 400, "unsupported_parameter"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": user("hi"), "temperature": 3}), 400, "invalid_parameter"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": "hi"}), 400, "invalid_json"),
        ("/v1/completions", json!({"model": CHAT, "prompt": ""}), 400, "empty_prompt"),
        ("/v1/embeddings", json!({"model": EMBED, "input": []}), 400, "empty_input"),
        ("/v1/embeddings", json!({"model": EMBED, "input": vec!["a"; 3000]}), 400, "too_many_inputs"),
        ("/v1/embeddings", json!({"model": EMBED, "input": long}), 400, "context_length_exceeded"),
        ("/v1/embeddings", json!({"model": EMBED, "input": "hi", "encoding_format": "hex"}), 400, "invalid_parameter"),
        ("/v1/chat/completions", json!({"model": CHAT, "messages": user("hi"), "verification": "sampled", "sample_rate": 1.5}), 400, "invalid_parameter"),
    ];
    for (path, body, status, code) in cases {
        let (got, v) = post(&url, path, &body).await;
        assert_eq!((got, v["error"]["code"].as_str().unwrap_or_default()), (status, code), "{path} {body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap_or_default().is_empty());
        assert!(!v["error"]["type"].as_str().unwrap_or_default().is_empty(), "OpenAI's error.type: {v}");
    }
    // Not UTF-8.
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Still serving.
    let (status, _) = post(&url, "/v1/completions", &json!({"model": CHAT, "prompt": "Hello", "max_tokens": 2})).await;
    assert_eq!(status, 200);
    n.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_remote_workers_give_the_same_tokens_for_the_same_request() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut c = Config::default();
    c.storage.data_dir = dirs[0].path().to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.network.role = Role::Gateway;
    c.bundled.language_models_dir = test_models_dir();
    let gw = Node::spawn(&c).await.unwrap();
    let mut workers = Vec::new();
    for d in &dirs[1..] {
        let mut w = Config::default();
        w.storage.data_dir = d.path().to_path_buf();
        w.server.listen = "127.0.0.1:0".parse().unwrap();
        w.network.role = Role::Worker;
        w.network.gateways = vec![gw.url()];
        w.network.heartbeat_ms = 100;
        workers.push(WorkerNode::spawn(&w).await.unwrap());
    }
    let client = verinet_client::Client::new(gw.url());
    let started = Instant::now();
    while client.get_json("/v1/nodes").await.unwrap()["nodes"].as_array().unwrap().iter().filter(|n| n["active"] == true).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "workers did not join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for body in [
        json!({"model": CHAT, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 10, "temperature": 0}),
        json!({"model": CHAT, "prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.8, "seed": 1234}),
    ] {
        let path = if body.get("messages").is_some() { "/v1/chat/completions" } else { "/v1/completions" };
        let mut by_node = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let (status, v) = post(&gw.url(), path, &body).await;
            assert_eq!(status, 200, "{v}");
            let r = check_proof(&v["verinet"]);
            by_node.insert(r.receipt.node, (v["verinet"]["output_ids"].clone(), r.receipt.output_hash));
            if by_node.len() == 2 {
                break;
            }
        }
        assert_eq!(by_node.len(), 2, "both workers served");
        let answers: Vec<_> = by_node.values().collect();
        assert_eq!(answers[0], answers[1], "same ids and output hash on both workers");
    }
    // Embeddings on a remote worker: a tensor receipt it signed.
    let (status, e) = post(&gw.url(), "/v1/embeddings", &json!({"model": EMBED, "input": ["a", "b"]})).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["data"].as_array().unwrap().len(), 2);
    for w in workers {
        w.stop().await.unwrap();
    }
    gw.stop().await.unwrap();
}

/// The official `openai` Python client, unchanged, against a node: models, chat (streamed and
/// not, with usage), text completions, embeddings, and errors as its exception classes; and
/// eth_account recovers the completion receipt's signer from the `verinet` field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_openai_python_client_works_unchanged() {
    let python = std::env::var("VERINET_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("VERINET_TEST_PYTHON is not set: run scripts/test.sh, which installs the openai client into target/pyenv")
    });
    let n = llm_node().await;
    let (script, url) = (repo_root().join("scripts/openai_client.py"), n.node.url());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).args([url.as_str(), CHAT, EMBED]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "openai_client.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models: Vec<&str> = v["models"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(models.contains(&CHAT) && models.contains(&EMBED), "{models:?}");

    let chat = &v["chat"];
    assert!(!chat["content"].as_str().unwrap().is_empty());
    assert!(["stop", "length"].contains(&chat["finish_reason"].as_str().unwrap()));
    let u = &chat["usage"];
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));
    assert_eq!(chat["proof"], json!({"input_hash_ok": true, "output_hash_ok": true, "signer_ok": true}));

    let stream = &v["stream"];
    assert_eq!(stream["content"], chat["content"], "streamed and whole answers agree at temperature 0");
    assert!(stream["chunks"].as_u64().unwrap() >= 2, "{stream}");
    assert_eq!(stream["usage"], chat["usage"]);
    assert_eq!(stream["finish_reason"], chat["finish_reason"]);
    assert_eq!(stream["proof"], chat["proof"]);

    assert!(!v["completion"]["text"].as_str().unwrap().is_empty());
    assert!(v["completion"]["usage"]["completion_tokens"].as_u64().unwrap() <= 8);

    let e = &v["embeddings"];
    assert_eq!(e["dims"], json!([384, 384, 384]));
    assert_eq!(e["float_dims"], 384);
    for norm in e["norms"].as_array().unwrap() {
        assert!((norm.as_f64().unwrap() - 1.0).abs() < 1e-4, "unit vectors: {norm}");
    }
    assert!(e["cos_cat_dog"].as_f64().unwrap() > e["cos_cat_earnings"].as_f64().unwrap());
    assert!(e["prompt_tokens"].as_u64().unwrap() > 3);

    assert_eq!(v["errors"]["unknown_model"], json!({"class": "NotFoundError", "status": 404, "code": "not_found"}));
    assert_eq!(v["errors"]["too_long"], json!({"class": "BadRequestError", "status": 400, "code": "context_length_exceeded"}));
    n.node.stop().await.unwrap();
}
