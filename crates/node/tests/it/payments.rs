//! Paid inference over real HTTP: x402 402 -> sign -> escrow -> capture with the fee split;
//! every refused payment with its code and no ledger change; concurrent double spends; refunds;
//! apps; spending sessions; the facilitator endpoints; the official Python x402 client.

use std::collections::BTreeMap;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use reqwest::StatusCode;
use serde_json::{Value, json};
use verinet_client::{Client, ClientError};
use verinet_payments::{
    SpendingCap, X402Config, authorization_hash, devnet_asset, sign_payment,
    wire::{
        Authorization, FacilitatorRequest, PAYMENT_REQUIRED, PAYMENT_SIGNATURE, PaymentPayload, PaymentRequired,
        PaymentRequirements, SettleResponse, Supported, VerifyResponse, X_PAYMENT, decode_header, encode_header,
    },
};
use verinet_primitives::{
    Address, TensorMap, tensors_hash,
    wire::{AccountInfo, AppRegistration, InferRequest, TransferRequest},
};
use verinet_runtime::test_utils::parse_reference;

use crate::helpers::{TestNode, digits_bytes, now, repo_root, signed};

const ROYALTY: u128 = 1_000;
const OPERATOR_FEE: u128 = 300;
/// 10% of royalty + compute.
const PROTOCOL: u128 = 130;
const PRICE: u128 = ROYALTY + OPERATOR_FEE + PROTOCOL;

/// A node charging an operator fee and a 10% protocol fee, with `paid` published at `ROYALTY`
/// by a creator key.
struct Paid {
    n: TestNode,
    creator: PrivateKeySigner,
}

async fn paid_node(tweak: impl FnOnce(&mut verinet_node::Config)) -> Paid {
    let n = TestNode::start_with(|c| {
        c.payments.operator_fee = OPERATOR_FEE.to_string();
        c.payments.protocol_fee_bps = 1_000;
        tweak(c);
    })
    .await;
    let creator = PrivateKeySigner::random();
    let bytes = digits_bytes();
    let mut meta = signed("paid", "1.0.0", &bytes, &creator);
    // The royalty is metadata; the signature covers name, version, bytes and time.
    meta.price = ROYALTY.to_string();
    n.client.publish_bytes(&meta, bytes).await.unwrap();
    Paid { n, creator }
}

fn digits_input() -> TensorMap {
    parse_reference(&repo_root().join("fixtures/digits/reference.json")).cases[0].inputs.clone()
}

fn req(model: &str) -> InferRequest {
    InferRequest::new(model, digits_input())
}

/// `req` with other inputs (one pixel changed).
fn other_req(model: &str) -> InferRequest {
    let mut r = req(model);
    let t = r.inputs.values_mut().next().unwrap();
    let mut v: Value = serde_json::to_value(&*t).unwrap();
    v["data"][0] = json!(v["data"][0].as_f64().unwrap() + 1.0);
    *t = serde_json::from_value(v).unwrap();
    r
}

pub(crate) async fn funded(client: &Client, amount: u128) -> PrivateKeySigner {
    let key = PrivateKeySigner::random();
    client.faucet(key.address(), Some(amount)).await.unwrap();
    key
}

/// Everything the ledger shows about the accounts a test touches, plus the totals.
async fn snapshot(client: &Client, accounts: &[Address]) -> Vec<AccountInfo> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(client.account(*a).await.unwrap());
    }
    out
}

/// POST /v1/infer with extra headers; returns status, body and the decoded PAYMENT-REQUIRED.
async fn post(url: &str, body: &InferRequest, headers: &[(&str, String)]) -> (StatusCode, Value, Option<PaymentRequired>) {
    let mut r = reqwest::Client::new().post(format!("{url}/v1/infer")).json(body);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let required = resp.headers().get(PAYMENT_REQUIRED).map(|v| decode_header(v.to_str().unwrap()).unwrap());
    (status, resp.json().await.unwrap_or(Value::Null), required)
}

fn terms(pay_to: &str) -> X402Config {
    X402Config { clock_skew_secs: 0, ..X402Config::devnet(pay_to.parse().unwrap()) }
}

