-- +goose Up
-- When a refund was first handed to a call that may reach its channel. Until
-- then diamondd knows the channel cannot have it: a user's refund that holds
-- diamonds is failed instead of sent if its user owes diamonds by then.
-- Adding a nullable column without a default rewrites no row; the lock it
-- takes is held only through the small update below, and not waited for
-- long behind a busy table (a deploy that times out runs it again).
-- Approved refunds from before count as submitted: an earlier call may have
-- reached the channel. Only approved refunds are ever looked at for this, so
-- no other row is touched (refunds_work serves the update).
SET LOCAL lock_timeout = '5s';
ALTER TABLE refunds ADD COLUMN IF NOT EXISTS submitted_at timestamptz;
UPDATE refunds SET submitted_at = updated_at WHERE status = 'approved' AND submitted_at IS NULL;
