//! Scheme `exact` on EVM: EIP-3009 `TransferWithAuthorization` over the ledger token's EIP-712
//! domain, checked without a chain (the ledger is the token).

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use serde_json::json;

use crate::{
    PaymentError,
    wire::{Authorization, PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SupportedKind},
};

sol! {
    /// EIP-3009 `TransferWithAuthorization`, the message x402's `exact` EVM scheme signs.
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// A node's x402 terms: its chain, token and payee. From the `[payments]` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X402Config {
    /// EIP-155 chain id (devnet default 31337).
    pub chain_id: u64,
    /// The ledger token's address (EIP-712 `verifyingContract`, x402 `asset`).
    pub asset: Address,
    /// The token's EIP-712 domain name (x402 `extra.name`).
    pub token_name: String,
    /// The token's EIP-712 domain version (x402 `extra.version`).
    pub token_version: String,
    /// The token's symbol, for people (x402 `extra.symbol`; amounts stay in base units of
    /// [`TOKEN_DECIMALS`](verinet_primitives::TOKEN_DECIMALS), `extra.decimals`).
    pub token_symbol: String,
    /// Where authorizations must pay to: the gateway's escrow account.
    pub pay_to: Address,
    /// `maxTimeoutSeconds` advertised: clients sign authorizations valid for this long.
    pub max_timeout_secs: u64,
    /// Seconds of clock skew tolerated on `validAfter` (a client clock slightly ahead).
    pub clock_skew_secs: u64,
}

/// The devnet token address: the last 20 bytes of keccak256("verinet devnet token").
pub fn devnet_asset() -> Address {
    Address::from_slice(&keccak256(b"verinet devnet token")[12..])
}

/// A payload that passed every check that needs no database: the ledger still claims the nonce
/// and takes the balance, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    /// Recovered signer, equal to `authorization.from`.
    pub payer: Address,
    /// Authorized amount: the price (`exact`) or the maximum the permit allows (`upto`).
    pub value: u128,
    /// The key the ledger claims once per payer: `0x` + 64 lowercase hex (`exact`, the EIP-3009
    /// bytes32 nonce), or `permit2:0x` + 64 lowercase hex (`upto`, see
    /// [`permit2_nonce_key`](crate::permit2_nonce_key)).
    pub nonce: String,
}

impl X402Config {
    /// The devnet defaults (`verinet up`): chain 31337, the devnet token "verinet USD" version
    /// "1", authorizations valid 300 s, 30 s of clock skew.
    pub fn devnet(pay_to: Address) -> Self {
        Self {
            chain_id: 31337,
            asset: devnet_asset(),
            token_name: "verinet USD".into(),
            token_version: "1".into(),
            token_symbol: "vUSD".into(),
            pay_to,
            max_timeout_secs: 300,
            clock_skew_secs: 30,
        }
    }

    /// `eip155:<chainId>`.
    pub fn network(&self) -> String {
        format!("eip155:{}", self.chain_id)
    }