/// A payload with `auth` signed by `key` over `config`'s domain, echoing `accepted`.
fn signed_payload(config: &X402Config, auth: Authorization, accepted: &PaymentRequirements, key: &PrivateKeySigner) -> String {
    let hash = authorization_hash(config, &auth).unwrap();
    let sig = key.sign_hash_sync(&hash).unwrap();
    let payload = PaymentPayload {
        x402_version: 2,
        payload: verinet_payments::wire::ExactPayload { signature: format!("0x{}", hex::encode(sig.as_bytes())), authorization: auth },
        accepted: Some(accepted.clone()),
        resource: None,
        scheme: None,
        network: None,
    };
    encode_header(&payload)
}

fn authorization(from: Address, to: &str, value: u128) -> Authorization {
    Authorization {
        from: from.to_checksum(None),
        to: to.into(),
        value: value.to_string(),
        valid_after: "0".into(),
        valid_before: (now() + 300).to_string(),
        nonce: format!("0x{}", hex::encode(rand_bytes())),
    }
}

fn rand_bytes() -> [u8; 32] {
    PrivateKeySigner::random().to_bytes().0
}

#[tokio::test]
async fn paid_inference_escrows_captures_and_splits_the_fee() {
    let Paid { n, creator } = paid_node(|_| {}).await;
    let payer = funded(&n.client, 10_000).await;

    // Unpaid: 402 with the exact quote in PAYMENT-REQUIRED, and the JSON error body.
    let (status, body, required) = post(&n.node.url(), &req("paid"), &[]).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["error"]["code"], "payment_required");
    let required = required.expect("PAYMENT-REQUIRED header");
    assert_eq!(required.x402_version, 2);
    let accepted = &required.accepts[0];
    assert_eq!(
        (accepted.scheme.as_str(), accepted.network.as_str(), accepted.amount.as_str()),
        ("exact", "eip155:31337", PRICE.to_string().as_str())
    );
    assert_eq!(accepted.asset.parse::<Address>().unwrap(), devnet_asset());
    // The token's EIP-712 domain, and what a person reads: symbol, decimals, the amount in tokens.
    assert_eq!(
        accepted.extra,
        json!({"name": "verinet USD", "version": "1", "symbol": "vUSD", "decimals": 18,
               "amountFormatted": verinet_primitives::format_amount(PRICE, 18)})
    );
    let operator: Address = accepted.pay_to.parse().unwrap();
    // The model detail shows the same breakdown.
    let detail = n.client.model("paid").await.unwrap();
    assert_eq!(detail.latest.price.total, PRICE.to_string());
    assert_eq!(detail.latest.price.operator_fee, OPERATOR_FEE.to_string());

    let (resp, settled) = n.client.infer_paid(&req("paid"), &payer).await.unwrap();
    let settled = settled.expect("PAYMENT-RESPONSE");
    assert!(settled.success);
    assert_eq!(settled.payer.as_deref().map(|p| p.parse::<Address>().unwrap()), Some(payer.address()));
    assert_eq!(settled.amount.as_deref(), Some(PRICE.to_string().as_str()));
    let reference = parse_reference(&repo_root().join("fixtures/digits/reference.json"));
    assert_eq!(resp.tensors().unwrap()["label"], reference.cases[0].outputs["label"], "same class as onnxruntime");
    let payment = resp.payment.clone().expect("payment summary");
    assert_eq!((payment.method.as_str(), payment.settle_tx.as_str()), ("x402", settled.transaction.as_str()));

    // Money: payer -> creator, operator, protocol.
    let treasury = verinet_node::default_protocol_address();
    let [p, c, o, t] = <[AccountInfo; 4]>::try_from(
        snapshot(&n.client, &[payer.address(), creator.address(), operator, treasury]).await,
    )
    .unwrap();
    assert_eq!((p.balance.as_str(), p.escrow.as_str()), ("8570", "0"));
    assert_eq!(c.earnings.get("creator").map(String::as_str), Some("1000"));
    assert_eq!(o.earnings.get("operator").map(String::as_str), Some("300"));
    assert_eq!(t.earnings.get("protocol").map(String::as_str), Some("130"));

    // The record binds the result: captured with the canonical hash of what we received.
    let record = n.client.payment(&resp.request_id).await.unwrap();
    assert_eq!(record.status, "captured");
    assert_eq!(record.output_hash, Some(format!("{:#x}", tensors_hash(&resp.tensors().unwrap()))));
    assert_eq!(record.input_hash, format!("{:#x}", tensors_hash(&digits_input())));
    assert_eq!(record.quote["total"], PRICE.to_string());
}

