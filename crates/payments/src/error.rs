use alloy_primitives::Address;

/// Why a payment was refused. Every variant leaves the ledger untouched.
///
/// [`PaymentError::code`] is verinet's stable error code; [`PaymentError::x402_reason`] the
/// x402 reason string that official clients and facilitators know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The call costs money and no payment was attached.
    #[error("this call costs {} tokens ({amount} base units): pay with x402 (PAYMENT-SIGNATURE) or a session token", verinet_primitives::format_amount(*amount, verinet_primitives::TOKEN_DECIMALS))]
    Required {
        /// The price.
        amount: u128,
    },
    /// The payment header or body does not decode.
    #[error("malformed payment: {0}")]
    Malformed(String),
    /// Not the scheme being checked (`exact`, or `upto` where offered).
    #[error("unsupported payment scheme {0:?}: this node accepts \"exact\" and, where offered, \"upto\"")]
    UnsupportedScheme(String),
    /// Wrong chain id.
    #[error("payment is for network {got:?}, this node settles on {expected:?}")]
    NetworkMismatch {
        /// Network named by the payment.
        got: String,
        /// This node's.
        expected: String,
    },
    /// Another token.
    #[error("payment is in asset {got}, this node takes {expected}")]
    AssetMismatch {
        /// Asset named by the payment.
        got: String,
        /// This node's token.
        expected: String,
    },
    /// The authorization pays someone else.
    #[error("authorization pays {got}, must pay {expected}")]
    RecipientMismatch {
        /// Its `to`.
        got: Address,
        /// This node's `payTo`.
        expected: Address,
    },
    /// The authorized value is not the price.
    #[error("authorization is for {got} base units, the price is {expected}")]
    AmountMismatch {
        /// Authorized value.
        got: String,
        /// Price.
        expected: String,
    },
    /// `validBefore` has passed (or is too close to now to escrow safely).
    #[error("authorization expired: validBefore {valid_before}, now {now}")]
    Expired {
        /// Its `validBefore`.
        valid_before: String,
        /// Node time, unix seconds.
        now: u64,
    },
    /// `validAfter` is in the future.
    #[error("authorization not valid yet: validAfter {valid_after}, now {now}")]
    NotYetValid {
        /// Its `validAfter`.
        valid_after: String,
        /// Node time, unix seconds.
        now: u64,
    },
    /// Scheme `upto`: the permit's `spender` is not the x402 upto Permit2 proxy (Permit2 lets
    /// only the named spender pull the funds).
    #[error("permit names spender {got}, must name the x402 upto proxy {expected}")]
    SpenderMismatch {
        /// Its `spender`.
        got: Address,
        /// [`UPTO_PERMIT2_PROXY`](crate::UPTO_PERMIT2_PROXY).
        expected: Address,
    },
    /// Scheme `upto`: the permit's `witness.facilitator` is not the address this node settles as
    /// (the requirement's `extra.facilitatorAddress`).
    #[error("permit names facilitator {got}, this node settles as {expected}")]
    FacilitatorMismatch {
        /// Its `witness.facilitator`.
        got: Address,
        /// The requirement's `extra.facilitatorAddress`.
        expected: Address,
    },
    /// The signature does not recover to `from`.
    #[error("invalid payment signature: {0}")]
    InvalidSignature(String),
    /// The authorization's nonce paid before.
    #[error("authorization nonce {0} was already used")]
    NonceUsed(String),
    /// The payer cannot afford it.
    #[error("insufficient funds: the price is {needed}, the payer has {available} available")]
    InsufficientFunds {
        /// Price.
        needed: u128,
        /// Available balance.
        available: u128,
    },
    /// The bearer token is unknown or its session expired.
    #[error("spending session: {0}")]
    SessionInvalid(String),
    /// The session's cap would be exceeded, or it does not cover this model.
    #[error("spending cap: {0}")]
    BudgetExceeded(String),
}

impl PaymentError {
    /// verinet's stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::Required { .. } => "payment_required",
            PaymentError::Malformed(_) => "payment_malformed",
            PaymentError::UnsupportedScheme(_) => "unsupported_scheme",
            PaymentError::NetworkMismatch { .. } => "network_mismatch",
            PaymentError::AssetMismatch { .. } => "asset_mismatch",
            PaymentError::RecipientMismatch { .. } => "recipient_mismatch",
            PaymentError::AmountMismatch { .. } => "amount_mismatch",
            PaymentError::Expired { .. } => "authorization_expired",
            PaymentError::NotYetValid { .. } => "authorization_not_yet_valid",
            PaymentError::SpenderMismatch { .. } => "spender_mismatch",
            PaymentError::FacilitatorMismatch { .. } => "facilitator_mismatch",
            PaymentError::InvalidSignature(_) => "invalid_signature",
            PaymentError::NonceUsed(_) => "nonce_used",
            PaymentError::InsufficientFunds { .. } => "insufficient_funds",
            PaymentError::SessionInvalid(_) => "session_invalid",
            PaymentError::BudgetExceeded(_) => "budget_exceeded",
        }
    }

    /// The x402 reason string (the `error` of a `PAYMENT-REQUIRED`, `invalidReason` of verify).
    pub fn x402_reason(&self) -> &'static str {
        match self {
            PaymentError::Required { .. } => "payment_required",
            PaymentError::Malformed(_) => "invalid_payload",
            PaymentError::UnsupportedScheme(_) => "unsupported_scheme",
            PaymentError::NetworkMismatch { .. } => "network_mismatch",
            PaymentError::AssetMismatch { .. } => "invalid_exact_evm_failed_to_get_asset_info",
            PaymentError::RecipientMismatch { .. } => "invalid_exact_evm_payload_recipient_mismatch",
            PaymentError::AmountMismatch { .. } => "invalid_exact_evm_payload_authorization_value_mismatch",
            PaymentError::Expired { .. } => "invalid_exact_evm_payload_authorization_valid_before",
            PaymentError::NotYetValid { .. } => "invalid_exact_evm_payload_authorization_valid_after",
            // The reasons of x402's upto facilitator (`verify_upto_permit2`).
            PaymentError::SpenderMismatch { .. } => "invalid_permit2_spender",
            PaymentError::FacilitatorMismatch { .. } => "upto_facilitator_mismatch",
            PaymentError::InvalidSignature(_) => "invalid_exact_evm_payload_signature",
            PaymentError::NonceUsed(_) => "invalid_exact_evm_nonce_already_used",
            PaymentError::InsufficientFunds { .. } => "invalid_exact_evm_insufficient_balance",
            PaymentError::SessionInvalid(_) => "invalid_session",
            PaymentError::BudgetExceeded(_) => "budget_exceeded",
        }
    }
}
