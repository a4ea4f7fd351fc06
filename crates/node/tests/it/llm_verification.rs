//! Verifying completions: a validator checks a sampled share with one teacher-forced pass,
//! catches each kind of cheating worker (behind `test-utils`: another model in effect, tokens
//! appended to be paid more, a receipt that undercounts the prompt), slashes it and refunds the
//! payer; honest workers, generating alone or in a batch, are never disputed. Embeddings are
//! checked by re-execution (`sampled`) or by a majority of workers (`quorum`) within a cosine
//! tolerance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_signer_local::PrivateKeySigner;
use serde_json::{Value, json};
use verinet_node::{Overrides, WrapExecutor};
use verinet_payments::{
    sign_payment,
    wire::{PAYMENT_REQUIRED, PAYMENT_SIGNATURE, PaymentRequired, decode_header, encode_header},
};
use verinet_verify::test_utils::{CheatingLlm, LlmCheat};

use crate::helpers::{TestNode, now, test_models_dir};
use crate::payments::funded;

const CHAT: &str = "smollm2-135m-instruct";
const SLASH: u128 = 1_000;
const STAKE: u128 = 1_000_000;
/// Per 1,000 tokens, so every call costs something.
const FEE_1K: u128 = 10_000;

/// A node with `workers` workers (the first cheating as `cheat`, if any, counting its lies in
/// `cheated`) and one validator, checking a share `p` of `sampled` completions.
async fn node(cheat: Option<LlmCheat>, p: f64, workers: usize, cheated: Arc<AtomicU64>) -> TestNode {
    let wraps: Vec<(usize, WrapExecutor)> = cheat
        .map(|c| {
            let wrap: WrapExecutor = Arc::new(move |honest, key| {
                Arc::new(CheatingLlm::new(honest, key, c).counting(cheated.clone())) as Arc<dyn verinet_verify::Execute>
            });
            (0, wrap)
        })
        .into_iter()
        .collect();
    TestNode::start_with_overrides(
        |c| {
            c.bundled.language_models_dir = test_models_dir();
            c.verification.workers = workers;
            c.verification.validators = 1;
            c.verification.sample_rate = p;
            c.verification.min_reputation = 0.0;
            c.verification.min_stake = "1".into();
            c.verification.devnet_stake = STAKE.to_string();
            c.verification.slash_amount = SLASH.to_string();
            c.verification.seed = Some(42);
            c.payments.operator_fee_per_1k_tokens = FEE_1K.to_string();
        },
        Overrides { worker_wraps: wraps, ..Overrides::default() },
    )
    .await
}

/// A paid `sampled` chat call; returns the HTTP status and the body.
async fn paid_chat(n: &TestNode, payer: &PrivateKeySigner, i: usize, max_tokens: u32) -> (u16, Value) {
    let names = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": format!("Say hi to {}.", names[i % names.len()])}],
        "max_tokens": max_tokens, "temperature": if i.is_multiple_of(2) { 0.0 } else { 0.8 }, "seed": i, "verification": "sampled"});
    paid_post(n, payer, "/v1/chat/completions", &body).await
}

/// POSTs `body` to `path`, pays the 402's `exact` offer, returns the status and the body.
async fn paid_post(n: &TestNode, payer: &PrivateKeySigner, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}{path}", n.node.url());
    let http = reqwest::Client::new();
    let r = http.post(&url).json(body).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let required: PaymentRequired = decode_header(r.headers().get(PAYMENT_REQUIRED).unwrap().to_str().unwrap()).unwrap();
    let exact = required.accepts.iter().find(|a| a.scheme == "exact").unwrap().clone();
    let header = encode_header(&sign_payment(&exact, None, payer, now()).unwrap());
    let r = http.post(&url).header(PAYMENT_SIGNATURE, header).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn nodes(n: &TestNode) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/v1/nodes", n.node.url())).await.unwrap().json().await.unwrap();
    v["nodes"].as_array().unwrap().clone()
}

