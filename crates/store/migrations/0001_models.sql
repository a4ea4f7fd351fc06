-- Published models and their versions.
--
-- One schema for SQLite and PostgreSQL: TEXT and BIGINT only, standard constraints, no
-- autoincrement. Addresses are lowercase 0x hex, model ids `sha256:<hex>`, amounts decimal
-- text (u128 does not fit BIGINT), times unix milliseconds, JSON as text.

-- A name belongs to its first publisher.
CREATE TABLE models (
    name           TEXT   NOT NULL PRIMARY KEY,
    owner          TEXT   NOT NULL,
    -- Highest semver precedence among the versions. Semver does not order as text, so the store
    -- computes it in Rust while it holds the row lock of the publish transaction.
    latest_version TEXT   NOT NULL,
    -- Hex of the name's bytes: sorts in byte order under every collation (PostgreSQL's locale
    -- collations skip '-', '_' and '.', SQLite compares bytes), so both backends page alike.
    sort_key       TEXT   NOT NULL,
    created_at     BIGINT NOT NULL
);

-- Immutable once published, except for the usage counters.
CREATE TABLE model_versions (
    name              TEXT   NOT NULL REFERENCES models (name),
    version           TEXT   NOT NULL,
    -- Parts of the version, for reading the table by hand; the store orders versions in Rust.
    major             BIGINT NOT NULL,
    minor             BIGINT NOT NULL,
    patch             BIGINT NOT NULL,
    pre               TEXT   NOT NULL,
    sha256            TEXT   NOT NULL,
    size              BIGINT NOT NULL,
    description       TEXT   NOT NULL,
    tags              TEXT   NOT NULL,
    license           TEXT   NOT NULL,
    price             TEXT   NOT NULL,
    signature         TEXT   NOT NULL,
    publish_signature TEXT   NOT NULL,
    published_at      BIGINT NOT NULL,
    -- Name, description and tags lowercased in Rust (so both backends fold case alike), for `q`.
    search            TEXT   NOT NULL,
    calls             BIGINT NOT NULL DEFAULT 0,
    failures          BIGINT NOT NULL DEFAULT 0,
    last_called_at    BIGINT,
    PRIMARY KEY (name, version)
);

CREATE INDEX model_versions_sha256 ON model_versions (sha256);

-- One row per distinct tag of a version, for exact tag filters (`tags` keeps the given order).
CREATE TABLE model_tags (
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (name, version, tag),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version)
);

CREATE INDEX model_tags_tag ON model_tags (tag);
