//! Scheme `upto` on EVM: a Permit2 `PermitWitnessTransferFrom` for at most `amount`, with
//! x402's witness `(to, facilitator, validAfter)`, as the official x402 2.25 Python client signs
//! it. Checked without a chain like `exact`: the ledger is the token, so the payer's ledger
//! balance stands in for the Permit2 allowance and the ERC-20 balance.
//!
//! Unlike `exact`, the signature is over Permit2's domain (`name: "Permit2"`, no version,
//! `verifyingContract` = [`PERMIT2_ADDRESS`]), not the token's, and `from` is not signed: the
//! verifier recovers the signer and compares.

use alloy_primitives::{Address, B256, U256, address};
use alloy_sol_types::{Eip712Domain, SolStruct};
use serde_json::json;

use crate::{
    PaymentError, VerifiedPayment, X402Config,
    exact::{parse_address, parse_u256, recover},
    wire::{
        Permit2Authorization, PaymentRequirements, ResourceInfo, SupportedKind, TokenPermissions, UptoPayload,
        UptoPaymentPayload, Witness,
    },
};

/// Uniswap's Permit2 contract, at this address on every chain: the EIP-712 `verifyingContract`.
pub const PERMIT2_ADDRESS: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// x402's `x402UptoPermit2Proxy`, the spender every upto permit must name. The Python client
/// hard-codes it; Permit2 binds `spender` to `msg.sender`, so a permit naming anyone else could be
/// pulled by them rather than settled through x402's checks.
pub const UPTO_PERMIT2_PROXY: Address = address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// A permit must outlive now by this much, like `exact`'s `validBefore` and the reference
/// facilitator: the time to escrow it.
const DEADLINE_MARGIN_SECS: u64 = 6;

/// The EIP-712 types, in their field order. alloy's `eip712_encode_type` appends the referenced
/// types sorted by name (`TokenPermissions`, `Witness`), which is the order EIP-712 and the
/// Python client's type string use; the test vector pins it.
mod typed {
    alloy_sol_types::sol! {
        #[derive(Debug)]
        struct TokenPermissions {
            address token;
            uint256 amount;
        }

        #[derive(Debug)]
        struct Witness {
            address to;
            address facilitator;
            uint256 validAfter;
        }

        #[derive(Debug)]
        struct PermitWitnessTransferFrom {
            TokenPermissions permitted;
            address spender;
            uint256 nonce;
            uint256 deadline;
            Witness witness;
        }
    }
}

impl X402Config {
    /// The `upto` requirement for at most `max_amount` base units, settled by `facilitator` (the
    /// node's address, signed into the permit's witness). Same network, asset, payee and timeout
    /// as [`X402Config::requirements`]; `extra` carries what x402's upto server adds.
    pub fn upto_requirements(&self, max_amount: u128, facilitator: Address) -> PaymentRequirements {
        PaymentRequirements {
            scheme: "upto".into(),
            network: self.network(),
            asset: self.asset.to_checksum(None),
            amount: max_amount.to_string(),
            pay_to: self.pay_to.to_checksum(None),
            max_timeout_seconds: self.max_timeout_secs,
            extra: json!({
                "facilitatorAddress": facilitator.to_checksum(None),
                "assetTransferMethod": "permit2",
                "name": self.token_name,
                "version": self.token_version,
                "symbol": self.token_symbol,
                "decimals": verinet_primitives::TOKEN_DECIMALS,
                "amountFormatted": verinet_primitives::format_amount(max_amount, verinet_primitives::TOKEN_DECIMALS),
            }),
        }
    }

    /// What `GET /x402/supported` lists for `upto` (x402's upto facilitator: just the
    /// facilitator address in `extra`).
    pub fn upto_supported_kind(&self, facilitator: Address) -> SupportedKind {
        SupportedKind {
            x402_version: 2,
            scheme: "upto".into(),
            network: self.network(),
            extra: Some(json!({"facilitatorAddress": facilitator.to_checksum(None)})),
        }
    }

