//! Language and embedding calls priced by the token: the 402 asks for the maximum (prompt plus
//! max_tokens), the escrow holds it, the capture takes exactly what the completion used and
//! gives the rest back in the same transaction; streamed or not, x402 or a spending session.

use alloy_signer_local::PrivateKeySigner;
use serde_json::{Value, json};
use verinet_client::Client;
use verinet_payments::{
    sign_payment,
    wire::{PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE, PaymentRequired, SettleResponse, decode_header, encode_header},
};
use verinet_primitives::wire::TokenPrices;

use crate::helpers::{TestNode, now, signed, test_models_dir};
use crate::payments::{cap, funded};

const CHAT: &str = "paid-chat";
const EMBED: &str = "paid-embed";
/// Creator royalties per 1,000 tokens (odd numbers, so rounding shows).
const PROMPT_1K: u128 = 3_000_001;
const COMPLETION_1K: u128 = 7_000_003;
const EMBED_1K: u128 = 500_007;
/// The node's compute fee per 1,000 tokens and its 10% protocol fee.
const OPERATOR_1K: u128 = 2_000_009;
const PROTOCOL_BPS: u128 = 1_000;

fn ceil_1k(x: u128) -> u128 {
    x.div_ceil(1000)
}

/// What a call of `prompt` + `completion` tokens costs, computed here from the published
/// prices, independently of the node's code.
fn charge(royalty_prompt_1k: u128, royalty_completion_1k: u128, prompt: u64, completion: u64) -> u128 {
    let (p, c) = (u128::from(prompt), u128::from(completion));
    let royalty = ceil_1k(p * royalty_prompt_1k + c * royalty_completion_1k);
    let compute = ceil_1k((p + c) * OPERATOR_1K);
    let base = royalty + compute;
    base + base * PROTOCOL_BPS / 10_000
}

struct Priced {
    n: TestNode,
    creator: PrivateKeySigner,
}

/// A node with fees per token, and both language models published by a creator with per-token
/// royalties. The node bundles no language models here: a content hash has one owner, so the
/// creator could not publish the node's own copies.
async fn priced_node() -> Priced {
    let n = TestNode::start_with(|c| {
        c.payments.operator_fee = "999".into();
        c.payments.operator_fee_per_1k_tokens = OPERATOR_1K.to_string();
        c.payments.protocol_fee_bps = PROTOCOL_BPS as u32;
    })
    .await;
    let creator = PrivateKeySigner::random();
    let gguf = std::fs::read(test_models_dir().join("smollm2/model.gguf")).unwrap();
    let mut meta = signed(CHAT, "1.0.0", &gguf, &creator);
    meta.token_prices = Some(TokenPrices { prompt_per_1k: PROMPT_1K, completion_per_1k: COMPLETION_1K });
    n.client.publish_bytes(&meta, gguf).await.unwrap();

    let zip = std::fs::read(test_models_dir().join("minilm-l6/model.zip")).unwrap();
    let bundle = verinet_llm::bundle_from_zip(&zip).unwrap();
    let mut meta = signed(EMBED, "1.0.0", &bundle, &creator);
    meta.token_prices = Some(TokenPrices { prompt_per_1k: EMBED_1K, completion_per_1k: 0 });
    n.client.publish_bytes(&meta, bundle).await.unwrap();
    Priced { n, creator }
}

/// POSTs `body` to `path` with `headers`: status, the response, the decoded 402 terms.
async fn post(url: &str, path: &str, body: &Value, headers: &[(&str, String)]) -> (u16, reqwest::Response, Option<PaymentRequired>) {
    let mut r = reqwest::Client::new().post(format!("{url}{path}")).json(body);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.unwrap();
    let required = resp.headers().get(PAYMENT_REQUIRED).map(|v| decode_header(v.to_str().unwrap()).unwrap());
    (resp.status().as_u16(), resp, required)
}

