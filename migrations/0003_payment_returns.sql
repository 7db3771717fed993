-- +goose Up
-- Support can return a payment of the wrong amount (it bought nothing), as
-- a refund of its own kind.
ALTER TABLE refunds DROP CONSTRAINT refunds_kind_known,
    ADD CONSTRAINT refunds_kind_known CHECK (kind IN ('user', 'agent', 'duplicate_payment', 'payment_return'));
