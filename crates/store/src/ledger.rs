use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use verinet_primitives::Address;

use crate::{Result, StoreError};

/// The money store: a double-entry ledger plus the records that must commit with its movements
/// (spent nonces, paid requests, spending sessions) and the apps that earn markups.
///
/// [`LedgerStore::commit`] is the one write path for money: everything a [`LedgerTx`] carries
/// commits together or not at all, so a payment, its escrow and its request record can never be
/// split by a crash. Implementations lock what they touch (accounts in a fixed order), so
/// concurrent transactions never spend one balance twice, on one node or on many sharing a
/// database. The `conformance` module holds the behaviour every implementation must show.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Applies `tx` atomically. Refuses, changing nothing:
    /// - postings that do not sum to zero, or a non-system bucket that would go negative
    ///   ([`StoreError::Invalid`], [`StoreError::Insufficient`]);
    /// - a nonce claimed before ([`StoreError::NonceUsed`]);
    /// - a payment opened twice, or closed when it is not escrowed ([`StoreError::PaymentState`]);
    /// - a session spend past its cap or expiry ([`StoreError::Budget`]).
    async fn commit(&self, tx: &LedgerTx) -> Result<()>;

    /// Whether `payer` claimed `nonce` before (x402 facilitator verify).
    async fn nonce_used(&self, payer: Address, nonce: &str) -> Result<bool>;

    /// Current balances of an account (zero for an unknown one).
    async fn balances(&self, account: Address) -> Result<Balances>;

    /// What an account has earned, by role, since the ledger began.
    async fn earnings(&self, account: Address) -> Result<BTreeMap<Role, u128>>;

    /// What `payer` has spent: the sum its captured payments charged (an `upto` capture
    /// charges at most what it held). Refunded and open escrows are not spent.
    async fn spent(&self, payer: Address) -> Result<u128>;

    /// Sums over every account, for the ledger invariant `minted == available + escrow + stake`.
    async fn totals(&self) -> Result<LedgerTotals>;

    /// One paid request.
    async fn payment(&self, request_id: &str) -> Result<Option<PaymentRecord>>;

    /// Payments of `gateway` in `status` created before `before_ms` (crash recovery).
    async fn payments_with_status(
        &self,
        status: PaymentStatus,
        gateway: Address,
        before_ms: i64,
    ) -> Result<Vec<PaymentRecord>>;

    /// The kinds of the ledger transactions that touched a request, oldest first.
    async fn request_txs(&self, request_id: &str) -> Result<Vec<TxKind>>;

    /// Registers an app; [`StoreError::AppExists`] if the id is taken.
    async fn insert_app(&self, app: &App) -> Result<()>;

    /// One app.
    async fn app(&self, id: &str) -> Result<Option<App>>;

    /// `owner`'s apps, newest first, at most `limit`.
    async fn apps_by_owner(&self, owner: Address, limit: usize) -> Result<Vec<App>>;

    /// The payment opened with `payer`'s authorization `reference` (an x402 nonce), and the
    /// answer kept with its capture while the retention window lasts.
    async fn payment_by_reference(&self, payer: Address, reference: &str) -> Result<Option<(PaymentRecord, Option<KeptAnswer>)>>;

    /// Clears the answers kept by captures settled before `before_ms` (their payment rows, the
    /// ledger and the receipts stay). Returns how many were cleared.
    async fn forget_answers(&self, before_ms: i64) -> Result<u64>;

    /// Makes durable every transaction answered before it was written (captures and refunds
    /// a SQLite file's writer answers first, [`crate::StoreOptions::close_delay`]); returns
    /// once they are. A store that writes before it answers has nothing to do.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// What an operator audits: totals per bucket, accounts, negative balances, the payments
    /// still in escrow (count, amount, oldest) and payments per status, read in one snapshot.
    async fn audit(&self) -> Result<LedgerAudit>;

    /// Stores a spending session; [`StoreError::NonceUsed`] if its nonce was used before.
    async fn insert_session(&self, s: &SpendingSession) -> Result<()>;

    /// The session whose bearer token hashes to `token_hash`.
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<SpendingSession>>;
}

/// One of an account's balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// Spendable.
    Available,
    /// Held for a request until it is captured or refunded.
    Escrow,
    /// Bonded by a worker or validator; slashable.
    Stake,
    /// The system mint's counter-balance: the only bucket that goes negative.
    Minted,
}

/// Why an account received money: what "earnings by role" sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Model creator royalty.
    Creator,
    /// Node operator compute fee.
    Operator,
    /// Verification fee.
    Validator,
    /// Protocol fee.
    Protocol,
    /// App owner markup.
    App,
    /// Payee of a plain x402 settlement (facilitator `settle`).
    Payee,
}

