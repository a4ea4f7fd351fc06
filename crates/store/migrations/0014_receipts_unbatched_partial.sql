-- The sealer seals its own receipts before it writes them, so only receipts committed with a
-- capture are ever stored unsealed, and only until the next seal. The index that finds them
-- holds just those, instead of an entry for every receipt ever stored.
DROP INDEX receipts_unbatched;
CREATE INDEX receipts_unbatched ON receipts (node, created_at, request_id) WHERE batch_id IS NULL;
