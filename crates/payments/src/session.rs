use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{PaymentError, exact::recover};

sol! {
    /// The EIP-712 message a payer signs to open a spending session.
    #[derive(Debug)]
    struct SpendingSession {
        address payer;
        uint256 maxTotal;
        uint256 expiry;
        string models;
        bytes32 nonce;
    }
}

/// `POST /v1/sessions` body: a payer's signed budget. Signed as EIP-712 typed data
/// `SpendingSession(address payer,uint256 maxTotal,uint256 expiry,string models,bytes32 nonce)`
/// in the domain `{name: "verinet", version: "1", chainId}`, where the signed `models` string
/// is the allowed model names or ids joined by `,` (empty: any model); the body carries them
/// as a JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendingCap {
    /// Who pays.
    #[schema(value_type = verinet_primitives::schema::AddressSchema)]
    pub payer: Address,
    /// Cap on everything the session may spend, base units (decimal string).
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    pub max_total: String,
    /// Unix seconds after which the session pays nothing.
    pub expiry: u64,
    /// Allowed model names or ids; empty means any.
    #[serde(default)]
    pub models: Vec<String>,
    /// 32 random bytes, `0x` hex: one session per signature.
    #[schema(value_type = verinet_primitives::schema::Bytes32Schema)]
    pub nonce: B256,
    /// 65-byte signature, `0x` hex.
    #[serde(default)]
    pub signature: String,
}

impl SpendingCap {
    /// The domain sessions are signed in.
    pub fn domain(chain_id: u64) -> Eip712Domain {
        Eip712Domain::new(Some("verinet".into()), Some("1".into()), Some(U256::from(chain_id)), None, None)
    }

    /// The EIP-712 signing hash.
    pub fn signing_hash(&self, chain_id: u64) -> Result<B256, PaymentError> {
        let max_total = self.max_total()?;
        let message = SpendingSession {
            payer: self.payer,
            maxTotal: U256::from(max_total),
            expiry: U256::from(self.expiry),
            models: self.models.join(","),
            nonce: self.nonce,
        };
        Ok(message.eip712_signing_hash(&Self::domain(chain_id)))
    }

    /// The cap as a number.
    pub fn max_total(&self) -> Result<u128, PaymentError> {
        self.max_total
            .parse()
            .map_err(|e| PaymentError::Malformed(format!("max_total {:?} is not a base-unit integer: {e}", self.max_total)))
    }

    /// Checks the signature is the payer's, the cap positive and the expiry in the future.
    pub fn verify(&self, chain_id: u64, now: u64) -> Result<u128, PaymentError> {
        let max_total = self.max_total()?;
        if max_total == 0 {
            return Err(PaymentError::Malformed("max_total must be positive".into()));
        }
        if self.expiry <= now {
            return Err(PaymentError::SessionInvalid(format!("expiry {} is not in the future (now {now})", self.expiry)));
        }
        if self.models.iter().any(|m| m.is_empty() || m.contains(',')) {
            return Err(PaymentError::Malformed("models must be non-empty names without commas".into()));
        }
        let signer = recover(&self.signature, self.signing_hash(chain_id)?)?;
        if signer != self.payer {
            return Err(PaymentError::InvalidSignature(format!("signed by {signer}, not by payer {}", self.payer)));
        }
        Ok(max_total)
    }
}

/// A fresh bearer token: `vn_` + 64 hex.
pub fn new_session_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!("vn_{}", hex::encode(b))
}

/// What the store keeps of a token: `0x` + keccak256 hex.
pub fn token_hash(token: &str) -> String {
    format!("{:#x}", keccak256(token.as_bytes()))
}
