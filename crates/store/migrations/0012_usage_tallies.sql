-- Usage roll-ups: request events counted per time bucket and per key (model, app, payer, mode,
-- outcome, check), what the flywheel report reads. `tier` is the bucket width in seconds: 1
-- (partial rows, one per key per flush, kept an hour) and 60 (one row per key per minute,
-- rewritten from the tier-1 rows as minutes close). `key` and `data` are JSON.
CREATE TABLE usage_tallies (
    tier       INTEGER NOT NULL,
    bucket     BIGINT  NOT NULL,
    key        TEXT    NOT NULL,
    data       TEXT    NOT NULL
);

CREATE INDEX usage_tallies_tier_bucket ON usage_tallies (tier, bucket);
