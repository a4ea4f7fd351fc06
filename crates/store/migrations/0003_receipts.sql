-- Signed receipts and the Merkle batches that seal them.

-- One receipt per request. `body` is the signed receipt JSON as returned to the client.
CREATE TABLE receipts (
    request_id TEXT   NOT NULL PRIMARY KEY,
    node       TEXT   NOT NULL,
    digest     TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    -- The batch that sealed it; NULL while pending.
    batch_id   TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX receipts_unbatched ON receipts (node, batch_id, created_at);
CREATE INDEX receipts_batch ON receipts (batch_id);

-- A sealed batch: an OpenZeppelin StandardMerkleTree root over the receipts' digests,
-- signed by the node.
CREATE TABLE receipt_batches (
    id         TEXT   NOT NULL PRIMARY KEY,
    node       TEXT   NOT NULL,
    root       TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    signature  TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