/// Every refusal: a 402 (or 4xx) with its code, a fresh PAYMENT-REQUIRED naming the x402
/// reason, and not a single base unit moved.
#[tokio::test]
async fn refused_payments_change_nothing() {
    let Paid { n, creator } = paid_node(|_| {}).await;
    let url = n.node.url();
    let payer = funded(&n.client, 10_000).await;
    let accepted = n.client.quote(&req("paid")).await.unwrap().accepts[0].clone();
    let pay_to = accepted.pay_to.clone();
    let config = terms(&pay_to);
    let operator: Address = pay_to.parse().unwrap();
    let poor = funded(&n.client, PRICE - 1).await;
    let stranger = PrivateKeySigner::random();
    let accounts = [payer.address(), poor.address(), creator.address(), operator, stranger.address()];

    // One good payment first, whose header is then replayed.
    let good = signed_payload(&config, authorization(payer.address(), &pay_to, PRICE), &accepted, &payer);
    let (status, _, _) = post(&url, &req("paid"), &[(PAYMENT_SIGNATURE, good.clone())]).await;
    assert_eq!(status, StatusCode::OK);
    let before = snapshot(&n.client, &accounts).await;

    let mut cases: Vec<(&str, String, &str, &str)> = Vec::new();
    // (Sent again for the same request it gets the same answer: a_spent_payment_sent_again_...)
    cases.push(("replayed nonce, other inputs", good.clone(), "nonce_used", "invalid_exact_evm_nonce_already_used"));
    cases.push(("replayed nonce, other inputs, legacy header", good, "nonce_used", "invalid_exact_evm_nonce_already_used"));
    let mut expired = authorization(payer.address(), &pay_to, PRICE);
    expired.valid_before = (now() - 10).to_string();
    cases.push((
        "expired",
        signed_payload(&config, expired, &accepted, &payer),
        "authorization_expired",
        "invalid_exact_evm_payload_authorization_valid_before",
    ));
    let mut early = authorization(payer.address(), &pay_to, PRICE);
    early.valid_after = (now() + 3_600).to_string();
    cases.push((
        "not yet valid",
        signed_payload(&config, early, &accepted, &payer),
        "authorization_not_yet_valid",
        "invalid_exact_evm_payload_authorization_valid_after",
    ));
    let elsewhere = stranger.address().to_checksum(None);
    cases.push((
        "wrong recipient",
        signed_payload(&config, authorization(payer.address(), &elsewhere, PRICE), &accepted, &payer),
        "recipient_mismatch",
        "invalid_exact_evm_payload_recipient_mismatch",
    ));
    cases.push((
        "amount below price",
        signed_payload(&config, authorization(payer.address(), &pay_to, PRICE - 1), &accepted, &payer),
        "amount_mismatch",
        "invalid_exact_evm_payload_authorization_value_mismatch",
    ));
    cases.push((
        "signed by another key",
        signed_payload(&config, authorization(payer.address(), &pay_to, PRICE), &accepted, &stranger),
        "invalid_signature",
        "invalid_exact_evm_payload_signature",
    ));
    let mut garbage: PaymentPayload =
        decode_header(&signed_payload(&config, authorization(payer.address(), &pay_to, PRICE), &accepted, &payer))
            .unwrap();
    garbage.payload.signature = format!("0x{}", "ab".repeat(65));
    cases.push(("garbage signature", encode_header(&garbage), "invalid_signature", "invalid_exact_evm_payload_signature"));
    // Signed for chain 1 and claiming chain 1.
    let mainnet = X402Config { chain_id: 1, ..config.clone() };
    let mut on_mainnet = accepted.clone();
    on_mainnet.network = "eip155:1".into();
    cases.push((
        "wrong chain id",
        signed_payload(&mainnet, authorization(payer.address(), &pay_to, PRICE), &on_mainnet, &payer),
        "network_mismatch",
        "network_mismatch",
    ));
    // Signed for chain 1 but claiming ours: the signature does not recover.
    cases.push((
        "wrong chain id in the signature only",
        signed_payload(&mainnet, authorization(payer.address(), &pay_to, PRICE), &accepted, &payer),
        "invalid_signature",
        "invalid_exact_evm_payload_signature",
    ));
    cases.push((
        "insufficient balance",
        signed_payload(&config, authorization(poor.address(), &pay_to, PRICE), &accepted, &poor),
        "insufficient_funds",
        "invalid_exact_evm_insufficient_balance",
    ));
    cases.push(("not base64 JSON", "%%%not-a-payment%%%".into(), "payment_malformed", "invalid_payload"));

    for (i, (what, header, code, reason)) in cases.into_iter().enumerate() {
        let name = if what.contains("legacy") || i % 3 == 2 { X_PAYMENT } else { PAYMENT_SIGNATURE };
        let sent = if what.starts_with("replayed") { other_req("paid") } else { req("paid") };
        let (status, body, required) = post(&url, &sent, &[(name, header)]).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        let required = required.unwrap_or_else(|| panic!("{what}: no fresh PAYMENT-REQUIRED"));
        assert_eq!(required.error.as_deref(), Some(reason), "{what}");
        assert_eq!(snapshot(&n.client, &accounts).await, before, "{what}: the ledger moved");
    }
    // The node is fine and the payer can still pay.
    let (_, settled) = n.client.infer_paid(&req("paid"), &payer).await.unwrap();
    assert!(settled.unwrap().success);
}

