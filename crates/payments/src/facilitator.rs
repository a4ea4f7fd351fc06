use std::time::{SystemTime, UNIX_EPOCH};

use verinet_ledger::{Ledger, LedgerError};
use verinet_store::StoreError;

use crate::{
    PaymentError, X402Config,
    wire::{FacilitatorRequest, SettleResponse, Supported, VerifyResponse},
};

/// The x402 facilitator API (`/x402/verify`, `/x402/settle`, `/x402/supported`) over the
/// node's ledger: settling moves the authorized amount from the payer to `payTo` in one ledger
/// transaction that also claims the nonce.
#[derive(Clone)]
pub struct Facilitator {
    config: X402Config,
    ledger: Ledger,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A ledger refusal as the payment error a payer should see; other failures pass through.
pub fn from_ledger_error(e: LedgerError) -> Result<PaymentError, LedgerError> {
    match e {
        LedgerError::Store(StoreError::Insufficient { needed, available, .. }) => {
            Ok(PaymentError::InsufficientFunds { needed, available })
        }
        LedgerError::Store(StoreError::NonceUsed { nonce, .. }) => Ok(PaymentError::NonceUsed(nonce)),
        LedgerError::Store(StoreError::Budget { reason, .. }) => Ok(PaymentError::BudgetExceeded(reason)),
        other => Err(other),
    }
}

impl Facilitator {
    /// A facilitator for `config`'s network and token over `ledger`.
    pub fn new(config: X402Config, ledger: Ledger) -> Self {
        Self { config, ledger }
    }

    /// The node's terms.
    pub fn config(&self) -> &X402Config {
        &self.config
    }

    /// `GET /x402/supported`.
    pub fn supported(&self) -> Supported {
        Supported { kinds: vec![self.config.supported_kind()], extensions: vec![], signers: Default::default() }
    }

    /// `POST /x402/verify`: would settling succeed now? Checks the payload, then that the nonce
    /// is unused and the balance covers it. Only database failures are errors.
    pub async fn verify(&self, req: &FacilitatorRequest) -> Result<VerifyResponse, LedgerError> {
        let refuse = |e: PaymentError, payer: Option<String>| VerifyResponse {
            is_valid: false,
            invalid_reason: Some(e.x402_reason().to_owned()),
            invalid_message: Some(e.to_string()),
            payer,
        };
        let ok = match self.config.verify(&req.payment_payload, &req.payment_requirements, unix_now()) {
            Ok(ok) => ok,
            Err(e) => return Ok(refuse(e, None)),
        };
        let payer = Some(ok.payer.to_checksum(None));
        if self.ledger.store().nonce_used(ok.payer, &ok.nonce).await? {
            return Ok(refuse(PaymentError::NonceUsed(ok.nonce), payer));
        }
        let available = self.ledger.store().balances(ok.payer).await?.available;
        if available < ok.value {
            return Ok(refuse(PaymentError::InsufficientFunds { needed: ok.value, available }, payer));
        }
        Ok(VerifyResponse { is_valid: true, invalid_reason: None, invalid_message: None, payer })
    }

    /// `POST /x402/settle`: verifies, then moves the money; the nonce and the balance are
    /// checked again inside the ledger transaction, so two settles of one payload pay once.
    pub async fn settle(&self, req: &FacilitatorRequest) -> Result<SettleResponse, LedgerError> {
        let network = self.config.network();
        let fail = |e: PaymentError, payer: Option<String>| SettleResponse {
            success: false,
            transaction: String::new(),
            network: network.clone(),
            payer,
            amount: None,
            error_reason: Some(e.x402_reason().to_owned()),
            error_message: Some(e.to_string()),
        };
        let ok = match self.config.verify(&req.payment_payload, &req.payment_requirements, unix_now()) {
            Ok(ok) => ok,
            Err(e) => return Ok(fail(e, None)),
        };
        let payer = Some(ok.payer.to_checksum(None));
        match self.ledger.transfer(ok.payer, self.config.pay_to, ok.value, &ok.nonce).await {
            Ok(tx) => Ok(SettleResponse {
                success: true,
                transaction: tx,
                network: network.clone(),
                payer,
                amount: Some(ok.value.to_string()),
                error_reason: None,
                error_message: None,
            }),
            Err(e) => Ok(fail(from_ledger_error(e)?, payer)),
        }
    }
}