    /// Checks an `upto` payload against `required` (the maximum the node asks, from
    /// [`X402Config::upto_requirements`]) at unix time `now`: scheme, network, asset and token,
    /// spender, recipient, facilitator, amount, deadline, `validAfter` and signature. Each
    /// failure is a distinct [`PaymentError`]; nothing here looks at the ledger.
    ///
    /// The [`VerifiedPayment`] carries the authorised maximum as `value` and
    /// [`permit2_nonce_key`] as `nonce`.
    pub fn verify_upto(
        &self,
        payload: &UptoPaymentPayload,
        required: &PaymentRequirements,
        now: u64,
    ) -> Result<VerifiedPayment, PaymentError> {
        if payload.x402_version != 2 {
            return Err(PaymentError::Malformed(format!(
                "upto is x402 v2 only, got x402Version {}",
                payload.x402_version
            )));
        }
        let (scheme, network) = match &payload.accepted {
            Some(a) => (a.scheme.as_str(), a.network.as_str()),
            None => (required.scheme.as_str(), required.network.as_str()),
        };
        if scheme != "upto" || required.scheme != "upto" {
            return Err(PaymentError::UnsupportedScheme(scheme.to_owned()));
        }
        if network != required.network || required.network != self.network() {
            return Err(PaymentError::NetworkMismatch { got: network.to_owned(), expected: self.network() });
        }
        let asset_mismatch =
            |got: &str| PaymentError::AssetMismatch { got: got.to_owned(), expected: self.asset.to_checksum(None) };
        for asset in [Some(&required.asset), payload.accepted.as_ref().map(|a| &a.asset)].into_iter().flatten() {
            if parse_address(asset, "asset").ok() != Some(self.asset) {
                return Err(asset_mismatch(asset));
            }
        }

        let auth = &payload.payload.permit2_authorization;
        let (from, permit) = parse_permit(auth)?;
        if permit.permitted.token != self.asset {
            return Err(asset_mismatch(&auth.permitted.token));
        }
        if permit.spender != UPTO_PERMIT2_PROXY {
            return Err(PaymentError::SpenderMismatch { got: permit.spender, expected: UPTO_PERMIT2_PROXY });
        }
        let pay_to = parse_address(&required.pay_to, "payTo")?;
        if permit.witness.to != pay_to || pay_to != self.pay_to {
            return Err(PaymentError::RecipientMismatch { got: permit.witness.to, expected: self.pay_to });
        }
        let facilitator = facilitator_of(required)?;
        if permit.witness.facilitator != facilitator {
            return Err(PaymentError::FacilitatorMismatch { got: permit.witness.facilitator, expected: facilitator });
        }
        // Verify is always against the maximum; the actual charge (<= it) is the ledger's business.
        if permit.permitted.amount != parse_u256(&required.amount, "amount")? {
            return Err(PaymentError::AmountMismatch {
                got: auth.permitted.amount.clone(),
                expected: required.amount.clone(),
            });
        }
        if permit.deadline < U256::from(now.saturating_add(DEADLINE_MARGIN_SECS)) {
            return Err(PaymentError::Expired { valid_before: auth.deadline.clone(), now });
        }
        if permit.witness.validAfter > U256::from(now.saturating_add(self.clock_skew_secs)) {
            return Err(PaymentError::NotYetValid { valid_after: auth.witness.valid_after.clone(), now });
        }

        let hash = permit.eip712_signing_hash(&permit2_domain(self.chain_id));
        let signer = recover(&payload.payload.signature, hash)?;
        if signer != from {
            return Err(PaymentError::InvalidSignature(format!("signed by {signer}, not by from = {from}")));
        }
        let value = u128::try_from(permit.permitted.amount)
            .map_err(|_| PaymentError::Malformed("permitted.amount out of range".into()))?;
        Ok(VerifiedPayment { payer: from, value, nonce: permit2_nonce_key(permit.nonce) })
    }
}

