-- Proven mismatches: a worker's result against a validator's (or a quorum majority's).
CREATE TABLE disputes (
    request_id        TEXT   NOT NULL,
    worker            TEXT   NOT NULL,
    validator         TEXT   NOT NULL,
    mode              TEXT   NOT NULL,
    worker_output     TEXT   NOT NULL,
    validator_output  TEXT   NOT NULL,
    detail            TEXT   NOT NULL,
    slashed           TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (request_id, worker)
);

CREATE INDEX disputes_worker ON disputes (worker);