#[tokio::test]
async fn concurrent_requests_cannot_spend_one_balance_twice() {
    let Paid { n, .. } = paid_node(|_| {}).await;
    let payer = funded(&n.client, 3 * PRICE).await;
    let tasks = (0..12).map(|_| {
        let (client, payer) = (n.client.clone(), payer.clone());
        tokio::spawn(async move { client.infer_paid(&req("paid"), &payer).await })
    });
    let results = futures::future::join_all(tasks).await;
    let mut ok = 0;
    for r in results {
        match r.unwrap() {
            Ok((_, settled)) => {
                assert!(settled.unwrap().success);
                ok += 1;
            }
            Err(ClientError::Api { status: 402, code, .. }) => assert_eq!(code, "insufficient_funds"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 3);
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!((a.balance.as_str(), a.escrow.as_str()), ("0", "0"));
}

/// No result, no charge: a request that times out in the runtime is refunded in full.
#[tokio::test]
async fn failed_execution_refunds_the_escrow() {
    let Paid { n, .. } = paid_node(|c| c.runtime.timeout_secs = 0).await;
    let payer = funded(&n.client, 10_000).await;
    let accepted = n.client.quote(&req("paid")).await.unwrap().accepts[0].clone();
    let header = encode_header(&sign_payment(&accepted, None, &payer, now()).unwrap());
    let (status, body, _) = post(&n.node.url(), &req("paid"), &[(PAYMENT_SIGNATURE, header)]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!((a.balance.as_str(), a.escrow.as_str()), ("10000", "0"));
}

fn register(name: &str, owner: &PrivateKeySigner, markup: u128) -> AppRegistration {
    let mut reg = AppRegistration {
        name: name.into(),
        owner: owner.address(),
        markup: markup.to_string(),
        timestamp: now(),
        signature: String::new(),
    };
    let sig = owner.sign_message_sync(reg.message().as_bytes()).unwrap();
    reg.signature = format!("0x{}", hex::encode(sig.as_bytes()));
    reg
}

#[tokio::test]
async fn apps_add_their_markup_and_earn_it() {
    let Paid { n, .. } = paid_node(|_| {}).await;
    let owner = PrivateKeySigner::random();
    let app = n.client.register_app(&register("chat", &owner, 50)).await.unwrap();
    assert!(app.id.starts_with("app-"));
    assert_eq!(n.client.app(&app.id).await.unwrap(), app);
    // Same owner and name again: conflict. Someone else signing for the owner: refused.
    let again = n.client.register_app(&register("chat", &owner, 50)).await.unwrap_err();
    assert!(matches!(again, ClientError::Api { status: 409, ref code, .. } if code == "app_exists"), "{again}");
    let mut forged = register("other", &owner, 50);
    forged.owner = PrivateKeySigner::random().address();
    let forged = n.client.register_app(&forged).await.unwrap_err();
    assert!(matches!(forged, ClientError::Api { status: 401, ref code, .. } if code == "bad_signature"), "{forged}");

    let payer = funded(&n.client, 10_000).await;
    let mut r = req("paid");
    r.app = Some(app.id.clone());
    assert_eq!(n.client.quote(&r).await.unwrap().accepts[0].amount, (PRICE + 50).to_string());
    let (resp, _) = n.client.infer_paid(&r, &payer).await.unwrap();
    assert_eq!(resp.price, (PRICE + 50).to_string());
    let earned = n.client.account(owner.address()).await.unwrap();
    assert_eq!(earned.earnings.get("app").map(String::as_str), Some("50"));

    r.app = Some("app-nope".into());
    let unknown = n.client.infer_paid(&r, &payer).await.unwrap_err();
    assert!(matches!(unknown, ClientError::Api { status: 404, ref code, .. } if code == "unknown_app"), "{unknown}");
}

fn transfer_req(from: &PrivateKeySigner, to: Address, amount: u128, nonce: &str) -> TransferRequest {
    let mut t = TransferRequest { from: from.address(), to, amount: amount.to_string(), nonce: nonce.into(), timestamp: now(), signature: String::new() };
    t.signature = format!("0x{}", hex::encode(from.sign_message_sync(t.message().as_bytes()).unwrap().as_bytes()));
    t
}

#[tokio::test]
async fn transfers_move_available_once_and_apps_list_by_owner() {
    let n = TestNode::start_with(|_| {}).await;
    let code = |e: ClientError| match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("{other}"),
    };
    let alice = funded(&n.client, 1_000).await;
    let bob = PrivateKeySigner::random().address();
    let t = transfer_req(&alice, bob, 300, "n-1");
    let done = n.client.send_transfer(&t).await.unwrap();
    assert_eq!((done.amount.as_str(), done.account.balance.as_str()), ("300", "700"));
    assert_eq!(n.client.account(bob).await.unwrap().balance, "300");
    // The same signed request again: applied once, on any gateway sharing the ledger.
    assert_eq!(code(n.client.send_transfer(&t).await.unwrap_err()), (409, "nonce_used".into()));
    // More than is available: nothing moves.
    assert_eq!(code(n.client.transfer(&alice, bob, 701).await.unwrap_err()), (402, "insufficient_funds".into()));
    // Someone else's signature, a changed amount, zero, to oneself: refused.
    let mut forged = transfer_req(&PrivateKeySigner::random(), bob, 1, "n-2");
    forged.from = alice.address();
    assert_eq!(code(n.client.send_transfer(&forged).await.unwrap_err()), (401, "bad_signature".into()));
    let mut raised = transfer_req(&alice, bob, 1, "n-3");
    raised.amount = "600".into();
    assert_eq!(code(n.client.send_transfer(&raised).await.unwrap_err()), (401, "bad_signature".into()));
    assert_eq!(code(n.client.send_transfer(&transfer_req(&alice, bob, 0, "n-4")).await.unwrap_err()).1, "invalid_amount");
    assert_eq!(code(n.client.send_transfer(&transfer_req(&alice, alice.address(), 1, "n-5")).await.unwrap_err()).1, "invalid_parameter");
    assert_eq!(n.client.account(alice.address()).await.unwrap().balance, "700");
    assert_eq!(n.client.account(bob).await.unwrap().balance, "300");
    let audit: Value = reqwest::get(format!("{}/v1/ledger/audit", n.node.url())).await.unwrap().json().await.unwrap();
    assert_eq!(audit["holds"], true, "{audit}");

    // An owner's apps, newest first; `owner` is required.
    let first = n.client.register_app(&register("one", &alice, 0)).await.unwrap();
    // Registration time is in milliseconds; apps registered in the same one list in id order.
    while verinet_primitives::unix_ms() <= first.created_at_ms {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let second = n.client.register_app(&register("two", &alice, 5)).await.unwrap();
    let listed = n.client.apps(alice.address()).await.unwrap();
    assert_eq!(listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [second.id.as_str(), first.id.as_str()]);
    assert!(n.client.apps(bob).await.unwrap().is_empty());
    let r = reqwest::get(format!("{}/v1/apps", n.node.url())).await.unwrap();
    assert_eq!(r.status(), 400);
}

pub(crate) fn cap(payer: &PrivateKeySigner, max_total: u128, models: &[&str], expiry: u64) -> SpendingCap {
    let mut c = SpendingCap {
        payer: payer.address(),
        max_total: max_total.to_string(),
        expiry,
        models: models.iter().map(|m| m.to_string()).collect(),
        nonce: rand_bytes().into(),
        signature: String::new(),
    };
    let sig = payer.sign_hash_sync(&c.signing_hash(31337).unwrap()).unwrap();
    c.signature = format!("0x{}", hex::encode(sig.as_bytes()));
    c
}

#[tokio::test]
async fn spending_sessions_pay_by_bearer_token_within_their_cap() {
    let Paid { n, .. } = paid_node(|_| {}).await;
    let payer = funded(&n.client, 100_000).await;
    let session = n.client.open_session(&cap(&payer, 2 * PRICE, &["paid"], now() + 600)).await.unwrap();
    let bearer = format!("Bearer {}", session.token);
    for _ in 0..2 {
        let (resp, settled) = n.client.infer_with_header(&req("paid"), "authorization", &bearer).await.unwrap();
        assert_eq!(resp.payment.unwrap().method, "session");
        assert!(settled.is_none(), "PAYMENT-RESPONSE is for x402 payments");
    }
    let over = n.client.infer_with_header(&req("paid"), "authorization", &bearer).await.unwrap_err();
    assert!(matches!(over, ClientError::Api { status: 402, ref code, .. } if code == "budget_exceeded"), "{over}");
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!(a.balance, (100_000 - 2 * PRICE).to_string());

    // Another model is not covered; an unknown token is not a session.
    let other = n.client.open_session(&cap(&payer, 10 * PRICE, &["paid"], now() + 600)).await.unwrap();
    // The bundled digits costs the operator fee here, and the session only covers "paid".
    let uncovered = n.client.infer_with_header(&req("digits"), "authorization", &format!("Bearer {}", other.token)).await.unwrap_err();
    assert!(matches!(uncovered, ClientError::Api { status: 402, ref code, .. } if code == "budget_exceeded"), "{uncovered}");
    let unknown = n.client.infer_with_header(&req("paid"), "authorization", "Bearer vn_nope").await.unwrap_err();
    assert!(matches!(unknown, ClientError::Api { status: 401, ref code, .. } if code == "session_invalid"), "{unknown}");

    // A cap signed by someone else, a replayed cap, an expired cap: refused.
    let mut forged = cap(&payer, PRICE, &[], now() + 600);
    forged.payer = PrivateKeySigner::random().address();
    let forged = n.client.open_session(&forged).await.unwrap_err();
    assert!(matches!(forged, ClientError::Api { status: 401, ref code, .. } if code == "bad_signature"), "{forged}");
    let once = cap(&payer, PRICE, &[], now() + 600);
    n.client.open_session(&once).await.unwrap();
    let replay = n.client.open_session(&once).await.unwrap_err();
    assert!(matches!(replay, ClientError::Api { status: 409, .. }), "{replay}");
    let expired = n.client.open_session(&cap(&payer, PRICE, &[], now() - 1)).await.unwrap_err();
    assert!(matches!(expired, ClientError::Api { status: 422, .. }), "{expired}");
    let zero = n.client.open_session(&cap(&payer, 0, &[], now() + 600)).await.unwrap_err();
    assert!(matches!(zero, ClientError::Api { status: 422, .. }), "{zero}");
}

#[tokio::test]
async fn facilitator_verifies_and_settles_once() {
    let Paid { n, .. } = paid_node(|_| {}).await;
    let http = reqwest::Client::new();
    let url = n.node.url();
    let supported: Supported = http.get(format!("{url}/x402/supported")).send().await.unwrap().json().await.unwrap();
    assert_eq!(supported.kinds[0].network, "eip155:31337");
    assert_eq!(supported.kinds[0].scheme, "exact");

    let payer = funded(&n.client, 5_000).await;
    let requirements = n.client.quote(&req("paid")).await.unwrap().accepts[0].clone();
    let payload = sign_payment(&requirements, None, &payer, now()).unwrap();
    let body = FacilitatorRequest { x402_version: 2, payment_payload: payload.clone(), payment_requirements: requirements.clone() };
    let verify: VerifyResponse = http.post(format!("{url}/x402/verify")).json(&body).send().await.unwrap().json().await.unwrap();
    assert!(verify.is_valid, "{verify:?}");
    let settle = |b: FacilitatorRequest| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.post(format!("{url}/x402/settle")).json(&b).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<SettleResponse>().await.unwrap()
        }
    };
    let first = settle(body.clone()).await;
    assert!(first.success, "{first:?}");
    let second = settle(body.clone()).await;
    assert_eq!((second.success, second.error_reason.as_deref()), (false, Some("invalid_exact_evm_nonce_already_used")));
    let verify: VerifyResponse = http.post(format!("{url}/x402/verify")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(verify.invalid_reason.as_deref(), Some("invalid_exact_evm_nonce_already_used"));
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!(a.balance, (5_000 - PRICE).to_string());
    let operator = n.client.account(requirements.pay_to.parse().unwrap()).await.unwrap();
    assert_eq!(operator.earnings.get("payee"), Some(&PRICE.to_string()));

    // A bad body is a 400 with a code; bad signatures are a 200 with isValid false.
    let bad = http.post(format!("{url}/x402/verify")).body("{}").header("content-type", "application/json").send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let mut forged = body;
    forged.payment_payload.payload.signature = format!("0x{}", "11".repeat(65));
    let verify: VerifyResponse = http.post(format!("{url}/x402/verify")).json(&forged).send().await.unwrap().json().await.unwrap();
    assert_eq!((verify.is_valid, verify.invalid_reason.as_deref()), (false, Some("invalid_exact_evm_payload_signature")));
}

#[tokio::test]
async fn faucet_runs_on_devnet_only_and_within_its_limit() {
    let n = TestNode::start_with(|c| c.payments.devnet = false).await;
    let e = n.client.faucet(Address::repeat_byte(1), Some(1)).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 403, ref code, .. } if code == "faucet_disabled"), "{e}");

    let n = TestNode::start_with(|c| c.payments.faucet_max = "100".into()).await;
    let e = n.client.faucet(Address::repeat_byte(1), Some(101)).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 422, ref code, .. } if code == "invalid_amount"), "{e}");
    let r = n.client.faucet(Address::repeat_byte(1), Some(100)).await.unwrap();
    assert_eq!(r.account.balance, "100");
    let bad = reqwest::get(format!("{}/v1/accounts/not-an-address", n.node.url())).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_address");
}

