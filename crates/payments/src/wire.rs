//! x402 v2 JSON shapes (camelCase), as the official x402 clients and facilitators speak them,
//! and the header encoding (standard padded base64 of compact JSON). Payment payloads come in
//! two schemes, `exact` ([`PaymentPayload`]) and `upto` ([`UptoPaymentPayload`]);
//! [`decode_payment`] tells them apart.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The header of a 402 answer carrying [`PaymentRequired`].
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// The header of a paid retry carrying [`PaymentPayload`] or [`UptoPaymentPayload`] (x402 v2).
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// The legacy (x402 v1) header of a paid retry.
pub const X_PAYMENT: &str = "x-payment";
/// The header of a paid answer carrying [`SettleResponse`].
pub const PAYMENT_RESPONSE: &str = "payment-response";

/// `PAYMENT-REQUIRED`: what the resource costs and how it can be paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 2.
    pub x402_version: u32,
    /// Why the previous payment (if any) was refused, as an x402 reason string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource being paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// Acceptable ways to pay; verinet offers one.
    pub accepts: Vec<PaymentRequirements>,
}

/// The paid resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Its URL.
    pub url: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Response media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay: scheme `exact` (or `upto`) on `eip155:<chainId>` with the ledger token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// `exact` or `upto`.
    pub scheme: String,
    /// `eip155:<chainId>`.
    pub network: String,
    /// The token (ledger) address; the EIP-712 `verifyingContract`.
    pub asset: String,
    /// Base units, decimal digits: the price (`exact`) or the maximum (`upto`).
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    pub amount: String,
    /// The recipient the authorization must name.
    pub pay_to: String,
    /// How long a signed authorization may take to arrive.
    pub max_timeout_seconds: u64,
    /// `{"name", "version"}` of the token's EIP-712 domain; `upto` adds `facilitatorAddress`
    /// and `assetTransferMethod: "permit2"`.
    #[serde(default)]
    pub extra: Value,
}

/// `PAYMENT-SIGNATURE`: a signed payment for one of the requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// 2 (1 for the legacy shape, which names scheme and network at top level).
    pub x402_version: u32,
    /// The scheme payload: authorization and signature.
    pub payload: ExactPayload,
    /// The requirement the client chose (v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<PaymentRequirements>,
    /// The resource, copied from the 402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// v1: the scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// v1: the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Scheme `exact` on EVM: an EIP-3009 authorization and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExactPayload {
    /// 65-byte secp256k1 signature, `0x` hex.
    pub signature: String,
    /// The signed message.
    pub authorization: Authorization,
}

/// EIP-3009 `TransferWithAuthorization` fields, as strings on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// Payer.
    pub from: String,
    /// Recipient (must be `payTo`).
    pub to: String,
    /// Base units, decimal.
    pub value: String,
    /// Unix seconds, decimal.
    pub valid_after: String,
    /// Unix seconds, decimal.
    pub valid_before: String,
    /// 32 bytes, `0x` hex.
    pub nonce: String,
}

/// `PAYMENT-SIGNATURE` for scheme `upto` (x402 v2 only): a Permit2 permit for at most
/// `permitted.amount`, of which the node settles the actual charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UptoPaymentPayload {
    /// 2.
    pub x402_version: u32,
    /// The permit and its signature.
    pub payload: UptoPayload,
    /// The requirement the client chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<PaymentRequirements>,
    /// The resource, copied from the 402.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
}

/// Scheme `upto` on EVM: a Permit2 `PermitWitnessTransferFrom` and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UptoPayload {
    /// The signed message, plus `from` (which is not signed: the signer is recovered).
    pub permit2_authorization: Permit2Authorization,
    /// 65-byte secp256k1 signature, `0x` hex.
    pub signature: String,
}

/// Permit2 `PermitWitnessTransferFrom` fields with the x402 upto witness, as strings on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Permit2Authorization {
    /// Payer (the Permit2 owner).
    pub from: String,
    /// Token and maximum amount.
    pub permitted: TokenPermissions,
    /// Who may pull the funds: the x402 upto proxy.
    pub spender: String,
    /// uint256, decimal (as the Python client sends it) or `0x` hex (as the spec shows it).
    pub nonce: String,
    /// Unix seconds, decimal: the permit is void after it.
    pub deadline: String,
    /// The x402 terms bound into the signature.
    pub witness: Witness,
}

