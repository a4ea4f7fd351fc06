//! Fuzz target: x402 payment headers. Whatever a client sends in `PAYMENT-SIGNATURE`, decoding
//! and verifying answer Ok or a `PaymentError` (never a panic), and nothing but a payload signed
//! by its payer for what was asked verifies.
//!
//! Cases per property: `VERINET_FUZZ_CASES` (default 512).

use alloy_primitives::Address;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use proptest::prelude::*;
use serde_json::{Value, json};
use verinet_payments::{X402Config, wire::{AnyPayment, decode_payment}};

fn cases() -> u32 {
    std::env::var("VERINET_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[0-9a-fA-Fx]{0,70}".prop_map(Value::String),
        any::<u64>().prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        Just(json!("0x0000000000000000000000000000000000000001")),
        Just(json!("exact")),
        Just(json!("upto")),
        Just(json!("eip155:8453")),
    ]
}

/// A payload shaped like x402's, with fields that may be anything.
fn payload() -> impl Strategy<Value = Value> {
    (text(), text(), text(), text(), text(), text(), text(), text(), 0u64..4).prop_map(|(scheme, network, from, to, value, nonce, sig, asset, version)| {
        json!({
            "x402Version": version,
            "scheme": scheme,
            "network": network,
            "accepted": {"scheme": scheme, "network": network, "asset": asset, "payTo": to, "amount": value, "maxTimeoutSeconds": 60, "extra": {}},
            "payload": {
                "signature": sig,
                "authorization": {"from": from, "to": to, "value": value, "validAfter": "0", "validBefore": value, "nonce": nonce},
                "permit2Authorization": {"from": from, "spender": to, "nonce": value, "deadline": value,
                    "permitted": {"token": asset, "amount": value}, "witness": {"to": to, "validAfter": "0", "extra": "0x"}},
            },
        })
    })
}

fn verify_all(config: &X402Config, p: &AnyPayment) {
    let exact = config.requirements(1_000);
    let upto = config.upto_requirements(1_000, Address::ZERO);
    match p {
        AnyPayment::Exact(p) => {
            assert!(config.verify(p, &exact, 1).is_err(), "an unsigned, made-up payload verified");
        }
        AnyPayment::Upto(p) => {
            assert!(config.verify_upto(p, &upto, 1).is_err(), "an unsigned, made-up upto payload verified");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_header_text(s in ".{0,400}") {
        if let Ok(p) = decode_payment(&s) {
            verify_all(&X402Config::devnet(Address::ZERO), &p);
        }
    }

    #[test]
    fn shaped_payloads(v in payload(), mangle in prop::option::of((any::<prop::sample::Index>(), any::<u8>()))) {
        let mut json = serde_json::to_vec(&v).unwrap_or_default();
        if let Some((at, b)) = mangle && !json.is_empty() {
            let i = at.index(json.len());
            json[i] = b;
        }
        let header = B64.encode(&json);
        if let Ok(p) = decode_payment(&header) {
            verify_all(&X402Config::devnet(Address::ZERO), &p);
        }
    }
}
