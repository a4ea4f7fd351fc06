-- The double-entry ledger, x402 payments and apps.
--
-- Amounts are decimal text (18-decimal base units overflow BIGINT); the store does the arithmetic
-- in Rust while it holds the rows' locks. Every transaction's entries sum to zero, and the system
-- `mint` account is the only one that may go negative, so the sum of every other balance always
-- equals what was minted.

-- Current balance of one bucket (available, escrow, stake, minted) of one account.
CREATE TABLE ledger_balances (
    account TEXT NOT NULL,
    bucket  TEXT NOT NULL,
    amount  TEXT NOT NULL,
    PRIMARY KEY (account, bucket)
);

-- One atomic movement of money.
CREATE TABLE ledger_txs (
    id         TEXT   NOT NULL PRIMARY KEY,
    kind       TEXT   NOT NULL,
    -- The request it belongs to, if any (escrow, capture, refund).
    request_id TEXT,
    memo       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX ledger_txs_request ON ledger_txs (request_id);

-- The legs of a transaction; their deltas sum to zero. `role` names why an account earned
-- (creator, operator, protocol, app, validator) and is what "earnings by role" sums.
CREATE TABLE ledger_entries (
    tx_id   TEXT   NOT NULL REFERENCES ledger_txs (id),
    idx     BIGINT NOT NULL,
    account TEXT   NOT NULL,
    bucket  TEXT   NOT NULL,
    delta   TEXT   NOT NULL,
    role    TEXT,
    PRIMARY KEY (tx_id, idx)
);

CREATE INDEX ledger_entries_account ON ledger_entries (account);

-- EIP-3009 authorization nonces, claimed once and forever per payer.
CREATE TABLE payment_nonces (
    payer      TEXT   NOT NULL,
    nonce      TEXT   NOT NULL,
    tx_id      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (payer, nonce)
);

-- One paid request: its escrow, and how it ended (captured with its result, or refunded).
CREATE TABLE payments (
    request_id  TEXT   NOT NULL PRIMARY KEY,
    payer       TEXT   NOT NULL,
    amount      TEXT   NOT NULL,
    -- The price breakdown and payee split, JSON.
    quote       TEXT   NOT NULL,
    model       TEXT   NOT NULL,
    app         TEXT,
    -- The gateway that took the payment: only it recovers its own stale escrows.
    gateway     TEXT   NOT NULL,
    -- How it was paid: `x402` (nonce) or `session` (budget token id).
    method      TEXT   NOT NULL,
    reference   TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    input_hash  TEXT   NOT NULL,
    output_hash TEXT,
    reason      TEXT,
    escrow_tx   TEXT   NOT NULL,
    settle_tx   TEXT,
    created_at  BIGINT NOT NULL,
    settled_at  BIGINT
);

CREATE INDEX payments_status ON payments (status, gateway);
CREATE INDEX payments_payer ON payments (payer);

-- Applications tag requests; their owner earns the markup.
CREATE TABLE apps (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    owner      TEXT   NOT NULL,
    markup     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- Spending caps: a payer's signed budget, spent by bearer-token requests.
CREATE TABLE spending_sessions (
    id         TEXT   NOT NULL PRIMARY KEY,
    token_hash TEXT   NOT NULL UNIQUE,
    payer      TEXT   NOT NULL,
    max_total  TEXT   NOT NULL,
    spent      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    -- JSON list of allowed model names or ids; empty means any.
    models     TEXT   NOT NULL,
    nonce      TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