    /// The token's EIP-712 domain.
    pub fn domain(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(self.token_name.clone().into()),
            Some(self.token_version.clone().into()),
            Some(U256::from(self.chain_id)),
            Some(self.asset),
            None,
        )
    }

    /// What a requirement's `extra` says of the token: its EIP-712 domain (`name`, `version`,
    /// which x402 clients sign with), and for people its `symbol`, `decimals` and the amount in
    /// tokens (`amountFormatted`, when there is one).
    pub fn token_extra(&self, amount: Option<u128>) -> serde_json::Value {
        let mut extra = json!({
            "name": self.token_name,
            "version": self.token_version,
            "symbol": self.token_symbol,
            "decimals": verinet_primitives::TOKEN_DECIMALS,
        });
        if let Some(a) = amount {
            extra["amountFormatted"] = json!(verinet_primitives::format_amount(a, verinet_primitives::TOKEN_DECIMALS));
        }
        extra
    }

    /// The one requirement this node offers for `amount` base units.
    pub fn requirements(&self, amount: u128) -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: self.network(),
            asset: self.asset.to_checksum(None),
            amount: amount.to_string(),
            pay_to: self.pay_to.to_checksum(None),
            max_timeout_seconds: self.max_timeout_secs,
            extra: self.token_extra(Some(amount)),
        }
    }

    /// The body of `PAYMENT-REQUIRED` for `amount` at `url`, with `error` set after a refusal.
    pub fn payment_required(&self, amount: u128, url: &str, error: Option<&PaymentError>) -> PaymentRequired {
        PaymentRequired {
            x402_version: 2,
            error: error.map(|e| e.x402_reason().to_owned()),
            resource: Some(ResourceInfo {
                url: url.to_owned(),
                description: Some("verinet inference".into()),
                mime_type: Some("application/json".into()),
            }),
            accepts: vec![self.requirements(amount)],
        }
    }

    /// What `GET /x402/supported` lists.
    pub fn supported_kind(&self) -> SupportedKind {
        SupportedKind {
            x402_version: 2,
            scheme: "exact".into(),
            network: self.network(),
            extra: Some(self.token_extra(None)),
        }
    }

    /// Checks a payload against `required` (what the node asks) at unix time `now`: scheme,
    /// network (chain id), asset, recipient, amount, validity window and signature. Each
    /// failure is a distinct [`PaymentError`].
    pub fn verify(
        &self,
        payload: &PaymentPayload,
        required: &PaymentRequirements,
        now: u64,
    ) -> Result<VerifiedPayment, PaymentError> {
        let (scheme, network) = match &payload.accepted {
            Some(a) => (a.scheme.as_str(), a.network.as_str()),
            None => (
                payload.scheme.as_deref().unwrap_or_default(),
                payload.network.as_deref().unwrap_or_default(),
            ),
        };
        if scheme != "exact" || required.scheme != "exact" {
            return Err(PaymentError::UnsupportedScheme(scheme.to_owned()));
        }
        if network != required.network || required.network != self.network() {
            return Err(PaymentError::NetworkMismatch { got: network.to_owned(), expected: self.network() });
        }
        if let Some(a) = &payload.accepted
            && parse_address(&a.asset, "asset").ok() != Some(self.asset)
        {
            return Err(PaymentError::AssetMismatch { got: a.asset.clone(), expected: self.asset.to_checksum(None) });
        }

        let auth = &payload.payload.authorization;
        let from = parse_address(&auth.from, "from")?;
        let to = parse_address(&auth.to, "to")?;
        let pay_to = parse_address(&required.pay_to, "payTo")?;
        if to != pay_to || pay_to != self.pay_to {
            return Err(PaymentError::RecipientMismatch { got: to, expected: self.pay_to });
        }
        let value = parse_u256(&auth.value, "value")?;
        let price = parse_u256(&required.amount, "amount")?;
        if value != price {
            return Err(PaymentError::AmountMismatch { got: auth.value.clone(), expected: required.amount.clone() });
        }
        let valid_after = parse_u256(&auth.valid_after, "validAfter")?;
        let valid_before = parse_u256(&auth.valid_before, "validBefore")?;
        // Like the reference facilitator: the authorization must outlive the next few seconds
        // (the time to escrow it), and must have started, allowing for a client clock ahead.
        if valid_before < U256::from(now.saturating_add(6)) {
            return Err(PaymentError::Expired { valid_before: auth.valid_before.clone(), now });
        }
        if valid_after > U256::from(now.saturating_add(self.clock_skew_secs)) {
            return Err(PaymentError::NotYetValid { valid_after: auth.valid_after.clone(), now });
        }
        let nonce = parse_nonce(&auth.nonce)?;

        let message = TransferWithAuthorization {
            from,
            to,
            value,
            validAfter: valid_after,
            validBefore: valid_before,
            nonce,
        };
        let hash = message.eip712_signing_hash(&self.domain());
        let signer = recover(&payload.payload.signature, hash)?;
        if signer != from {
            return Err(PaymentError::InvalidSignature(format!("signed by {signer}, not by from = {from}")));
        }
        let value = u128::try_from(value).map_err(|_| PaymentError::Malformed("value out of range".into()))?;
        Ok(VerifiedPayment { payer: from, value, nonce: format!("{nonce:#x}") })
    }
}

/// Signs `auth` with the EIP-712 hash of this domain (the client side, for the CLI and tests).
pub fn authorization_hash(config: &X402Config, auth: &Authorization) -> Result<B256, PaymentError> {
    let message = TransferWithAuthorization {
        from: parse_address(&auth.from, "from")?,
        to: parse_address(&auth.to, "to")?,
        value: parse_u256(&auth.value, "value")?,
        validAfter: parse_u256(&auth.valid_after, "validAfter")?,
        validBefore: parse_u256(&auth.valid_before, "validBefore")?,
        nonce: parse_nonce(&auth.nonce)?,
    };
    Ok(message.eip712_signing_hash(&config.domain()))
}

