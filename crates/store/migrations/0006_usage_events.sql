-- Usage events: one row per thing that happened (a request and how it went, a publish, a node
-- joining, a dispute), written in batches off the request path; the flywheel reads windows.
CREATE TABLE usage_events (
    id         TEXT   NOT NULL PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    -- The event's fields as JSON (model, app, payer, status, price, ...).
    data       TEXT   NOT NULL
);

CREATE INDEX usage_events_at ON usage_events (at);
