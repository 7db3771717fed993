-- +goose Up
-- When a refund was first handed to a call that may reach its channel. Until
-- then diamondd knows the channel cannot have it: a user's refund that holds
-- diamonds is failed instead of sent if its user owes diamonds by then.
-- Adding a nullable column without a default changes no row. Refunds past
-- review before this migration count as submitted: whether an earlier call
-- reached the channel cannot be known now.
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS submitted_at timestamptz;
UPDATE refunds SET submitted_at = updated_at
 WHERE submitted_at IS NULL AND status IN ('approved', 'processing', 'succeeded');
