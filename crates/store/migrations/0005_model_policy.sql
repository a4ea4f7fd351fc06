-- A model version's verification policy (JSON: sample rate, float tolerance), set at publish.
ALTER TABLE model_versions ADD COLUMN policy TEXT;
