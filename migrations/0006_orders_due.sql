-- +goose Up
-- +goose NO TRANSACTION
-- The pending-order worker now watches failed orders too: a failed payment
-- attempt leaves the order open at its channel, where the payer may still
-- pay it, so the order is queried and, at its expiry, closed there. The
-- worker's claim reads orders whose check_after is due, whatever their
-- status; only watched orders have one, so the index holds just those.
-- Built and swapped without blocking writes to orders; run again after a
-- crash in between, it builds the new index afresh (a half-built one is
-- invalid) and drops the old one if still there.
DROP INDEX CONCURRENTLY IF EXISTS orders_due;
CREATE INDEX CONCURRENTLY orders_due ON orders (check_after) WHERE check_after IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS orders_pending;
-- Failed orders from before this change that have not expired yet are
-- watched from now on; older ones are past the time_expire their channel
-- was given, after which it takes no payment.
UPDATE orders SET check_after = expires_at
 WHERE status = 'failed' AND check_after IS NULL AND expires_at > now();