/// Recovers the signer of a 65-byte `0x` hex signature (v = 27/28 or 0/1) over `hash`, with
/// libsecp256k1 ([`verinet_primitives::secp`]): the payment path's hottest step.
pub fn recover(signature: &str, hash: B256) -> Result<Address, PaymentError> {
    verinet_primitives::secp::recover_hex(signature, &hash).map_err(PaymentError::InvalidSignature)
}

pub(crate) fn parse_address(s: &str, field: &str) -> Result<Address, PaymentError> {
    s.parse().map_err(|e| PaymentError::Malformed(format!("{field} {s:?} is not an address: {e}")))
}

pub(crate) fn parse_u256(s: &str, field: &str) -> Result<U256, PaymentError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PaymentError::Malformed(format!("{field} {s:?} is not a decimal integer")));
    }
    U256::from_str_radix(s, 10).map_err(|e| PaymentError::Malformed(format!("{field} {s:?}: {e}")))
}

fn parse_nonce(s: &str) -> Result<B256, PaymentError> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.len() != 64 {
        return Err(PaymentError::Malformed(format!("nonce {s:?} is not 32 bytes of hex")));
    }
    s.parse().map_err(|e| PaymentError::Malformed(format!("nonce {s:?}: {e}")))
}

/// The client side of `exact`: signs an EIP-3009 authorization paying `req` with `signer`,
/// valid from 0 until `now + maxTimeoutSeconds`, with a fresh random nonce, and wraps it in
/// the v2 payload (echoing `req` as `accepted`), as the official x402 clients do.
pub fn sign_payment(
    req: &PaymentRequirements,
    resource: Option<ResourceInfo>,
    signer: &alloy_signer_local::PrivateKeySigner,
    now: u64,
) -> Result<PaymentPayload, PaymentError> {
    use alloy_signer::SignerSync;
    use rand::RngCore;

    let chain_id = req
        .network
        .strip_prefix("eip155:")
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| PaymentError::NetworkMismatch { got: req.network.clone(), expected: "eip155:<chainId>".into() })?;
    let text = |k: &str, default: &str| req.extra.get(k).and_then(|v| v.as_str()).unwrap_or(default).to_owned();
    let config = X402Config {
        chain_id,
        asset: parse_address(&req.asset, "asset")?,
        token_name: text("name", ""),
        token_version: text("version", "1"),
        pay_to: parse_address(&req.pay_to, "payTo")?,
        max_timeout_secs: req.max_timeout_seconds,
        clock_skew_secs: 0,
        token_symbol: text("symbol", ""),
    };
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let timeout = if req.max_timeout_seconds == 0 { 3600 } else { req.max_timeout_seconds };
    let authorization = Authorization {
        from: signer.address().to_checksum(None),
        to: req.pay_to.clone(),
        value: req.amount.clone(),
        valid_after: "0".into(),
        valid_before: (now + timeout).to_string(),
        nonce: format!("0x{}", hex::encode(nonce)),
    };
    let hash = authorization_hash(&config, &authorization)?;
    let sig = signer.sign_hash_sync(&hash).map_err(|e| PaymentError::InvalidSignature(e.to_string()))?;
    Ok(PaymentPayload {
        x402_version: 2,
        payload: crate::wire::ExactPayload { signature: format!("0x{}", hex::encode(sig.as_bytes())), authorization },
        accepted: Some(req.clone()),
        resource,
        scheme: None,
        network: None,
    })
}

#[cfg(test)]
mod tests {
    use alloy_primitives::Signature;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;
    use crate::wire::{decode_header, encode_header};

    fn config(pay_to: Address) -> X402Config {
        X402Config { max_timeout_secs: 60, ..X402Config::devnet(pay_to) }
    }

