//! An `upto` header signed by the official x402 Python client (PyPI x402 2.25.0), made by
//! `tests/fixtures/make_upto_fixture.py` against the 402 verinet's devnet terms advertise.

use alloy_primitives::{Address, U256, address};
use serde::Deserialize;
use verinet_payments::{
    PaymentError, X402Config, permit2_nonce_key,
    wire::{AnyPayment, PaymentRequired, decode_payment},
};

const PAY_TO: Address = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
const FACILITATOR: Address = address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    /// Unix seconds just before the client signed.
    signed_at: u64,
    payer: Address,
    payment_required: PaymentRequired,
    payment_signature: String,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../fixtures/upto_python_2_25.json")).expect("fixture parses")
}

#[test]
fn python_client_upto_header_verifies() {
    let f = fixture();
    let config = X402Config::devnet(PAY_TO);
    let required = config.upto_requirements(5000, FACILITATOR);
    // The client signed exactly what verinet advertises.
    assert_eq!(f.payment_required.accepts, vec![required.clone()]);

    let AnyPayment::Upto(payload) = decode_payment(&f.payment_signature).expect("decodes") else {
        panic!("the Python upto header did not decode as upto")
    };
    assert_eq!(payload.accepted.as_ref(), Some(&required));
    let ok = config.verify_upto(&payload, &required, f.signed_at).expect("verify_upto accepts it");
    assert_eq!((ok.payer, ok.value), (f.payer, 5000));
    let nonce: U256 = payload.payload.permit2_authorization.nonce.parse().expect("decimal nonce");
    assert_eq!(ok.nonce, permit2_nonce_key(nonce));

    // The window is the client's: deadline = its clock + maxTimeoutSeconds, validAfter 0.
    let deadline: u64 = payload.payload.permit2_authorization.deadline.parse().expect("decimal deadline");
    assert!((f.signed_at + 300..=f.signed_at + 302).contains(&deadline), "deadline {deadline}");
    assert!(config.verify_upto(&payload, &required, deadline - 6).is_ok());
    assert!(matches!(config.verify_upto(&payload, &required, deadline - 5), Err(PaymentError::Expired { .. })));
}

#[test]
fn python_client_upto_header_is_bound_to_its_facilitator_and_maximum() {
    let f = fixture();
    let config = X402Config::devnet(PAY_TO);
    let Ok(AnyPayment::Upto(payload)) = decode_payment(&f.payment_signature) else { panic!("not upto") };
    let other = config.upto_requirements(5000, Address::repeat_byte(0x42));
    assert!(matches!(
        config.verify_upto(&payload, &other, f.signed_at),
        Err(PaymentError::FacilitatorMismatch { .. })
    ));
    let lower = config.upto_requirements(1430, FACILITATOR);
    assert!(matches!(config.verify_upto(&payload, &lower, f.signed_at), Err(PaymentError::AmountMismatch { .. })));
    // A tampered signed field (the maximum raised, requirement to match) no longer recovers the payer.
    let mut raised = payload.clone();
    raised.payload.permit2_authorization.permitted.amount = "50000".into();
    let raised_req = config.upto_requirements(50000, FACILITATOR);
    assert!(matches!(
        config.verify_upto(&raised, &raised_req, f.signed_at),
        Err(PaymentError::InvalidSignature(_))
    ));
}
