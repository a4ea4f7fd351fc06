-- Kept answers in a table of their own. Inline, a paid digits answer (~1.5 KB, its receipt
-- included) made its payment row ~2.1 KB: two did not fit in one 4 KiB SQLite page, so every
-- paid request wrote a page of the payments table alone (60,000 payments took 60,147 pages).
-- The payment row is now ~0.6 KB, and two answers share a page. `charged` stays with the
-- payment; the answer's row is deleted when its retention window ends.
CREATE TABLE payment_answers (
    request_id TEXT PRIMARY KEY,
    answer TEXT NOT NULL
);
INSERT INTO payment_answers (request_id, answer) SELECT request_id, answer FROM payments WHERE answer IS NOT NULL;
ALTER TABLE payments DROP COLUMN answer;