    #[test]
    fn libsecp256k1_recovery_agrees_with_alloy_for_low_and_high_s() {
        use alloy_signer::SignerSync;
        // secp256k1's group order n: (r, n - s) with the other parity is the same signature.
        let n = U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).unwrap();
        for i in 0..64u8 {
            let key = PrivateKeySigner::random();
            let hash = keccak256([i]);
            let sig = key.sign_hash_sync(&hash).unwrap();
            let expected = sig.recover_address_from_prehash(&hash).unwrap();
            assert_eq!(expected, key.address());
            let mut bytes = sig.as_bytes();
            assert_eq!(recover(&format!("0x{}", hex::encode(bytes)), hash).unwrap(), expected, "v = 27/28");
            bytes[64] -= 27;
            assert_eq!(recover(&hex::encode(bytes), hash).unwrap(), expected, "v = 0/1");
            let high = Signature::new(sig.r(), n - sig.s(), !sig.v());
            assert_eq!(recover(&format!("0x{}", hex::encode(high.as_bytes())), hash).unwrap(), expected, "high s");
        }
        for bad in ["0x", "0x00", &format!("0x{}", "11".repeat(64) + "05"), &"zz".repeat(65)] {
            assert!(matches!(recover(bad, B256::ZERO), Err(PaymentError::InvalidSignature(_))), "{bad}");
        }
    }

    #[test]
    fn signed_payload_verifies_through_the_header_encoding() {
        let payer = PrivateKeySigner::random();
        let c = config(Address::repeat_byte(0xee));
        let req = c.requirements(1234);
        let payload = sign_payment(&req, None, &payer, 1_000).unwrap();
        // Padded standard base64 out; unpadded and URL-safe forms decode too.
        let header = encode_header(&payload);
        let unpadded = header.trim_end_matches('=');
        for h in [header.as_str(), unpadded] {
            let back: PaymentPayload = decode_header(h).unwrap();
            let ok = c.verify(&back, &req, 1_000).unwrap();
            assert_eq!((ok.payer, ok.value), (payer.address(), 1234));
            assert_eq!(ok.nonce, payload.payload.authorization.nonce.to_lowercase());
        }
    }

    #[test]
    fn legacy_v1_shape_and_lowercase_addresses_are_accepted() {
        let payer = PrivateKeySigner::random();
        let c = config(Address::repeat_byte(0xab));
        let mut req = c.requirements(5);
        req.pay_to = req.pay_to.to_lowercase();
        let mut payload = sign_payment(&req, None, &payer, 1_000).unwrap();
        payload.x402_version = 1;
        payload.accepted = None;
        payload.scheme = Some("exact".into());
        payload.network = Some("eip155:31337".into());
        assert!(c.verify(&payload, &c.requirements(5), 1_000).is_ok());
        payload.network = Some("base-sepolia".into());
        assert!(matches!(c.verify(&payload, &c.requirements(5), 1_000), Err(PaymentError::NetworkMismatch { .. })));
    }

    #[test]
    fn time_window_edges() {
        let payer = PrivateKeySigner::random();
        let c = config(Address::repeat_byte(1));
        let req = c.requirements(5);
        let payload = sign_payment(&req, None, &payer, 1_000).unwrap(); // validBefore = 1060
        assert!(c.verify(&payload, &req, 1_053).is_ok());
        // Fewer than 6 seconds left: refused as expired, like the reference facilitator.
        assert!(matches!(c.verify(&payload, &req, 1_055), Err(PaymentError::Expired { .. })));
        let mut early = payload.clone();
        early.payload.authorization.valid_after = "1031".into();
        // The signature no longer matches, but the window is checked first: the reason is clear.
        assert!(matches!(c.verify(&early, &req, 1_000), Err(PaymentError::NotYetValid { .. })));
        early.payload.authorization.valid_after = "1030".into();
        assert!(matches!(c.verify(&early, &req, 1_000), Err(PaymentError::InvalidSignature(_))));
    }

    #[test]
    fn malformed_numbers_are_refused_not_truncated() {
        let payer = PrivateKeySigner::random();
        let c = config(Address::repeat_byte(1));
        let req = c.requirements(5);
        for bad in ["-5", "5.0", "0x5", "", " 5"] {
            let mut p = sign_payment(&req, None, &payer, 1_000).unwrap();
            p.payload.authorization.value = bad.into();
            assert!(matches!(c.verify(&p, &req, 1_000), Err(PaymentError::Malformed(_))), "{bad:?}");
        }
        let mut p = sign_payment(&req, None, &payer, 1_000).unwrap();
        p.payload.authorization.nonce = "0x1234".into();
        assert!(matches!(c.verify(&p, &req, 1_000), Err(PaymentError::Malformed(_))));
    }
}
