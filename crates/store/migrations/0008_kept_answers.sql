-- Every capture is answerable: the answer a paid request was charged for, kept with its capture
-- (same transaction) so that a retry with the same payment gets it back instead of a spent
-- nonce. `answer` is the response body as sent (JSON), `charged` what the capture took (base
-- units; less than `amount` for a call priced by what it used). Both are cleared after the
-- retention window (`[payments] answer_retention_secs`); the payment row itself stays.
ALTER TABLE payments ADD COLUMN answer TEXT;
ALTER TABLE payments ADD COLUMN charged TEXT;

-- A retry finds its payment by the authorization it carries (payer and nonce).
CREATE INDEX payments_reference ON payments (payer, reference);
-- Expiring kept answers scans captures by settlement time.
CREATE INDEX payments_settled ON payments (settled_at);