/// Permit2's EIP-712 domain on `chain_id`: `EIP712Domain(string name,uint256 chainId,address
/// verifyingContract)`, with no version.
pub fn permit2_domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(Some("Permit2".into()), None, Some(U256::from(chain_id)), Some(PERMIT2_ADDRESS), None)
}

/// The EIP-712 digest an `upto` permit is signed over on `chain_id`.
pub fn upto_signing_hash(chain_id: u64, auth: &Permit2Authorization) -> Result<B256, PaymentError> {
    let (_, permit) = parse_permit(auth)?;
    Ok(permit.eip712_signing_hash(&permit2_domain(chain_id)))
}

/// The ledger's nonce key for a Permit2 nonce: `permit2:0x` + 64 lowercase hex of the uint256.
///
/// The ledger claims `(payer, nonce)` once and forever in one table, which also holds EIP-3009
/// nonces (`0x` + 64 hex) and session and stake nonces of the same form. A Permit2 nonce is a
/// different number space (a bit in the owner's Permit2 bitmap, not a token's
/// `authorizationState`), so the prefix keeps the two apart: no `exact` nonce can collide with
/// an `upto` one. Fixed width means the decimal and the hex spelling of one nonce give one key.
pub fn permit2_nonce_key(nonce: U256) -> String {
    format!("permit2:0x{nonce:064x}")
}

/// The client side of `upto`, as the x402 2.25 Python client does it: signs a permit for
/// `req.amount` (the maximum) to the upto proxy, with the witness `(payTo,
/// extra.facilitatorAddress, validAfter 0)`, a random uint256 nonce (decimal) and the deadline
/// `now + maxTimeoutSeconds`, and wraps it in the v2 payload echoing `req` as `accepted`.
pub fn sign_upto_payment(
    req: &PaymentRequirements,
    resource: Option<ResourceInfo>,
    signer: &alloy_signer_local::PrivateKeySigner,
    now: u64,
) -> Result<UptoPaymentPayload, PaymentError> {
    use alloy_signer::SignerSync;
    use rand::RngCore;

    let chain_id = req
        .network
        .strip_prefix("eip155:")
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| PaymentError::NetworkMismatch {
            got: req.network.clone(),
            expected: "eip155:<chainId>".into(),
        })?;
    // The Python client refuses a non-positive timeout rather than defaulting it.
    if req.max_timeout_seconds == 0 {
        return Err(PaymentError::Malformed("maxTimeoutSeconds must be positive".into()));
    }
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let checksum = |s: &str, field: &str| parse_address(s, field).map(|a| a.to_checksum(None));
    let permit2_authorization = Permit2Authorization {
        from: signer.address().to_checksum(None),
        permitted: TokenPermissions { token: checksum(&req.asset, "asset")?, amount: req.amount.clone() },
        spender: UPTO_PERMIT2_PROXY.to_checksum(None),
        nonce: U256::from_be_bytes(nonce).to_string(),
        deadline: now.saturating_add(req.max_timeout_seconds).to_string(),
        witness: Witness {
            to: checksum(&req.pay_to, "payTo")?,
            facilitator: facilitator_of(req)?.to_checksum(None),
            valid_after: "0".into(),
        },
    };
    let hash = upto_signing_hash(chain_id, &permit2_authorization)?;
    let sig = signer.sign_hash_sync(&hash).map_err(|e| PaymentError::InvalidSignature(e.to_string()))?;
    Ok(UptoPaymentPayload {
        x402_version: 2,
        payload: UptoPayload { permit2_authorization, signature: format!("0x{}", hex::encode(sig.as_bytes())) },
        accepted: Some(req.clone()),
        resource,
    })
}