/// The official PyPI `x402` client (EVM exact scheme, httpx), unchanged, pays for an inference.
#[tokio::test]
async fn official_python_x402_client_pays_unchanged() {
    let Paid { n, creator } = paid_node(|_| {}).await;
    let payer = funded(&n.client, 10_000).await;
    let body = serde_json::to_value(req("paid")).unwrap();
    let result = crate::helpers::official_x402_client(format!("{}/v1/infer", n.node.url()), &payer, &body, "exact").await;
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["paid"], true, "{result}");
    assert_eq!(result["payment_response"]["success"], true, "{result}");
    assert!(result["payment_response_error"].is_null(), "{result}");
    assert_eq!(result["body"]["price"], PRICE.to_string());
    let a = n.client.account(payer.address()).await.unwrap();
    assert_eq!(a.balance, (10_000 - PRICE).to_string());
    let c = n.client.account(creator.address()).await.unwrap();
    assert_eq!(c.earnings, BTreeMap::from([("creator".to_string(), ROYALTY.to_string())]));
}

/// Every capture is answerable: the same payment sent again for the same request (a client
/// that lost the connection) gets the answer kept with the capture, byte for byte, with its
/// PAYMENT-RESPONSE and `x-verinet-answered-before`, and is not charged again; the receipt is
/// stored with the capture. Sent for other inputs, it is refused and names the request it paid.
#[tokio::test]
async fn a_spent_payment_sent_again_gets_its_answer_not_a_second_charge() {
    spent_payment_sent_again(0).await;
}

