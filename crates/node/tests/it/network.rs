//! Model distribution: bytes are fetched by content id from the hub or any peer, and bytes that
//! do not hash to the id asked for are refused.

use axum::{Router, routing::get};
use verinet_client::{Client, ClientError};
use verinet_primitives::ModelId;

use crate::helpers::{TestNode, bundled_digits_bytes as digits_bytes};

#[tokio::test]
async fn models_are_fetched_by_sha256_and_wrong_bytes_are_refused() {
    // From the hub: the bundled model's bytes, verified.
    let n = TestNode::start().await;
    let id = n.client.model("digits").await.unwrap().latest.sha256;
    let bytes = n.client.fetch_model(&id).await.unwrap();
    assert_eq!(ModelId::of_bytes(&bytes), id);
    assert_eq!(bytes.as_ref(), digits_bytes().as_slice());

    // From a peer that serves other bytes under that id (tampered, truncated or just wrong).
    for served in [b"not an onnx model".to_vec(), digits_bytes()[..1000].to_vec(), {
        let mut b = digits_bytes();
        b[500] ^= 1;
        b
    }] {
        let app = Router::new().route("/v1/blobs/{sha}", get(move || async move { served.clone() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        match Client::new(peer).fetch_model(&id).await {
            Err(ClientError::HashMismatch { expected, got }) => {
                assert_eq!(expected, id.to_string());
                assert_ne!(got, expected);
            }
            other => panic!("a wrong blob must be refused, got {other:?}"),
        }
        server.abort();
    }
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use axum::http::StatusCode;
use verinet_network::{
    RemoteWorker, Worker, WorkerConfig, auth,
    wire::{HEARTBEAT_PATH, Registration, RUN_PATH, RunRequest, STAKE_PATH, StakeRequest},
};
use verinet_node::{Config, Node, Role, RunningNode, WorkerNode};
use verinet_primitives::{Address, TensorMap, tensors_hash, wire::InferRequest};
use verinet_runtime::{Runtime, RuntimeConfig, TractBackend};
use verinet_runtime::test_utils::{Tolerance, assert_outputs, parse_reference};
use verinet_verify::{ExecError, Execute, Job, LoadBytes, NodeRole, Terms};

use crate::helpers::repo_root;

const HEARTBEAT_MS: u64 = 100;
const WINDOW_MS: u64 = 500;

/// A gateway-only node's config (no in-process executors).
fn gateway_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.network.role = Role::Gateway;
    c.network.heartbeat_timeout_ms = WINDOW_MS;
    c
}

async fn gateway(dir: &std::path::Path) -> RunningNode {
    Node::spawn(&gateway_config(dir)).await.unwrap()
}

/// A worker's or validator's config, joining `gateway`.
fn worker_config(dir: &std::path::Path, role: Role, gateway: &str) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.network.role = role;
    c.network.gateways = vec![gateway.to_owned()];
    c.network.heartbeat_ms = HEARTBEAT_MS;
    c
}

async fn worker(dir: &std::path::Path, role: Role, gateway: &str) -> RunningNode {
    WorkerNode::spawn(&worker_config(dir, role, gateway)).await.unwrap()
}

/// The gateway's `/v1/nodes` entry for the node listening at `url`, once it is there.
async fn entry(client: &Client, url: &str) -> serde_json::Value {
    let v = client.get_json("/v1/nodes").await.unwrap();
    v["nodes"].as_array().unwrap().iter().find(|n| n["endpoint"] == url).cloned().unwrap_or_default()
}

async fn wait_active(client: &Client, url: &str, active: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let n = entry(client, url).await;
        if (n["active"] == true) == active {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{url} not active={active} after {within:?}: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn digits_request() -> (InferRequest, TensorMap) {
    let reference = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    let case = &reference.cases[0];
    let req = InferRequest::new("digits", case.inputs.clone());
    (req, case.outputs.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_workers_serve_sign_their_receipts_and_leave_routing_when_silent() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let gw = gateway(dirs[0].path()).await;
    let client = Client::new(gw.url());
    let (req, want) = digits_request();

    // No executor at all: a clear 503, nothing charged.
    match client.infer(&req).await {
        Err(ClientError::Api { status: 503, code, .. }) => assert_eq!(code, "no_workers"),
        other => panic!("expected no_workers, got {other:?}"),
    }

    let w1 = worker(dirs[1].path(), Role::Worker, &gw.url()).await;
    let w2 = worker(dirs[2].path(), Role::Worker, &gw.url()).await;
    for w in [&w1, &w2] {
        wait_active(&client, &w.url(), true, Duration::from_secs(10)).await;
        // Staked from the devnet faucet before joining.
        assert_ne!(entry(&client, &w.url()).await["stake"], "0");
    }
    let addr = |n: serde_json::Value| n["address"].as_str().unwrap().parse::<Address>().unwrap();
    let (a1, a2) = (addr(entry(&client, &w1.url()).await), addr(entry(&client, &w2.url()).await));

    // Served remotely, matching onnxruntime, with a receipt the worker signed.
    for _ in 0..6 {
        let resp = client.infer(&req).await.unwrap();
        assert_outputs("remote worker", &resp.tensors().unwrap(), &want, Tolerance { abs: 1e-5, rel: 1e-5 });
        let r = resp.receipt.clone().unwrap();
        assert_eq!(verinet_verify::verify_receipt(&r).unwrap(), r.receipt.node);
        assert!([a1, a2].contains(&r.receipt.node), "signed by {}", r.receipt.node);
        assert_eq!(r.receipt.output_hash, tensors_hash(&resp.tensors().unwrap()));
    }
    // The workers fetched the model by sha256 and say so in their next heartbeat (warm caches
    // are preferred).
    let id = client.model("digits").await.unwrap().latest.sha256.to_string();
    let started = Instant::now();
    loop {
        let mut held = Vec::new();
        for w in [&w1, &w2] {
            held.extend(entry(&client, &w.url()).await["models"].as_array().unwrap().clone());
        }
        if !held.is_empty() {
            assert!(held.iter().all(|m| m.as_str() == Some(id.as_str())), "{held:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no worker reports holding the model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A worker that stops heartbeating (stopped cleanly: no request fails to reveal it) leaves
    // routing within the heartbeat window; the other one serves everything.
    let w1_url = w1.url();
    w1.stop().await.unwrap();
    let gone = wait_active(&client, &w1_url, false, Duration::from_millis(WINDOW_MS + 2_000)).await;
    assert!(gone <= Duration::from_millis(WINDOW_MS + 2_000));
    for _ in 0..4 {
        let resp = client.infer(&req).await.unwrap();
        assert_eq!(resp.receipt.unwrap().receipt.node, a2);
    }
    w2.stop().await.unwrap();
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_messages_must_be_signed_and_fresh() {
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gw = gateway(d0.path()).await;
    let http = reqwest::Client::new();
    let key = PrivateKeySigner::random();
    let reg = Registration {
        address: key.address(),
        role: NodeRole::Worker,
        endpoint: "http://127.0.0.1:9".into(),
        backends: vec!["tract".into()],
        capacity: 2,
        load: 0,
        models: Default::default(),
    };
    let post = |path: &'static str, body: Vec<u8>, headers: axum::http::HeaderMap| {
        let http = http.clone();
        let url = format!("{}{path}", gw.url());
        async move {
            let r = http.post(url).headers(headers).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (status, v["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    let body = serde_json::to_vec(&reg).unwrap();
    // Unsigned; signed by someone else; signed for another path; stale.
    assert_eq!(post(HEARTBEAT_PATH, body.clone(), Default::default()).await, (StatusCode::UNAUTHORIZED, "unauthenticated".into()));
    let other = PrivateKeySigner::random();
    let by_other = auth::sign(&other, "POST", HEARTBEAT_PATH, &body);
    assert_eq!(post(HEARTBEAT_PATH, body.clone(), by_other).await, (StatusCode::UNAUTHORIZED, "unauthenticated".into()));
    let wrong_path = auth::sign(&key, "POST", STAKE_PATH, &body);
    assert_eq!(post(HEARTBEAT_PATH, body.clone(), wrong_path).await, (StatusCode::UNAUTHORIZED, "unauthenticated".into()));
    let stale = auth::sign_at(&key, "POST", HEARTBEAT_PATH, &body, 1_000);
    assert_eq!(post(HEARTBEAT_PATH, body.clone(), stale).await, (StatusCode::UNAUTHORIZED, "unauthenticated".into()));
    // A bad endpoint; a malformed body.
    let bad = serde_json::to_vec(&Registration { endpoint: "ftp://x".into(), ..reg.clone() }).unwrap();
    assert_eq!(post(HEARTBEAT_PATH, bad.clone(), auth::sign(&key, "POST", HEARTBEAT_PATH, &bad)).await.0, StatusCode::BAD_REQUEST);
    let junk = b"{\"address\":1}".to_vec();
    assert_eq!(post(HEARTBEAT_PATH, junk.clone(), auth::sign(&key, "POST", HEARTBEAT_PATH, &junk)).await.0, StatusCode::BAD_REQUEST);
    // Properly signed: registered, and the answer is signed by the gateway.
    let r = http
        .post(format!("{}{HEARTBEAT_PATH}", gw.url()))
        .headers(auth::sign(&key, "POST", HEARTBEAT_PATH, &body))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let gw_addr = auth::verify(&headers, auth::RESPONSE, HEARTBEAT_PATH, &bytes, 30_000).unwrap();
    let ack: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(ack["gateway"].as_str().unwrap().parse::<Address>().unwrap(), gw_addr);
    assert_eq!(ack["joined"], true);
    assert_eq!(ack["active"], false, "registered, but no work without stake");
    // Re-registering the same key as a validator is a conflict.
    let as_validator = serde_json::to_vec(&Registration { role: NodeRole::Validator, ..reg.clone() }).unwrap();
    let h = auth::sign(&key, "POST", HEARTBEAT_PATH, &as_validator);
    assert_eq!(post(HEARTBEAT_PATH, as_validator, h).await, (StatusCode::CONFLICT, "node_conflict".into()));

    // Staking: funds needed, a positive amount, and a signed request works once.
    let client = Client::new(gw.url());
    client.faucet(key.address(), Some(1_000)).await.unwrap();
    let stake = |amount: &str, nonce: &str| serde_json::to_vec(&StakeRequest { address: key.address(), amount: amount.into(), nonce: nonce.into() }).unwrap();
    let s = stake("0", "a");
    assert_eq!(post(STAKE_PATH, s.clone(), auth::sign(&key, "POST", STAKE_PATH, &s)).await, (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount".into()));
    let s = stake("5000", "b");
    assert_eq!(post(STAKE_PATH, s.clone(), auth::sign(&key, "POST", STAKE_PATH, &s)).await, (StatusCode::PAYMENT_REQUIRED, "insufficient_funds".into()));
    let s = stake("400", "c");
    let signed = auth::sign(&key, "POST", STAKE_PATH, &s);
    assert_eq!(post(STAKE_PATH, s.clone(), signed.clone()).await.0, StatusCode::OK);
    assert_eq!(post(STAKE_PATH, s.clone(), signed).await, (StatusCode::CONFLICT, "nonce_used".into()));
    assert_eq!(post(STAKE_PATH, s.clone(), auth::sign(&other, "POST", STAKE_PATH, &s)).await.0, StatusCode::UNAUTHORIZED);
    let account = client.account(key.address()).await.unwrap();
    assert_eq!((account.stake.as_str(), account.balance.as_str()), ("400", "600"), "staked once");

    // The worker side: jobs only from gateways it joined, and only consistent ones.
    let w = worker(d1.path(), Role::Worker, &gw.url()).await;
    wait_active(&client, &w.url(), true, Duration::from_secs(10)).await;
    let (req, _) = digits_request();
    let id = client.model("digits").await.unwrap().latest.sha256;
    let job = RunRequest {
        request_id: "r1".into(),
        model: id,
        input_hash: tensors_hash(&req.inputs),
        inputs: req.inputs.clone(),
        mode: "none".into(),
        price: "0".into(),
        payer: Address::ZERO,
        chain_id: 1,
    };
    let me: Address = entry(&client, &w.url()).await["address"].as_str().unwrap().parse().unwrap();
    let send = |body: Vec<u8>, headers: axum::http::HeaderMap| {
        let (http, url) = (http.clone(), format!("{}{RUN_PATH}", w.url()));
        async move {
            let r = http.post(url).headers(headers).header("content-type", "application/json").body(body).send().await.unwrap();
            let s = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (s, v["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    let run = |job: &RunRequest, key: &PrivateKeySigner| {
        let body = serde_json::to_vec(job).unwrap();
        let headers = auth::sign_to(key, "POST", RUN_PATH, me, &body);
        send(body, headers)
    };
    assert_eq!(run(&job, &other).await, (StatusCode::FORBIDDEN, "untrusted_gateway".into()));
    let gw_key: PrivateKeySigner = std::fs::read_to_string(d0.path().join("node.key")).unwrap().trim().parse().unwrap();
    assert_eq!(run(&job, &gw_key).await.0, StatusCode::OK);
    let lying = RunRequest { input_hash: Default::default(), ..job.clone() };
    assert_eq!(run(&lying, &gw_key).await, (StatusCode::BAD_REQUEST, "invalid_job".into()));
    // A job runs once: the same signed job again is refused within the skew window.
    let body = serde_json::to_vec(&RunRequest { request_id: "r2".into(), ..job.clone() }).unwrap();
    let signed = auth::sign_to(&gw_key, "POST", RUN_PATH, me, &body);
    assert_eq!(send(body.clone(), signed.clone()).await.0, StatusCode::OK);
    assert_eq!(send(body.clone(), signed).await, (StatusCode::CONFLICT, "replayed_job".into()));
    // A job names its worker: one signed for another worker (relayed), or for none, is refused.
    let elsewhere = auth::sign_to(&gw_key, "POST", RUN_PATH, PrivateKeySigner::random().address(), &body);
    assert_eq!(send(body.clone(), elsewhere).await, (StatusCode::FORBIDDEN, "wrong_worker".into()));
    let mut relabelled = auth::sign_to(&gw_key, "POST", RUN_PATH, PrivateKeySigner::random().address(), &body);
    relabelled.insert(auth::TO, me.to_checksum(None).parse().unwrap());
    assert_eq!(send(body.clone(), relabelled).await, (StatusCode::UNAUTHORIZED, "unauthenticated".into()));
    assert_eq!(send(body.clone(), auth::sign(&gw_key, "POST", RUN_PATH, &body)).await, (StatusCode::UNAUTHORIZED, "unauthenticated".into()));
    w.stop().await.unwrap();
    gw.stop().await.unwrap();
}

fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_refuses_model_bytes_that_do_not_match_their_sha256() {
    let bytes = digits_bytes();
    let id = ModelId::of_bytes(&bytes);
    let mut tampered = bytes.clone();
    tampered[500] ^= 1;
    let (bad_hub, bad) = serve(Router::new().route("/v1/blobs/{sha}", get(move || async move { tampered.clone() })));
    let good_bytes = bytes.clone();
    let (good_hub, good) = serve(Router::new().route("/v1/blobs/{sha}", get(move || async move { good_bytes.clone() })));

    let gateway_key = Arc::new(PrivateKeySigner::random());
    let (req, want) = digits_request();
    let terms = Terms { request_id: "r".into(), input_hash: tensors_hash(&req.inputs), mode: "none".into(), price: 0, payer: Address::ZERO, chain_id: 1 };
    let unused: LoadBytes = Arc::new(|_| Box::pin(async { Err(verinet_runtime::RuntimeError::Load("remote workers fetch their own".into())) }));
    let job = || Job { model: id, inputs: req.inputs.clone(), terms: terms.clone(), load: unused.clone() };

    // A worker that fetched from the good hub is itself a peer for the next one.
    let mut peer: Option<(String, tokio::task::JoinHandle<()>)> = None;
    let mut caches = Vec::new();
    for (hubs, ok) in [(vec![bad_hub.clone()], false), (vec![bad_hub.clone(), good_hub.clone()], true), (vec![], true)] {
        let hubs = match &peer {
            Some((url, _)) if hubs.is_empty() => vec![bad_hub.clone(), url.clone()],
            _ => hubs,
        };
        let cache = tempfile::tempdir().unwrap();
        let key = Arc::new(PrivateKeySigner::random());
        let runtime = Arc::new(Runtime::new(Arc::new(TractBackend::new()), RuntimeConfig::default()));
        let config = WorkerConfig { role: NodeRole::Worker, hubs, cache_dir: cache.path().to_path_buf(), skew_ms: 30_000, capacity: 1, max_body: 1 << 20 };
        let w = Worker::new(key.clone(), runtime, Arc::new(verinet_llm::LlmHost::new(Default::default(), 1)), config).unwrap();
        w.trust(gateway_key.address());
        let (url, server) = serve(w.router());
        let remote = RemoteWorker::new(key.address(), url, "tract".into(), gateway_key.clone(), reqwest::Client::new(), 30_000);
        let cached = cache.path().join(id.hex());
        match remote.run(job()).await {
            Err(ExecError::Unavailable(why)) if !ok => {
                assert!(why.contains("model_unavailable") && why.contains("refused"), "{why}");
                assert!(!cached.exists(), "refused bytes must not be cached");
            }
            Ok(ran) if ok => {
                // The bad hub was refused, the good one used; the bytes are cached as served.
                assert_outputs("worker", &ran.out.outputs, &want, Tolerance { abs: 1e-5, rel: 1e-5 });
                assert_eq!(std::fs::read(&cached).unwrap(), bytes);
            }
            other => panic!("hubs ok={ok}: unexpected {:?}", other.map(|r| r.receipt)),
        }
        // Kept serving (with its cache) as the peer for the next round.
        caches.push(cache);
        if let Some((_, old)) = peer.replace((remote.endpoint().unwrap(), server)) {
            old.abort();
        }
    }
    if let Some((url, server)) = peer {
        // Peers serve only what they hold.
        let missing = ModelId::of_bytes(b"something else");
        assert!(matches!(Client::new(url).fetch_model(&missing).await, Err(ClientError::Api { status: 404, .. })));
        server.abort();
    }
    bad.abort();
    good.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_worker_still_in_routing_is_replaced_and_never_costs_a_request() {
    use verinet_primitives::wire::VerificationMode;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // A window long enough that only failing to answer takes the dead worker out of routing.
    let mut c = gateway_config(dirs[0].path());
    c.network.heartbeat_timeout_ms = 120_000;
    c.verification.quorum_k = 2;
    let gw = Node::spawn(&c).await.unwrap();
    let client = Client::new(gw.url());
    let (req, want) = digits_request();
    for mode in [VerificationMode::None, VerificationMode::Quorum] {
        let mut workers = Vec::new();
        for d in &dirs[1..] {
            let _ = std::fs::remove_dir_all(d.path().join("models"));
            workers.push(worker(d.path(), Role::Worker, &gw.url()).await);
        }
        for w in &workers {
            wait_active(&client, &w.url(), true, Duration::from_secs(10)).await;
        }
        let dead = workers.remove(0);
        let dead_url = dead.url();
        dead.stop().await.unwrap();
        // Routing still counts it live; requests go on until one is routed to it.
        let req = InferRequest { verification: mode, ..req.clone() };
        let mut hit = false;
        for _ in 0..40 {
            let resp = client.infer(&req).await.unwrap_or_else(|e| panic!("{mode:?}: a dead worker cost a request: {e}"));
            assert_outputs("after failover", &resp.tensors().unwrap(), &want, Tolerance { abs: 1e-5, rel: 1e-5 });
            if mode == VerificationMode::Quorum {
                assert_eq!(resp.check.unwrap().checked_by.len(), 2, "a full quorum voted");
            }
            if entry(&client, &dead_url).await["live"] == false {
                hit = true;
                break;
            }
        }
        assert!(hit, "{mode:?}: the dead worker was never routed to in 40 requests");
        for w in workers {
            w.stop().await.unwrap();
        }
    }
    gw.stop().await.unwrap();
}

/// Reads a chat stream's text events until `n` of them (all, when `n` is `usize::MAX`):
/// the request id, the text, and the token count the last one stated (its SSE `id:`).
async fn read_events(resp: &mut reqwest::Response, n: usize) -> (String, String, u64) {
    let (mut buf, mut request_id, mut text, mut tokens, mut seen) = (String::new(), String::new(), String::new(), 0u64, 0);
    while seen < n {
        let Some(chunk) = resp.chunk().await.unwrap() else { break };
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else { continue };
            request_id = v["id"].as_str().unwrap_or_default().trim_start_matches("chatcmpl-").to_owned();
            if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
                text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap());
                tokens = id.parse().unwrap();
                seen += 1;
            }
        }
    }
    (request_id, text, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_workers_stream_completions_and_remote_validators_check_them() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut c = Config::default();
    c.storage.data_dir = dirs[0].path().to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.network.role = Role::Gateway;
    c.network.heartbeat_timeout_ms = 5_000;
    c.bundled.language_models_dir = crate::helpers::test_models_dir();
    let gw = Node::spawn(&c).await.unwrap();
    let client = Client::new(gw.url());
    let w = worker(dirs[1].path(), Role::Worker, &gw.url()).await;
    let v = worker(dirs[2].path(), Role::Validator, &gw.url()).await;
    for n in [&w, &v] {
        wait_active(&client, &n.url(), true, Duration::from_secs(10)).await;
    }
    let addr = |n: serde_json::Value| n["address"].as_str().unwrap().parse::<Address>().unwrap();
    let (wa, va) = (addr(entry(&client, &w.url()).await), addr(entry(&client, &v.url()).await));
    let url = format!("{}/v1/chat/completions", gw.url());
    let http = reqwest::Client::new();

    // Whole: generated by the worker over HTTP, checked by the validator (sampled at 1).
    let body = serde_json::json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Name three fruits."}],
        "max_tokens": 24, "temperature": 0, "verification": "sampled", "sample_rate": 1.0});
    let a: serde_json::Value = http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    let proof = &a["verinet"];
    assert_eq!(proof["receipt"]["receipt"]["node"].as_str().unwrap().parse::<Address>().unwrap(), wa, "{a}");
    assert_eq!(proof["check"]["status"], "passed", "{a}");
    assert_eq!(proof["check"]["checked_by"][0].as_str().unwrap().parse::<Address>().unwrap(), va, "{a}");

    // Streamed over the worker's JSON lines: the same text, every token counted.
    let mut streamed = body.clone();
    streamed["stream"] = serde_json::json!(true);
    let mut resp = http.post(&url).json(&streamed).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (_, text, tokens) = read_events(&mut resp, usize::MAX).await;
    assert_eq!(text, a["choices"][0]["message"]["content"].as_str().unwrap());
    let completion = a["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(tokens == completion || tokens + 1 == completion, "{tokens} of {completion} (an end-of-turn token has no text)");

    // Cut short: the worker stops, and the gateway signs what it sent.
    let mut long = streamed.clone();
    long["max_tokens"] = serde_json::json!(200);
    long["messages"] = serde_json::json!([{"role": "user", "content": "Count from 1 to 100, one number per line."}]);
    let mut resp = http.post(&url).json(&long).send().await.unwrap();
    let (request_id, _, received) = read_events(&mut resp, 2).await;
    drop(resp);
    let started = Instant::now();
    let info = loop {
        let r = client.get_json(&format!("/v1/receipts/{request_id}")).await;
        if let Ok(info) = r {
            break info;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no receipt for the cut stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = &info["receipt"]["receipt"];
    assert_eq!(r["completion"]["finish_reason"], "client_closed", "{info}");
    let charged = r["completion"]["completion_tokens"].as_u64().unwrap();
    assert!(charged >= received && charged < 200, "{charged} tokens stated, {received} read");
    assert_ne!(r["node"].as_str().unwrap().parse::<Address>().unwrap(), wa, "signed by the gateway, not the worker");
    loop {
        if entry(&client, &w.url()).await["inflight"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the worker still generates for a client that left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in [w, v] {
        n.stop().await.unwrap();
    }
    gw.stop().await.unwrap();
}

/// A worker that answers with receipts signed by another key gets a strike per answer, is
/// benched after `max_strikes`, and never costs a request: each bad answer is replaced by an
/// honest worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_answering_badly_is_benched_after_its_strikes_and_costs_no_request() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut c = gateway_config(dirs[0].path());
    c.network.heartbeat_timeout_ms = 120_000;
    c.network.max_strikes = 3;
    let gw = Node::spawn(&c).await.unwrap();
    let client = Client::new(gw.url());
    let (req, want) = digits_request();

    let honest = worker(dirs[1].path(), Role::Worker, &gw.url()).await;
    let forger = WorkerNode::build(&worker_config(dirs[2].path(), Role::Worker, &gw.url())).unwrap();
    let forger_address = forger.address();
    forger.worker().forge_receipts_with(Arc::new(PrivateKeySigner::random()));
    let forger = forger.start().await.unwrap();
    for w in [&honest, &forger] {
        wait_active(&client, &w.url(), true, Duration::from_secs(10)).await;
    }

    let mut served_by = std::collections::BTreeMap::<Address, u32>::new();
    for i in 0..40 {
        let resp = client.infer(&req).await.unwrap_or_else(|e| panic!("request {i}: a bad answer cost a request: {e}"));
        assert_outputs("after a strike", &resp.tensors().unwrap(), &want, Tolerance { abs: 1e-5, rel: 1e-5 });
        *served_by.entry(resp.receipt.unwrap().receipt.node).or_default() += 1;
    }
    assert_eq!(served_by.keys().copied().collect::<Vec<_>>(), vec![entry(&client, &honest.url()).await["address"].as_str().unwrap().parse::<Address>().unwrap()], "only the honest worker's answers reach the payer");
    let f = entry(&client, &forger.url()).await;
    assert_eq!(f["address"].as_str().unwrap().parse::<Address>().unwrap(), forger_address);
    assert_eq!(f["stats"]["strikes"], 3, "three bad answers, then no more jobs: {f}");
    assert_eq!(f["active"], false, "benched: {f}");
    assert_eq!(f["live"], true, "it still heartbeats: {f}");
    // Heartbeats do not bring a benched worker back.
    tokio::time::sleep(Duration::from_millis(3 * HEARTBEAT_MS)).await;
    for _ in 0..10 {
        client.infer(&req).await.unwrap();
    }
    let f = entry(&client, &forger.url()).await;
    assert_eq!((f["stats"]["strikes"].as_u64(), f["active"].as_bool()), (Some(3), Some(false)), "{f}");
    for n in [honest, forger, gw] {
        n.stop().await.unwrap();
    }
}