/// Asks, pays the `exact` maximum, returns the paid answer.
async fn pay_exact(n: &TestNode, path: &str, body: &Value, payer: &PrivateKeySigner) -> (PaymentRequired, reqwest::Response) {
    let url = n.node.url();
    let (status, _, required) = post(&url, path, body, &[]).await;
    assert_eq!(status, 402);
    let required = required.expect("PAYMENT-REQUIRED");
    let exact = required.accepts.iter().find(|a| a.scheme == "exact").expect("an exact offer").clone();
    let payload = sign_payment(&exact, required.resource.clone(), payer, now()).unwrap();
    let (status, resp, _) = post(&url, path, body, &[(PAYMENT_SIGNATURE, encode_header(&payload))]).await;
    assert_eq!(status, 200);
    (required, resp)
}

fn settled(resp: &reqwest::Response) -> SettleResponse {
    decode_header(resp.headers().get(PAYMENT_RESPONSE).expect("PAYMENT-RESPONSE").to_str().unwrap()).unwrap()
}

async fn balance(client: &Client, who: &PrivateKeySigner) -> u128 {
    client.account(who.address()).await.unwrap().balance.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn language_calls_are_charged_for_the_tokens_they_used_and_the_rest_is_refunded() {
    let Priced { n, creator } = priced_node().await;
    let start = 10u128.pow(18);
    let payer = funded(&n.client, start).await;

    // The listing and the detail state the price per 1,000 tokens.
    let detail = n.client.get_json(&format!("/v1/models/{CHAT}")).await.unwrap();
    let per_1k = &detail["latest"]["price"]["per_1k_tokens"];
    assert_eq!(per_1k["prompt"], charge(PROMPT_1K, COMPLETION_1K, 1000, 0).to_string(), "{detail}");
    assert_eq!(per_1k["completion"], charge(PROMPT_1K, COMPLETION_1K, 0, 1000).to_string());
    assert_eq!(per_1k["royalty"]["prompt_per_1k"], PROMPT_1K.to_string());
    let list = n.client.get_json("/v1/models").await.unwrap();
    let entry = list["data"].as_array().unwrap().iter().find(|m| m["id"] == CHAT).unwrap().clone();
    assert_eq!(entry["price_per_1k_tokens"], *per_1k);

    // Not streamed: the 402 asks for prompt + max_tokens; the charge is what was used.
    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 40, "temperature": 0});
    let (required, resp) = pay_exact(&n, "/v1/chat/completions", &body, &payer).await;
    let settle = settled(&resp);
    let a: Value = resp.json().await.unwrap();
    let (p, c) = (a["usage"]["prompt_tokens"].as_u64().unwrap(), a["usage"]["completion_tokens"].as_u64().unwrap());
    assert!(c < 40, "the answer ends before max_tokens, so something is refunded: {c}");
    let max = charge(PROMPT_1K, COMPLETION_1K, p, 40);
    assert_eq!(required.accepts.iter().find(|x| x.scheme == "exact").unwrap().amount, max.to_string());
    let charged = charge(PROMPT_1K, COMPLETION_1K, p, c);
    assert_eq!(settle.amount.as_deref(), Some(charged.to_string().as_str()));
    assert_eq!(a["verinet"]["payment"]["amount"], charged.to_string());
    assert_eq!(a["verinet"]["price"], charged.to_string());
    assert_eq!(balance(&n.client, &payer).await, start - charged);
    let mut spent = charged;
    // Chat tokens (prompt, completion) and embedding tokens, as the flywheel should count them.
    let mut chat_tokens = (p, c);

    // Streamed, with the usage chunk: the same accounting.
    let body = json!({"model": CHAT, "prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true}});
    let (required, resp) = pay_exact(&n, "/v1/completions", &body, &payer).await;
    let (p, c) = counts(&usage_chunk(&resp.text().await.unwrap())["usage"]);
    assert_eq!(required.accepts[0].amount, charge(PROMPT_1K, COMPLETION_1K, p, 8).to_string());
    spent += charge(PROMPT_1K, COMPLETION_1K, p, c);
    assert_eq!(balance(&n.client, &payer).await, start - spent);
    chat_tokens = (chat_tokens.0 + p, chat_tokens.1 + c);

    // Embeddings: priced per input token, known before the call.
    let body = json!({"model": EMBED, "input": ["a red apple", "the stock market fell"]});
    let (required, resp) = pay_exact(&n, "/v1/embeddings", &body, &payer).await;
    let e: Value = resp.json().await.unwrap();
    let tokens = e["usage"]["prompt_tokens"].as_u64().unwrap();
    let cost = charge(EMBED_1K, 0, tokens, 0);
    let embed_tokens = tokens;
    assert_eq!(required.accepts[0].amount, cost.to_string());
    spent += cost;
    assert_eq!(balance(&n.client, &payer).await, start - spent);

    // A spending session is charged per token too, and its budget keeps what was not used.
    let session = n.client.open_session(&cap(&payer, 10u128.pow(16), &[CHAT], now() + 600)).await.unwrap();
    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 40, "temperature": 0});
    let (status, resp, _) = post(&n.node.url(), "/v1/chat/completions", &body, &[("authorization", format!("Bearer {}", session.token))]).await;
    assert_eq!(status, 200);
    let a: Value = resp.json().await.unwrap();
    let (p, c) = (a["usage"]["prompt_tokens"].as_u64().unwrap(), a["usage"]["completion_tokens"].as_u64().unwrap());
    let cost = charge(PROMPT_1K, COMPLETION_1K, p, c);
    assert_eq!(a["verinet"]["payment"]["amount"], cost.to_string());
    spent += cost;
    chat_tokens = (chat_tokens.0 + p, chat_tokens.1 + c);
    assert_eq!(balance(&n.client, &payer).await, start - spent);
    let sessions = n.client.get_json(&format!("/v1/accounts/{}", payer.address())).await.unwrap();
    assert_eq!(sessions["escrow"], "0", "{sessions}");

    // The creator earned the royalties of all four calls, nothing more; the books balance.
    let earned = n.client.account(creator.address()).await.unwrap();
    let royalty: u128 = earned.earnings.get("creator").map_or(0, |v| v.parse().unwrap());
    assert!(royalty > 0 && royalty < spent, "{royalty} of {spent}");

    // The flywheel counts the tokens of the four paid calls as usage, per model and per user.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let f = loop {
        let f = n.client.get_json("/v1/flywheel?window=3600").await.unwrap();
        if f["usage"]["trusted_decisions"] == 4 {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "the flywheel never saw the four calls: {}", f["usage"]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let u = &f["usage"];
    assert_eq!(u["tokens"], json!({"prompt": chat_tokens.0 + embed_tokens, "completion": chat_tokens.1}), "{u}");
    assert_eq!(u["tokens_per_model"][CHAT], json!({"prompt": chat_tokens.0, "completion": chat_tokens.1}), "{u}");
    assert_eq!(u["tokens_per_model"][EMBED], json!({"prompt": embed_tokens, "completion": 0}), "{u}");
    assert_eq!(u["tokens_per_user"][0][0].as_str().unwrap().to_lowercase(), format!("{:#x}", payer.address()), "{u}");
    n.node.stop().await.unwrap();
}