fn sigma(n: f64, p: f64) -> f64 {
    (n * p * (1.0 - p)).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sampled_checks_catch_each_cheating_worker_slash_it_and_refund_the_payer() {
    const N: usize = 16;
    let p = 0.5;
    for cheat in [LlmCheat::OtherModel, LlmCheat::AppendTokens] {
        let cheated = Arc::new(AtomicU64::new(0));
        let n = node(Some(cheat), p, 1, cheated.clone()).await;
        let payer = funded(&n.client, 10u128.pow(18)).await;
        let (mut disputed, mut passed, mut charged) = (0usize, 0usize, 0u128);
        for i in 0..N {
            let (status, a) = paid_chat(&n, &payer, i, 48).await;
            assert_eq!(status, 200, "{cheat:?}: {a}");
            let proof = &a["verinet"];
            match proof["check"]["status"].as_str().unwrap() {
                "disputed" => {
                    disputed += 1;
                    assert!(proof["payment"].is_null(), "{cheat:?}: a refuted completion is not charged: {proof}");
                    let info: Value = reqwest::get(format!("{}/v1/receipts/{}", n.node.url(), proof["request_id"].as_str().unwrap()))
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert_eq!(info["disputes"][0]["mode"], "sampled", "{info}");
                }
                status @ ("passed" | "unchecked") => {
                    passed += usize::from(status == "passed");
                    charged += proof["payment"]["amount"].as_str().unwrap().parse::<u128>().unwrap();
                }
                other => panic!("{other}"),
            }
        }
        let lies = cheated.load(Ordering::SeqCst) as usize;
        eprintln!("{cheat:?}: {N} calls, {lies} falsified, {disputed} disputed, {passed} passed");
        // Checks happen at the sampling rate; every checked lie is refuted, and only lies are
        // (an answer that ran to max_tokens is left alone by AppendTokens and passes).
        let checked = (disputed + passed) as f64;
        assert!((checked - p * N as f64).abs() <= 4.0 * sigma(N as f64, p) + 1.0, "{cheat:?}: {checked} checked of {N}");
        assert!((disputed as f64 - p * lies as f64).abs() <= 4.0 * sigma(lies as f64, p) + 1.0, "{cheat:?}: {disputed} of {lies}");
        assert!(disputed >= 1 && disputed <= lies && passed <= N - lies, "{cheat:?}");
        // Money: only answers not refuted were paid; one slash per detection.
        let a = n.client.account(payer.address()).await.unwrap();
        assert_eq!(a.balance, (10u128.pow(18) - charged).to_string(), "{cheat:?}");
        assert_eq!(a.escrow, "0");
        let list = nodes(&n).await;
        let worker = list.iter().find(|x| x["role"] == "worker").unwrap();
        assert_eq!(worker["stake"], (STAKE - SLASH * disputed as u128).to_string(), "{cheat:?}");
        n.node.stop().await.unwrap();
    }
}

/// A receipt that undercounts the prompt is caught by the gateway's own receipt check on
/// every call: never charged, and the worker's reputation falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_that_undercounts_the_prompt_is_never_paid() {
    let n = node(Some(LlmCheat::ShortPrompt), 0.0, 1, Arc::default()).await;
    let payer = funded(&n.client, 10u128.pow(18)).await;
    for i in 0..3 {
        let (status, a) = paid_chat(&n, &payer, i, 8).await;
        assert_eq!(status, 502, "{a}");
        assert_eq!(a["error"]["code"], "workers_failed");
    }
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!((a.balance, a.escrow), (10u128.pow(18).to_string(), "0".to_string()));
    let list = nodes(&n).await;
    let worker = list.iter().find(|x| x["role"] == "worker").unwrap();
    assert_eq!(worker["stats"]["failed"], 3, "{worker}");
    n.node.stop().await.unwrap();
}

