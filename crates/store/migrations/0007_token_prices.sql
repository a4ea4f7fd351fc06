-- A language or embedding model version's per-token royalties (JSON `TokenPrices`: base
-- units per 1,000 prompt and completion tokens), set at publish.
ALTER TABLE model_versions ADD COLUMN token_prices TEXT;
