-- +goose Up
-- +goose NO TRANSACTION
-- A payment the channel reports refunded before diamondd credited it (money
-- returned outside diamondd while the payment's notification was lost) is
-- recorded under its natural key, so that a later report of the same trade
-- is a no-op, and never credited: the order is flagged external_refund.
-- NOT VALID, then VALIDATE, outside a transaction: the check of existing
-- rows runs without blocking writes to payments (only the swap, one
-- statement, takes the table's lock, briefly). Run again after a crash in
-- between, it swaps and validates again.
ALTER TABLE payments DROP CONSTRAINT payments_outcome_known,
    ADD CONSTRAINT payments_outcome_known CHECK (outcome IN ('credited', 'amount_mismatch', 'duplicate', 'external_refund')) NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_outcome_known;