/// `from` and the typed message, every field parsed; a bad number or address is `Malformed`.
fn parse_permit(auth: &Permit2Authorization) -> Result<(Address, typed::PermitWitnessTransferFrom), PaymentError> {
    let permit = typed::PermitWitnessTransferFrom {
        permitted: typed::TokenPermissions {
            token: parse_address(&auth.permitted.token, "permitted.token")?,
            amount: parse_u256(&auth.permitted.amount, "permitted.amount")?,
        },
        spender: parse_address(&auth.spender, "spender")?,
        nonce: parse_uint256_nonce(&auth.nonce)?,
        deadline: parse_u256(&auth.deadline, "deadline")?,
        witness: typed::Witness {
            to: parse_address(&auth.witness.to, "witness.to")?,
            facilitator: parse_address(&auth.witness.facilitator, "witness.facilitator")?,
            validAfter: parse_u256(&auth.witness.valid_after, "witness.validAfter")?,
        },
    };
    Ok((parse_address(&auth.from, "from")?, permit))
}

/// A uint256 nonce: decimal, as the Python client sends it, or `0x` + 1 to 64 hex digits, as
/// x402's spec example shows it.
fn parse_uint256_nonce(s: &str) -> Result<U256, PaymentError> {
    match s.strip_prefix("0x") {
        Some(h) if !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            U256::from_str_radix(h, 16).map_err(|e| PaymentError::Malformed(format!("nonce {s:?}: {e}")))
        }
        Some(_) => Err(PaymentError::Malformed(format!("nonce {s:?} is not a uint256 in hex"))),
        None => parse_u256(s, "nonce"),
    }
}