/// What a ledger transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    /// New money from the devnet faucet.
    Mint,
    /// Payer's available -> payer's escrow for a request.
    Escrow,
    /// Escrow -> the fee split, after a result.
    Capture,
    /// Escrow -> back to the payer.
    Refund,
    /// Available -> another account's available (facilitator settle).
    Transfer,
    /// Available -> stake.
    Stake,
    /// Stake -> available.
    Unstake,
    /// Stake of a proven cheater -> the validator that caught it and the protocol.
    Slash,
}

/// Status of a paid request. Escrowed is the only state that moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Paid, held, result pending.
    Escrowed,
    /// Result produced and recorded; the payees were paid.
    Captured,
    /// No result (error, timeout, crash): the payer got the money back.
    Refunded,
}

impl StoreError {
    /// The refusal of closing the payment of `request_id`, found `found` (a status, or
    /// `absent`) rather than escrowed.
    pub(crate) fn not_escrowed(request_id: &str, found: &str) -> Self {
        Self::PaymentState {
            request_id: request_id.to_owned(),
            expected: PaymentStatus::Escrowed.to_string(),
            found: found.to_owned(),
        }
    }
}

macro_rules! text_enum {
    ($t:ty { $($v:ident = $s:literal),+ $(,)? }) => {
        impl $t {
            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(<$t>::$v),)+
                    other => Err(StoreError::Corrupt(format!("unknown {} {other:?}", stringify!($t)))),
                }
            }
        }
    };
}

text_enum!(Bucket { Available = "available", Escrow = "escrow", Stake = "stake", Minted = "minted" });
text_enum!(Role {
    Creator = "creator",
    Operator = "operator",
    Validator = "validator",
    Protocol = "protocol",
    App = "app",
    Payee = "payee",
});
text_enum!(TxKind {
    Mint = "mint",
    Escrow = "escrow",
    Capture = "capture",
    Refund = "refund",
    Transfer = "transfer",
    Stake = "stake",
    Unstake = "unstake",
    Slash = "slash",
});
text_enum!(PaymentStatus { Escrowed = "escrowed", Captured = "captured", Refunded = "refunded" });

/// One leg of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// Whose money.
    pub account: Address,
    /// Which of its balances.
    pub bucket: Bucket,
    /// Signed change in base units.
    pub delta: i128,
    /// Why it was received (earnings), for credits to payees.
    pub role: Option<Role>,
}

impl Posting {
    /// A posting without a role.
    pub fn new(account: Address, bucket: Bucket, delta: i128) -> Self {
        Self { account, bucket, delta, role: None }
    }

    /// A credit earned in `role`.
    pub fn earned(account: Address, role: Role, amount: i128) -> Self {
        Self { account, bucket: Bucket::Available, delta: amount, role: Some(role) }
    }
}

/// An atomic ledger transaction and the records that commit with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTx {
    /// Unique id (`0x` + 64 hex), reported as the x402 settlement "transaction".
    pub id: String,
    /// What it does.
    pub kind: TxKind,
    /// Legs; they must sum to zero.
    pub postings: Vec<Posting>,
    /// Free text for people reading the ledger.
    pub memo: String,
    /// When, unix milliseconds.
    pub at_ms: i64,
    /// A payer nonce to claim once and forever.
    pub nonce: Option<NonceClaim>,
    /// A paid request opened or closed by this transaction.
    pub payment: Option<PaymentChange>,
    /// A spending session debited by this transaction.
    pub session_spend: Option<SessionSpend>,
}

/// An EIP-3009 nonce (or session nonce) claimed by a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceClaim {
    /// The authorising account.
    pub payer: Address,
    /// `0x` + 64 hex, lowercase.
    pub nonce: String,
}

/// How a transaction changes a paid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentChange {
    /// Records a new request in [`PaymentStatus::Escrowed`].
    Open(NewPayment),
    /// Moves an escrowed request to `to`, with its result hash (capture) or reason (refund).
    Close {
        /// Request id.
        request_id: String,
        /// `Captured` or `Refunded`.
        to: PaymentStatus,
        /// Canonical hash of the outputs, on capture.
        output_hash: Option<String>,
        /// Why, on refund.
        reason: Option<String>,
        /// On capture: the answer it paid for and its receipt, stored in the same transaction.
        kept: Option<Box<Kept>>,
    },
}

