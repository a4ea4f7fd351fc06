-- `payments_reference (payer, reference)` answers every lookup by payer (its leading column), so
-- `payments_payer` was one more b-tree page written by every escrow for nothing.
DROP INDEX payments_payer;