/// The usage chunk of a streamed answer (`include_usage`): usage and the `verinet` proof.
fn usage_chunk(sse: &str) -> Value {
    sse.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk")
}

fn counts(usage: &Value) -> (u64, u64) {
    (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap())
}

/// The official x402 client's `upto` scheme pays a chat call, streamed and not: it signs the
/// maximum, the node charges exactly what was used and keeps the rest in the payer's balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_x402_client_pays_chat_with_upto_streamed_and_not() {
    let Priced { n, .. } = priced_node().await;
    let start = 10u128.pow(18);
    let payer = funded(&n.client, start).await;
    let url = format!("{}/v1/chat/completions", n.node.url());

    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 64, "temperature": 0});
    let r = crate::helpers::official_x402_client(url.clone(), &payer, &body, "upto").await;
    assert_eq!(r["scheme"], "upto", "{r}");
    let (p, c) = counts(&r["body"]["usage"]);
    assert!(c < 64, "the answer ends before max_tokens, so something is refunded: {c}");
    let charged = charge(PROMPT_1K, COMPLETION_1K, p, c);
    assert_eq!(r["payment_response"]["amount"], charged.to_string(), "{r}");
    assert_eq!(balance(&n.client, &payer).await, start - charged);
    let mut spent = charged;

    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 12,
        "temperature": 0.7, "seed": 5, "stream": true, "stream_options": {"include_usage": true}});
    let r = crate::helpers::official_x402_client(url.clone(), &payer, &body, "upto").await;
    let last = usage_chunk(r["body"].as_str().expect("an event stream"));
    let (p, c) = counts(&last["usage"]);
    let charged = charge(PROMPT_1K, COMPLETION_1K, p, c);
    assert_eq!(last["verinet"]["payment"]["amount"], charged.to_string());
    assert_eq!(last["verinet"]["payment"]["method"], "x402");
    spent += charged;
    assert_eq!(balance(&n.client, &payer).await, start - spent);

    // A client that supports both takes the first offer: upto.
    let body = json!({"model": CHAT, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0});
    let r = crate::helpers::official_x402_client(format!("{}/v1/completions", n.node.url()), &payer, &body, "both").await;
    assert_eq!(r["scheme"], "upto", "{r}");
    spent += charge(PROMPT_1K, COMPLETION_1K, counts(&r["body"]["usage"]).0, 5);
    assert_eq!(balance(&n.client, &payer).await, start - spent);
    assert_eq!(n.client.account(payer.address()).await.unwrap().escrow, "0");
    n.node.stop().await.unwrap();
}