/// What a capture keeps for its payer, committed with it: the answer as sent, what it charged,
/// and the receipt (stored with the capture, so no capture's receipt waits in a buffer that a
/// crash could lose). A retry with the same authorization gets the answer back
/// ([`LedgerStore::payment_by_reference`]) until [`LedgerStore::forget_answers`] clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The response body, JSON.
    pub answer: String,
    /// What the capture charged (base units).
    pub charged: u128,
    /// The signed receipt as this node stores it.
    pub receipt: crate::ReceiptRecord,
}

/// A kept answer as stored: the body and what it charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    /// The response body, JSON.
    pub answer: String,
    /// What the capture charged (base units).
    pub charged: u128,
}

/// A paid request as it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// Request id.
    pub request_id: String,
    /// Who pays.
    pub payer: Address,
    /// What is held in escrow.
    pub amount: u128,
    /// Price breakdown and payees, JSON (the capture must follow it).
    pub quote: String,
    /// Model id (`sha256:<hex>`).
    pub model: String,
    /// App id, if tagged.
    pub app: Option<String>,
    /// The gateway taking the payment.
    pub gateway: Address,
    /// `x402` or `session`.
    pub method: String,
    /// The nonce or session id.
    pub reference: String,
    /// Canonical hash of the inputs.
    pub input_hash: String,
}

/// Debit of a spending session's budget, or the release of an unused part of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpend {
    /// Session id.
    pub id: String,
    /// Amount added to `spent` (checked against the cap and the expiry).
    pub amount: u128,
    /// Amount taken back from `spent` (an escrow refunded in whole or in part); allowed after
    /// the expiry, never below zero.
    pub released: u128,
}

/// A paid request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Request id.
    pub request_id: String,
    /// Who paid.
    pub payer: Address,
    /// Amount held or settled.
    pub amount: u128,
    /// Price breakdown and payees, JSON.
    pub quote: String,
    /// Model id.
    pub model: String,
    /// App id.
    pub app: Option<String>,
    /// Gateway that took it.
    pub gateway: Address,
    /// `x402` or `session`.
    pub method: String,
    /// Nonce or session id.
    pub reference: String,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Canonical input hash.
    pub input_hash: String,
    /// Canonical output hash (set exactly when captured).
    pub output_hash: Option<String>,
    /// Refund reason.
    pub reason: Option<String>,
    /// Escrow transaction id.
    pub escrow_tx: String,
    /// Capture or refund transaction id.
    pub settle_tx: Option<String>,
    /// Opened, unix ms.
    pub created_at_ms: i64,
    /// Closed, unix ms.
    pub settled_at_ms: Option<i64>,
}

/// Balances of one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// Spendable.
    pub available: u128,
    /// Held for requests in flight.
    pub escrow: u128,
    /// Bonded.
    pub stake: u128,
}

/// The facts of [`LedgerStore::audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAudit {
    /// Sums per bucket.
    pub totals: LedgerTotals,
    /// Accounts holding any balance row.
    pub accounts: u64,
    /// Balance rows below zero outside the mint account (must be none).
    pub negative_balances: u64,
    /// Payments in `escrowed`.
    pub open_escrows: u64,
    /// What they hold.
    pub open_escrow_amount: u128,
    /// When the oldest of them was opened, unix ms.
    pub oldest_open_escrow_ms: Option<i64>,
    /// Payments per status (`escrowed`, `captured`, `refunded`).
    pub payments: BTreeMap<String, u64>,
}

/// Sums over all accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTotals {
    /// Everything ever minted.
    pub minted: u128,
    /// Sum of available balances.
    pub available: u128,
    /// Sum of escrows.
    pub escrow: u128,
    /// Sum of stakes.
    pub stake: u128,
}

impl LedgerTotals {
    /// The ledger invariant: no money created or destroyed outside minting.
    pub fn balanced(&self) -> bool {
        self.available.checked_add(self.escrow).and_then(|s| s.checked_add(self.stake)) == Some(self.minted)
    }
}

/// A registered application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Id requests carry.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Who earns the markup.
    pub owner: Address,
    /// Markup per call, base units.
    pub markup: u128,
    /// Registered, unix ms.
    pub created_at_ms: i64,
}

/// A payer's signed budget that bearer-token requests spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendingSession {
    /// Session id.
    pub id: String,
    /// Hash of the bearer token (the token itself is never stored).
    pub token_hash: String,
    /// Who pays.
    pub payer: Address,
    /// Cap on the total spent.
    pub max_total: u128,
    /// Spent so far.
    pub spent: u128,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Allowed model names or ids; empty means any.
    pub models: Vec<String>,
    /// The signed nonce (one session per signature).
    pub nonce: String,
    /// Created, unix ms.
    pub created_at_ms: i64,
}

/// The system account that mints: all-zero address, bucket [`Bucket::Minted`].
pub const MINT_ACCOUNT: Address = Address::ZERO;