/// The same with captures answered before they are written (`capture_flush_ms`), the window
/// long enough that every read before the audit meets the capture in the writer's memory.
#[tokio::test]
async fn a_spent_payment_sent_again_gets_its_answer_when_captures_are_answered_first() {
    spent_payment_sent_again(60_000).await;
}

async fn spent_payment_sent_again(capture_flush_ms: u64) {
    let Paid { n, creator } = paid_node(|c| c.payments.capture_flush_ms = capture_flush_ms).await;
    let url = n.node.url();
    let payer = funded(&n.client, 10_000).await;
    let accepted = n.client.quote(&req("paid")).await.unwrap().accepts[0].clone();
    let pay_to = accepted.pay_to.clone();
    let auth = authorization(payer.address(), &pay_to, PRICE);
    let nonce = auth.nonce.clone();
    let lookup = format!("{url}/v1/payments/by-nonce/{}/{nonce}", payer.address());
    assert_eq!(reqwest::get(&lookup).await.unwrap().status(), StatusCode::NOT_FOUND, "nothing paid yet");
    let header = signed_payload(&terms(&pay_to), auth, &accepted, &payer);
    let send = |body: InferRequest, header: String| {
        let url = url.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{url}/v1/infer"))
                .header(PAYMENT_SIGNATURE, header)
                .json(&body)
                .send()
                .await
                .unwrap();
            let headers = resp.headers().clone();
            (resp.status(), headers, resp.text().await.unwrap())
        }
    };
    let (status, first_headers, first) = send(req("paid"), header.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first_headers.get("x-verinet-answered-before").is_none());
    let answer: Value = serde_json::from_str(&first).unwrap();
    let request_id = answer["request_id"].as_str().unwrap().to_owned();
    let accounts = [payer.address(), creator.address()];
    let after_first = snapshot(&n.client, &accounts).await;
    assert_eq!(after_first[0].balance, (10_000 - PRICE).to_string());

    for _ in 0..2 {
        let (status, headers, again) = send(req("paid"), header.clone()).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again, first, "the kept answer, byte for byte");
        assert_eq!(headers["x-verinet-answered-before"], request_id.as_str());
        let settle: SettleResponse = decode_header(headers["payment-response"].to_str().unwrap()).unwrap();
        let first_settle: SettleResponse = decode_header(first_headers["payment-response"].to_str().unwrap()).unwrap();
        assert_eq!((settle.transaction, settle.amount), (first_settle.transaction, first_settle.amount));
        assert_eq!(snapshot(&n.client, &accounts).await, after_first, "charged once");
    }
    // Or looked up by payer and nonce, without sending the request again.
    let r = reqwest::get(&lookup).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-verinet-answered-before"], request_id.as_str());
    assert_eq!(r.text().await.unwrap(), first, "the kept answer by lookup");
    assert_eq!(snapshot(&n.client, &accounts).await, after_first, "a lookup charges nothing");
    // The receipt was stored with the capture (no wait for the buffer).
    let receipt = n.client.get_json(&format!("/v1/receipts/{request_id}")).await.unwrap();
    assert_eq!(receipt["receipt"], answer["receipt"]);

    // The operator's audit: every invariant holds, nothing left in escrow, one capture.
    let audit = n.client.get_json("/v1/ledger/audit").await.unwrap();
    assert_eq!(audit["holds"], true, "{audit}");
    assert_eq!(audit["checks"].as_array().unwrap().len(), 3);
    assert_eq!((audit["escrow"].as_str(), audit["open_escrows"]["count"].as_u64()), (Some("0"), Some(0)));
    assert_eq!(audit["payments"]["captured"], 1);

    let (status, _, refused) = send(other_req("paid"), header).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let refused: Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(refused["error"]["code"], "nonce_used");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains(&request_id) && message.contains("other inputs"), "{message}");
    assert_eq!(snapshot(&n.client, &accounts).await, after_first);
    n.node.stop().await.unwrap();
}