/// The requirement's `extra.facilitatorAddress`, which an `upto` requirement must carry.
fn facilitator_of(req: &PaymentRequirements) -> Result<Address, PaymentError> {
    let s = req.extra.get("facilitatorAddress").and_then(|v| v.as_str()).ok_or_else(|| {
        PaymentError::Malformed("upto requirements need extra.facilitatorAddress".into())
    })?;
    parse_address(s, "extra.facilitatorAddress")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;
    use crate::{
        sign_payment,
        wire::{AnyPayment, decode_payment, encode_header},
    };

    const TOKEN: Address = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");
    const PAY_TO: Address = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
    const FACILITATOR: Address = address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");

    /// The notes' test-vector terms: chain 31337, the Hardhat token, 300 s, 30 s skew.
    fn config() -> X402Config {
        X402Config { asset: TOKEN, ..X402Config::devnet(PAY_TO) }
    }

    fn signed(now: u64) -> (PrivateKeySigner, PaymentRequirements, UptoPaymentPayload) {
        let payer = PrivateKeySigner::random();
        let req = config().upto_requirements(5000, FACILITATOR);
        let payload = sign_upto_payment(&req, None, &payer, now).unwrap();
        (payer, req, payload)
    }

    #[test]
    fn python_test_vector_digest_and_signature() {
        // docs/x402-upto-notes.md §2, computed by x402 2.25's own builder and eth_account.
        assert_eq!(
            typed::PermitWitnessTransferFrom::eip712_encode_type(),
            "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,\
             Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,\
             uint256 validAfter)"
        );
        assert_eq!(
            format!("{:#x}", permit2_domain(31337).separator()),
            "0x4d553c58ae79a6c4ba64f0e690a5d1cd2deff8c6b91cf38300e0f2b76f9ee346"
        );
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap();
        assert_eq!(key.address(), address!("0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"));
        let auth = Permit2Authorization {
            from: key.address().to_checksum(None),
            permitted: TokenPermissions { token: TOKEN.to_checksum(None), amount: "5000".into() },
            spender: UPTO_PERMIT2_PROXY.to_checksum(None),
            nonce: "12345".into(),
            deadline: "1800000000".into(),
            witness: Witness {
                to: PAY_TO.to_checksum(None),
                facilitator: FACILITATOR.to_checksum(None),
                valid_after: "0".into(),
            },
        };
        let (_, permit) = parse_permit(&auth).unwrap();
        assert_eq!(
            format!("{:#x}", permit.eip712_hash_struct()),
            "0x60d34dbef4ca3b4292de4751f0ccea09461c4af8cfd46c1811546a48b38d96d7"
        );
        let digest = upto_signing_hash(31337, &auth).unwrap();
        assert_eq!(format!("{digest:#x}"), "0x17e6e6e6efa2bd9c8d81a7abf5c586fe823a82df41287616ca389d7cb1cc7056");
        let sig = format!("0x{}", hex::encode(key.sign_hash_sync(&digest).unwrap().as_bytes()));
        assert_eq!(
            sig,
            "0x9104c83aa52ee879b6d9a69dbdf879209e878fd4c522793dc618e48ce823cc00\
             6fd0f2bf0ae80fb8162a867d80dd1acb2ad982e8b8feebf40803cfda2b0cbe121b"
        );
        // And the verifier accepts the vector as the Python client would send it.
        let payload = UptoPaymentPayload {
            x402_version: 2,
            payload: UptoPayload { permit2_authorization: auth, signature: sig },
            accepted: None,
            resource: None,
        };
        let ok = config().verify_upto(&payload, &config().upto_requirements(5000, FACILITATOR), 1_700_000_000).unwrap();
        assert_eq!((ok.payer, ok.value), (key.address(), 5000));
        assert_eq!(ok.nonce, format!("permit2:0x{}3039", "0".repeat(60)));
    }

    #[test]
    fn signed_header_round_trips_through_decode_payment() {
        let (payer, req, payload) = signed(1_000);
        let header = encode_header(&payload);
        for h in [header.as_str(), header.trim_end_matches('=')] {
            let AnyPayment::Upto(back) = decode_payment(h).unwrap() else { panic!("not decoded as upto") };
            assert_eq!(back, payload);
            let ok = config().verify_upto(&back, &req, 1_000).unwrap();
            assert_eq!((ok.payer, ok.value), (payer.address(), 5000));
            let nonce: U256 = payload.payload.permit2_authorization.nonce.parse().unwrap();
            assert_eq!(ok.nonce, permit2_nonce_key(nonce));
            assert!(ok.nonce.starts_with("permit2:0x") && ok.nonce.len() == "permit2:0x".len() + 64);
        }
    }

    #[test]
    fn signed_payload_has_the_python_client_shape() {
        let (payer, req, payload) = signed(1_000);
        let v = serde_json::to_value(&payload).unwrap();
        let a = &v["payload"]["permit2Authorization"];
        assert_eq!(a["from"], payer.address().to_checksum(None));
        assert_eq!(a["permitted"], json!({"token": TOKEN.to_checksum(None), "amount": "5000"}));
        assert_eq!(a["spender"], "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");
        assert_eq!(a["deadline"], "1300");
        assert_eq!(
            a["witness"],
            json!({"to": PAY_TO.to_checksum(None), "facilitator": FACILITATOR.to_checksum(None), "validAfter": "0"})
        );
        assert!(a["nonce"].as_str().unwrap().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(v["accepted"], serde_json::to_value(&req).unwrap());
        assert_eq!(v["x402Version"], 2);
        assert!(v["payload"]["signature"].as_str().unwrap().len() == 2 + 130);
    }

    #[test]
    fn hex_nonce_is_accepted_and_keys_like_its_decimal() {
        let (_, req, mut payload) = signed(1_000);
        let decimal = config().verify_upto(&payload, &req, 1_000).unwrap().nonce;
        let n: U256 = payload.payload.permit2_authorization.nonce.parse().unwrap();
        // The same uint256, so the same digest: the signature still holds.
        payload.payload.permit2_authorization.nonce = format!("{n:#x}");
        assert_eq!(config().verify_upto(&payload, &req, 1_000).unwrap().nonce, decimal);
    }

    #[test]
    fn each_refusal_has_its_own_error() {
        let (payer, req, payload) = signed(1_000);
        let other = Address::repeat_byte(0x42);
        let c = config();
        let mut codes = HashSet::new();

        let mut p = payload.clone();
        p.payload.permit2_authorization.spender = other.to_checksum(None);
        let e = c.verify_upto(&p, &req, 1_000).unwrap_err();
        assert_eq!(e, PaymentError::SpenderMismatch { got: other, expected: UPTO_PERMIT2_PROXY });
        codes.insert((e.code(), e.x402_reason()));

        let elsewhere = c.upto_requirements(5000, other);
        let e = c.verify_upto(&payload, &elsewhere, 1_000).unwrap_err();
        assert_eq!(e, PaymentError::FacilitatorMismatch { got: FACILITATOR, expected: other });
        codes.insert((e.code(), e.x402_reason()));

        let e = c.verify_upto(&payload, &c.upto_requirements(4999, FACILITATOR), 1_000).unwrap_err();
        assert!(matches!(e, PaymentError::AmountMismatch { .. }), "{e:?}");
        codes.insert((e.code(), e.x402_reason()));

        let e = c.verify_upto(&payload, &req, 1_295).unwrap_err();
        assert!(matches!(e, PaymentError::Expired { .. }), "{e:?}");
        codes.insert((e.code(), e.x402_reason()));

        let mut p = payload.clone();
        p.payload.permit2_authorization.from = other.to_checksum(None);
        let e = c.verify_upto(&p, &req, 1_000).unwrap_err();
        assert!(matches!(&e, PaymentError::InvalidSignature(m) if m.contains(&payer.address().to_string())), "{e:?}");
        codes.insert((e.code(), e.x402_reason()));

        let mut p = payload.clone();
        p.payload.permit2_authorization.permitted.amount = "5000.0".into();
        let e = c.verify_upto(&p, &req, 1_000).unwrap_err();
        assert!(matches!(e, PaymentError::Malformed(_)), "{e:?}");
        codes.insert((e.code(), e.x402_reason()));

        assert_eq!(codes.len(), 6, "{codes:?}");
    }

    #[test]
    fn time_window_edges() {
        let (_, req, payload) = signed(1_000); // deadline 1300
        let c = config();
        assert!(c.verify_upto(&payload, &req, 1_294).is_ok());
        assert!(matches!(c.verify_upto(&payload, &req, 1_295), Err(PaymentError::Expired { .. })));
        // validAfter is signed: a later one is refused for the window before the signature.
        let mut early = payload.clone();
        early.payload.permit2_authorization.witness.valid_after = "1031".into();
        assert!(matches!(c.verify_upto(&early, &req, 1_000), Err(PaymentError::NotYetValid { .. })));
        early.payload.permit2_authorization.witness.valid_after = "1030".into();
        assert!(matches!(c.verify_upto(&early, &req, 1_000), Err(PaymentError::InvalidSignature(_))));
    }

    #[test]
    fn malformed_numbers_and_addresses_are_refused_not_truncated() {
        let (_, req, payload) = signed(1_000);
        let too_big = format!("1{}", "0".repeat(78)); // > 2^256
        type Set = fn(&mut Permit2Authorization, String);
        let cases: [(&str, Set); 5] = [
            ("amount", |a, v| a.permitted.amount = v),
            ("deadline", |a, v| a.deadline = v),
            ("validAfter", |a, v| a.witness.valid_after = v),
            ("nonce", |a, v| a.nonce = v),
            ("token", |a, v| a.permitted.token = v),
        ];
        for (field, set) in cases {
            for bad in ["-5", "5.0", "", " 5", "0x", "0xzz", too_big.as_str(), &format!("0x1{}", "0".repeat(64))] {
                let mut p = payload.clone();
                set(&mut p.payload.permit2_authorization, bad.to_owned());
                let e = config().verify_upto(&p, &req, 1_000).unwrap_err();
                assert!(matches!(e, PaymentError::Malformed(_)), "{field} = {bad:?}: {e:?}");
            }
        }
        // Hex is for the nonce only: a hex amount is refused.
        let mut p = payload.clone();
        p.payload.permit2_authorization.permitted.amount = "0x1388".into();
        assert!(matches!(config().verify_upto(&p, &req, 1_000), Err(PaymentError::Malformed(_))));
    }

    #[test]
    fn scheme_network_asset_and_recipient_mismatches() {
        let (_, req, payload) = signed(1_000);
        let c = config();
        let exact_req = c.requirements(5000);
        assert!(matches!(c.verify_upto(&payload, &exact_req, 1_000), Err(PaymentError::UnsupportedScheme(_))));
        let other_chain = X402Config { chain_id: 8453, ..c.clone() };
        assert!(matches!(other_chain.verify_upto(&payload, &req, 1_000), Err(PaymentError::NetworkMismatch { .. })));
        let other_asset = X402Config { asset: Address::repeat_byte(7), ..c.clone() };
        assert!(matches!(other_asset.verify_upto(&payload, &req, 1_000), Err(PaymentError::AssetMismatch { .. })));
        let mut p = payload.clone();
        p.payload.permit2_authorization.permitted.token = Address::repeat_byte(7).to_checksum(None);
        assert!(matches!(c.verify_upto(&p, &req, 1_000), Err(PaymentError::AssetMismatch { .. })));
        let other_payee = X402Config { pay_to: Address::repeat_byte(9), ..c.clone() };
        assert!(matches!(other_payee.verify_upto(&payload, &req, 1_000), Err(PaymentError::RecipientMismatch { .. })));
        let mut v1 = payload.clone();
        v1.x402_version = 1;
        assert!(matches!(c.verify_upto(&v1, &req, 1_000), Err(PaymentError::Malformed(_))));
        let mut no_facilitator = req.clone();
        no_facilitator.extra = json!({"name": "verinet USD", "version": "1"});
        assert!(sign_upto_payment(&no_facilitator, None, &PrivateKeySigner::random(), 1_000).is_err());
        assert!(matches!(c.verify_upto(&payload, &no_facilitator, 1_000), Err(PaymentError::Malformed(_))));
    }

    #[test]
    fn exact_header_still_decodes_as_exact() {
        let c = config();
        let req = c.requirements(1234);
        let payload = sign_payment(&req, None, &PrivateKeySigner::random(), 1_000).unwrap();
        let AnyPayment::Exact(back) = decode_payment(&encode_header(&payload)).unwrap() else {
            panic!("not decoded as exact")
        };
        assert_eq!(back, payload);
        assert!(c.verify(&back, &req, 1_000).is_ok());
    }

    #[test]
    fn unknown_payload_shapes_are_refused() {
        let (_, _, payload) = signed(1_000);
        let mut v = serde_json::to_value(&payload).unwrap();
        // x402's `exact` over Permit2: a witness without a facilitator.
        v["payload"]["permit2Authorization"]["witness"].as_object_mut().unwrap().remove("facilitator");
        assert!(decode_payment(&encode_header(&v)).unwrap_err().contains("exact over Permit2"));
        assert!(decode_payment(&encode_header(&json!({"x402Version": 2, "payload": {}}))).is_err());
        assert!(decode_payment("not base64!").is_err());
        // An upto shape with a field missing is a shape error, not an exact payload.
        let mut v = serde_json::to_value(&payload).unwrap();
        v["payload"]["permit2Authorization"].as_object_mut().unwrap().remove("deadline");
        assert!(decode_payment(&encode_header(&v)).unwrap_err().contains("expected JSON"));
    }

    #[test]
    fn requirements_and_supported_kind_shapes() {
        let c = config();
        let req = serde_json::to_value(c.upto_requirements(5000, FACILITATOR)).unwrap();
        assert_eq!(
            req,
            json!({"scheme": "upto", "network": "eip155:31337", "asset": TOKEN.to_checksum(None), "amount": "5000",
                   "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 300,
                   "extra": {"facilitatorAddress": FACILITATOR.to_checksum(None), "assetTransferMethod": "permit2",
                             "name": "verinet USD", "version": "1", "symbol": "vUSD", "decimals": 18,
                             "amountFormatted": "0.000000000000005"}})
        );
        let kind = serde_json::to_value(c.upto_supported_kind(FACILITATOR)).unwrap();
        assert_eq!(
            kind,
            json!({"x402Version": 2, "scheme": "upto", "network": "eip155:31337",
                   "extra": {"facilitatorAddress": FACILITATOR.to_checksum(None)}})
        );
    }
}