/// No false alarms: every completion checked, greedy and sampled, generated alone and four at
/// a time in one batch by two workers, all pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn honest_completions_are_never_disputed() {
    let n = node(None, 1.0, 2, Arc::default()).await;
    let payer = funded(&n.client, 10u128.pow(18)).await;
    let total = std::env::var("VERINET_HONEST_CHECKS").ok().and_then(|v| v.parse().ok()).unwrap_or(200usize);
    let mut passed = 0;
    for round in 0..total.div_ceil(4) {
        let calls = (0..4).map(|j| {
            let (n, payer) = (&n, &payer);
            async move { paid_chat(n, payer, round * 4 + j, 16).await }
        });
        for (status, a) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{a}");
            if a["verinet"]["check"]["status"] != "passed" {
                let id = a["verinet"]["request_id"].as_str().unwrap();
                let info: Value = reqwest::get(format!("{}/v1/receipts/{id}", n.node.url())).await.unwrap().json().await.unwrap();
                panic!("a false alarm: {}\n{a}", info["disputes"]);
            }
            passed += 1;
        }
    }
    assert!(passed >= total);
    let list = nodes(&n).await;
    assert!(list.iter().all(|x| x["stats"]["failed"] == 0), "{list:?}");
    n.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_are_checked_by_re_execution_and_by_quorum() {
    const EMBED: &str = "all-minilm-l6-v2";
    let body = |mode: &str| json!({"model": EMBED, "input": ["a red apple", "the stock market fell"], "verification": mode, "sample_rate": 1.0});
    let second_half_norm = |v: &Value| -> f64 {
        let v: Vec<f64> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        v[v.len() / 2..].iter().map(|x| x * x).sum::<f64>().sqrt()
    };

    // Sampled, one cheating worker (a truncated model in effect): every call is re-embedded,
    // refuted, slashed and refunded, and the answer is the validator's vectors.
    let cheated = Arc::new(AtomicU64::new(0));
    let n = node(Some(LlmCheat::OtherModel), 1.0, 1, cheated.clone()).await;
    let start = 10u128.pow(18);
    let payer = funded(&n.client, start).await;
    for _ in 0..2 {
        let (status, a) = paid_post(&n, &payer, "/v1/embeddings", &body("sampled")).await;
        assert_eq!(status, 200, "{a}");
        let proof = &a["verinet"];
        assert_eq!(proof["check"]["status"], "disputed", "{proof}");
        assert!(proof["payment"].is_null(), "{proof}");
        assert!(second_half_norm(&a["data"][0]["embedding"]) > 0.1, "the honest vectors are returned");
    }
    assert_eq!(cheated.load(Ordering::SeqCst), 2);
    let acct = n.client.account(payer.address()).await.unwrap();
    assert_eq!((acct.balance, acct.escrow), (start.to_string(), "0".to_string()));
    let list = nodes(&n).await;
    let worker = list.iter().find(|x| x["role"] == "worker").unwrap();
    assert_eq!(worker["stake"], (STAKE - 2 * SLASH).to_string());
    n.node.stop().await.unwrap();

    // Quorum of three with one cheater: the two honest ones agree, the cheater is slashed,
    // the payer pays once. Sampled on honest workers: passed and paid.
    let cheated = Arc::new(AtomicU64::new(0));
    let n = node(Some(LlmCheat::OtherModel), 1.0, 3, cheated.clone()).await;
    let payer = funded(&n.client, start).await;
    let (status, a) = paid_post(&n, &payer, "/v1/embeddings", &body("quorum")).await;
    assert_eq!(status, 200, "{a}");
    let check = &a["verinet"]["check"];
    assert_eq!(check["status"], "quorum", "{check}");
    assert_eq!((check["checked_by"].as_array().unwrap().len(), check["disputed"].as_array().unwrap().len()), (2, 1), "{check}");
    assert!(second_half_norm(&a["data"][1]["embedding"]) > 0.1);
    let paid: u128 = a["verinet"]["payment"]["amount"].as_str().unwrap().parse().unwrap();
    assert_eq!(n.client.account(payer.address()).await.unwrap().balance, (start - paid).to_string());
    let mut sampled_passed = 0;
    for _ in 0..6 {
        let (status, a) = paid_post(&n, &payer, "/v1/embeddings", &body("sampled")).await;
        assert_eq!(status, 200, "{a}");
        sampled_passed += usize::from(a["verinet"]["check"]["status"] == "passed");
    }
    // Routing spreads calls over the three workers; the cheater's are disputed, the others pass.
    assert!(sampled_passed >= 1, "no honest sampled call passed");
    n.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_completions_take_the_token_majority_and_slash_a_dissenter() {
    // Three workers, the first serving another model in effect: the two honest ones give the
    // same ids, the dissenter is refuted by a teacher-forced check and slashed, the payer pays
    // once for the majority's completion, streamed or not.
    let cheated = Arc::new(AtomicU64::new(0));
    let n = node(Some(LlmCheat::OtherModel), 0.0, 3, cheated.clone()).await;
    let start = 10u128.pow(18);
    let payer = funded(&n.client, start).await;
    let mut spent = 0u128;
    for (i, stream) in [(0, false), (1, true)] {
        let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Say hi to Ann."}], "max_tokens": 24,
            "temperature": 0.8, "seed": 7 + i, "verification": "quorum", "stream": stream, "stream_options": {"include_usage": true}});
        let url = format!("{}/v1/chat/completions", n.node.url());
        let http = reqwest::Client::new();
        let r = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let required: PaymentRequired = decode_header(r.headers().get(PAYMENT_REQUIRED).unwrap().to_str().unwrap()).unwrap();
        let exact = required.accepts.iter().find(|a| a.scheme == "exact").unwrap().clone();
        let header = encode_header(&sign_payment(&exact, None, &payer, now()).unwrap());
        let r = http.post(&url).header(PAYMENT_SIGNATURE, header).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let proof: Value = if stream {
            let text = r.text().await.unwrap();
            let last = text.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).filter(|d| *d != "[DONE]").last().unwrap().to_owned();
            serde_json::from_str::<Value>(&last).unwrap()["verinet"].clone()
        } else {
            r.json::<Value>().await.unwrap()["verinet"].clone()
        };
        let check = &proof["check"];
        assert_eq!(check["status"], "quorum", "{proof}");
        assert_eq!((check["checked_by"].as_array().unwrap().len(), check["disputed"].as_array().unwrap().len()), (2, 1), "{check}");
        spent += proof["payment"]["amount"].as_str().unwrap().parse::<u128>().unwrap();
    }
    assert_eq!(cheated.load(Ordering::SeqCst), 2);
    let acct = n.client.account(payer.address()).await.unwrap();
    assert_eq!((acct.balance, acct.escrow), ((start - spent).to_string(), "0".to_string()));
    let list = nodes(&n).await;
    let stakes: Vec<&str> = list.iter().filter(|x| x["role"] == "worker").map(|x| x["stake"].as_str().unwrap()).collect();
    assert!(stakes.contains(&(STAKE - 2 * SLASH).to_string().as_str()), "the dissenter was slashed twice: {stakes:?}");
    n.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serving_a_cheaper_quantization_is_caught_slashed_and_not_paid() {
    // The published q4_1 weights re-quantized to q4_0 and served under the published id, by
    // an engine of the worker's own. Every completion differs somewhere from what the
    // published model gives, but not always beyond the near-tie tolerance: measured 9 of 12
    // refuted at 48 tokens (docs/verification.md). Checked at p = 1.
    const N: usize = 12;
    let cheated = Arc::new(AtomicU64::new(0));
    let n = node(Some(LlmCheat::OtherQuantization(verinet_llm::Quantization::Q4_0)), 1.0, 1, cheated.clone()).await;
    let start = 10u128.pow(18);
    let payer = funded(&n.client, start).await;
    let (mut disputed, mut charged) = (0u128, 0u128);
    for i in 0..N {
        let (status, a) = paid_chat(&n, &payer, i, 48).await;
        assert_eq!(status, 200, "{a}");
        let proof = &a["verinet"];
        match proof["check"]["status"].as_str().unwrap() {
            "disputed" => {
                disputed += 1;
                assert!(proof["payment"].is_null(), "{proof}");
            }
            "passed" => charged += proof["payment"]["amount"].as_str().unwrap().parse::<u128>().unwrap(),
            other => panic!("every call is checked at p = 1: {other}"),
        }
    }
    eprintln!("q4_0 in place of q4_1: {disputed} of {N} completions refuted");
    assert_eq!(cheated.load(Ordering::SeqCst), N as u64);
    assert!(disputed as usize >= N / 2, "only {disputed} of {N} refuted");
    let acct = n.client.account(payer.address()).await.unwrap();
    assert_eq!((acct.balance, acct.escrow), ((start - charged).to_string(), "0".to_string()));
    let list = nodes(&n).await;
    let worker = list.iter().find(|x| x["role"] == "worker").unwrap();
    assert_eq!(worker["stake"], (STAKE - SLASH * disputed).to_string());
    n.node.stop().await.unwrap();
}
