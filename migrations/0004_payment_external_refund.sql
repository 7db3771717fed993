-- +goose Up
-- A payment the channel reports refunded before diamondd credited it (money
-- returned outside diamondd while the payment's notification was lost) is
-- recorded under its natural key, so that a later report of the same trade
-- is a no-op, and never credited: the order is flagged external_refund.
ALTER TABLE payments DROP CONSTRAINT payments_outcome_known,
    ADD CONSTRAINT payments_outcome_known CHECK (outcome IN ('credited', 'amount_mismatch', 'duplicate', 'external_refund'));