/// An `upto` authorization pays once, for its route's maximum only, and names this node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upto_authorization_pays_once_and_only_what_it_names() {
    let Priced { n, .. } = priced_node().await;
    let url = n.node.url();
    let payer = funded(&n.client, 10u128.pow(18)).await;
    let body = json!({"model": EMBED, "input": "a red apple"});
    let (_, _, required) = post(&url, "/v1/embeddings", &body, &[]).await;
    let required = required.unwrap();
    assert_eq!(required.accepts.iter().map(|a| a.scheme.as_str()).collect::<Vec<_>>(), ["upto", "exact"]);
    let upto = required.accepts[0].clone();
    assert_eq!(upto.extra["facilitatorAddress"].as_str(), Some(upto.pay_to.as_str()), "the node settles its own escrows");
    let header = encode_header(&verinet_payments::sign_upto_payment(&upto, required.resource.clone(), &payer, now()).unwrap());
    let (status, resp, _) = post(&url, "/v1/embeddings", &body, &[(PAYMENT_SIGNATURE, header.clone())]).await;
    assert_eq!(status, 200);
    assert_eq!(settled(&resp).amount, Some(upto.amount.clone()));

    let first = resp.json::<Value>().await.unwrap();

    // The same authorization again, for the same request: the kept answer, not a second charge.
    let before = n.client.account(payer.address()).await.unwrap();
    let (status, resp, _) = post(&url, "/v1/embeddings", &body, &[(PAYMENT_SIGNATURE, header.clone())]).await;
    assert_eq!(status, 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), first);
    assert_eq!(n.client.account(payer.address()).await.unwrap(), before, "charged once");
    // For another request: its nonce is spent.
    let other = json!({"model": EMBED, "input": "a green pear"});
    let (status, resp, again) = post(&url, "/v1/embeddings", &other, &[(PAYMENT_SIGNATURE, header)]).await;
    assert_eq!(status, 402);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "nonce_used");
    assert!(again.is_some(), "a refusal carries fresh terms");

    // Authorising less than the maximum, or another facilitator: refused, nothing held.
    let mut short = upto.clone();
    short.amount = (upto.amount.parse::<u128>().unwrap() - 1).to_string();
    let low = encode_header(&verinet_payments::sign_upto_payment(&short, None, &payer, now()).unwrap());
    let (status, resp, _) = post(&url, "/v1/embeddings", &body, &[(PAYMENT_SIGNATURE, low)]).await;
    assert_eq!((status, resp.json::<Value>().await.unwrap()["error"]["code"].clone()), (402, json!("amount_mismatch")));
    let mut elsewhere = upto.clone();
    elsewhere.extra["facilitatorAddress"] = json!(PrivateKeySigner::random().address().to_checksum(None));
    let other = encode_header(&verinet_payments::sign_upto_payment(&elsewhere, None, &payer, now()).unwrap());
    let (status, resp, _) = post(&url, "/v1/embeddings", &body, &[(PAYMENT_SIGNATURE, other)]).await;
    assert_eq!((status, resp.json::<Value>().await.unwrap()["error"]["code"].clone()), (402, json!("facilitator_mismatch")));
    assert_eq!(n.client.account(payer.address()).await.unwrap().escrow, "0");
    n.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_leaves_a_stream_pays_for_the_prompt_and_the_tokens_it_was_sent() {
    let Priced { n, .. } = priced_node().await;
    let start = 10u128.pow(18);
    let payer = funded(&n.client, start).await;
    const MAX: u64 = 200;
    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Count from 1 to 100, one number per line."}],
        "max_tokens": MAX, "temperature": 0, "stream": true});
    let (required, mut resp) = pay_exact(&n, "/v1/chat/completions", &body, &payer).await;

    // Read three text events, then hang up. Each event's `id:` is the number of completion
    // tokens sent so far.
    let (mut buf, mut events, mut received, mut request_id) = (String::new(), 0, 0u64, String::new());
    while events < 3 {
        let chunk = resp.chunk().await.unwrap().expect("the stream goes on");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) else { continue };
            let data: Value = serde_json::from_str(event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            assert!(data["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()), "{event}");
            let id: u64 = id.parse().unwrap();
            assert!(id > received, "token counts grow: {id} after {received}");
            received = id;
            request_id = data["id"].as_str().unwrap().trim_start_matches("chatcmpl-").to_owned();
            events += 1;
        }
    }
    drop(resp);

    // The gateway settles the cut stream on its own: wait for the escrow to close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let acct = n.client.get_json(&format!("/v1/accounts/{}", payer.address())).await.unwrap();
        if acct["escrow"] == "0" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cut stream was never settled: {acct}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The gateway's own receipt states what it charged for: the prompt and the tokens handed
    // to the connection (at least what the client read, fewer than max_tokens).
    let info = n.client.get_json(&format!("/v1/receipts/{request_id}")).await.unwrap();
    let r = &info["receipt"]["receipt"];
    let nodes = n.client.get_json("/v1/nodes").await.unwrap();
    assert_eq!(r["node"].as_str().unwrap().to_lowercase(), nodes["nodes"][0]["address"].as_str().unwrap().to_lowercase(), "signed by this node: {info}");
    let completion = &r["completion"];
    assert_eq!(completion["finish_reason"], "client_closed", "{info}");
    let (p, c) = (completion["prompt_tokens"].as_u64().unwrap(), completion["completion_tokens"].as_u64().unwrap());
    assert!(c >= received && c < MAX, "charged {c} completion tokens; the client read {received} of at most {MAX}");
    let signed: verinet_primitives::wire::SignedReceipt = serde_json::from_value(info["receipt"].clone()).unwrap();
    verinet_verify::verify_receipt(&signed).expect("a valid gateway signature");
    let maximum = &required.accepts.iter().find(|a| a.scheme == "exact").unwrap().amount;
    assert_eq!(*maximum, charge(PROMPT_1K, COMPLETION_1K, p, MAX).to_string(), "the escrow held the maximum");

    // Charged exactly that, and nothing more; the rest of the maximum came back.
    assert_eq!(balance(&n.client, &payer).await, start - charge(PROMPT_1K, COMPLETION_1K, p, c));
    n.node.stop().await.unwrap();
}
