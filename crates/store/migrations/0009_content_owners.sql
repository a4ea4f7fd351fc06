-- A content hash has one owner: the key that first published those bytes. Another key
-- republishing the same bytes under another name is refused (its royalties would be taken
-- from the first publisher), and calls by `sha256:` resolve to the first publication.
CREATE TABLE content_owners (
    sha256       TEXT   NOT NULL PRIMARY KEY,
    owner        TEXT   NOT NULL,
    -- The first publication: name and when.
    name         TEXT   NOT NULL,
    published_at BIGINT NOT NULL
);

-- Existing hubs: each hash goes to the owner of its earliest publication (ties: name, version).
INSERT INTO content_owners (sha256, owner, name, published_at)
SELECT v.sha256, m.owner, v.name, v.published_at
FROM model_versions v JOIN models m ON m.name = v.name
WHERE NOT EXISTS (
    SELECT 1 FROM model_versions w
    WHERE w.sha256 = v.sha256
      AND (w.published_at < v.published_at
           OR (w.published_at = v.published_at AND w.name < v.name)
           OR (w.published_at = v.published_at AND w.name = v.name AND w.version < v.version))
);
