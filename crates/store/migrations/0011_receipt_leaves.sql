-- Receipt retention: once a sealed receipt is older than the node's retention window its body
-- goes, and what its inclusion proof needs stays here (the batch's root and signature stay in
-- receipt_batches). `receipts_created` finds the receipts due without a scan.
CREATE TABLE receipt_leaves (
    request_id TEXT NOT NULL PRIMARY KEY,
    batch_id   TEXT NOT NULL,
    digest     TEXT NOT NULL
);

CREATE INDEX receipt_leaves_batch ON receipt_leaves (batch_id);
CREATE INDEX receipts_created ON receipts (created_at);