/// Permit2 `TokenPermissions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPermissions {
    /// The token (the requirement's `asset`).
    pub token: String,
    /// The maximum, base units, decimal.
    #[schema(value_type = verinet_primitives::schema::AmountSchema)]
    pub amount: String,
}

/// The x402 upto witness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Witness {
    /// Recipient (must be `payTo`).
    pub to: String,
    /// The only address allowed to settle (the requirement's `extra.facilitatorAddress`).
    pub facilitator: String,
    /// Unix seconds, decimal: the permit is void before it.
    pub valid_after: String,
}

/// A `PAYMENT-SIGNATURE` (or `X-PAYMENT`) of either scheme, told apart by its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyPayment {
    /// Scheme `exact`: an EIP-3009 `authorization`.
    Exact(PaymentPayload),
    /// Scheme `upto`: a `permit2Authorization` whose witness names a facilitator.
    Upto(UptoPaymentPayload),
}

/// `PAYMENT-RESPONSE` and the facilitator's settle answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the money moved.
    pub success: bool,
    /// The ledger transaction id (`0x` + 64 hex), or empty on failure.
    pub transaction: String,
    /// `eip155:<chainId>`.
    pub network: String,
    /// Who paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// What was paid, base units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<verinet_primitives::schema::AmountSchema>)]
    pub amount: Option<String>,
    /// x402 reason on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Human text on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `POST /x402/verify` and `POST /x402/settle` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    /// Protocol version of the payload.
    pub x402_version: u32,
    /// The signed payment.
    pub payment_payload: PaymentPayload,
    /// What it must pay for.
    pub payment_requirements: PaymentRequirements,
}

/// `POST /x402/verify` answer (always HTTP 200; `isValid` says the verdict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether settling it would succeed now.
    pub is_valid: bool,
    /// x402 reason when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Human text when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The payer, when the signature recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// `GET /x402/supported`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Supported {
    /// What this facilitator settles.
    pub kinds: Vec<SupportedKind>,
    /// Extensions (none).
    pub extensions: Vec<String>,
    /// Signers by CAIP family (none: settlement is on the node's ledger, not a chain).
    pub signers: serde_json::Map<String, Value>,
}

/// One (version, scheme, network) this facilitator settles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Protocol version.
    pub x402_version: u32,
    /// `exact` or `upto`.
    pub scheme: String,
    /// `eip155:<chainId>`.
    pub network: String,
    /// EIP-712 domain name and version of the asset (`exact`), `facilitatorAddress` (`upto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// Base64 (standard, padded) of compact JSON: the x402 header encoding.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail.
    STANDARD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes a header value; accepts unpadded and URL-safe base64 too (be liberal in what you
/// accept: some clients strip padding).
pub fn decode_header<T: DeserializeOwned>(value: &str) -> Result<T, String> {
    let value = value.trim();
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(value).ok())
        .ok_or_else(|| "header is not base64".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("header is not the expected JSON: {e}"))
}

/// Decodes a payment header of either scheme with [`decode_header`]'s base64 rules. The payload
/// decides, as x402's own `is_upto_permit2_payload` does: `permit2Authorization` whose
/// `witness` has a `facilitator` is `upto`, `authorization` is `exact`. A Permit2 payload
/// without a facilitator (`exact` over Permit2) is refused: this node takes EIP-3009 for `exact`.
pub fn decode_payment(header_value: &str) -> Result<AnyPayment, String> {
    let value: Value = decode_header(header_value)?;
    let payload = value.get("payload");
    let permit = payload.and_then(|p| p.get("permit2Authorization"));
    let shape_error = |e: serde_json::Error| format!("header is not the expected JSON: {e}");
    if permit.and_then(|a| a.get("witness")).and_then(|w| w.get("facilitator")).is_some() {
        serde_json::from_value(value).map(AnyPayment::Upto).map_err(shape_error)
    } else if payload.and_then(|p| p.get("authorization")).is_some() {
        serde_json::from_value(value).map(AnyPayment::Exact).map_err(shape_error)
    } else if permit.is_some() {
        Err("Permit2 payload without witness.facilitator (exact over Permit2) is not accepted: \
             sign an EIP-3009 authorization for exact, or a permit with the upto witness"
            .to_owned())
    } else {
        Err("payload has neither authorization (exact) nor permit2Authorization (upto)".to_owned())
    }
}
