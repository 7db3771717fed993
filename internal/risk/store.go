package risk

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Recent reads what Input.Recent needs for an order paid at paidAt: the
// user's other paid recharges within window before it, and at least sample
// of the newest paid at or before it. Both come from one index scan of
// orders_user_paid.
func Recent(ctx context.Context, db postgres.DBTX, userID, orderID string, paidAt time.Time, window time.Duration, sample int) ([]Paid, error) {
	rows, err := db.Query(ctx, recentQuery, userID, paidAt, orderID, sample, window)
	if err != nil {
		return nil, fmt.Errorf("read recent recharges of %s: %w", userID, err)
	}
	return collectRecent(userID, rows)
}

// QueueRecent is Recent as a statement of the caller's batch, read into into.
func QueueRecent(b *pgx.Batch, userID, orderID string, paidAt time.Time, window time.Duration, sample int, into *[]Paid) {
	b.Queue(recentQuery, userID, paidAt, orderID, sample, window).Query(func(rows pgx.Rows) error {
		var err error
		*into, err = collectRecent(userID, rows)
		return err
	})
}

const recentQuery = `
		SELECT id::text, channel, amount_fen, paid_at
		  FROM orders
		 WHERE user_id = $1 AND paid_at IS NOT NULL AND paid_at <= $2 AND id::text <> $3
		 ORDER BY paid_at DESC
		 LIMIT greatest($4::int, (SELECT count(*) FROM orders
		                           WHERE user_id = $1 AND paid_at IS NOT NULL AND paid_at <= $2 AND paid_at >= $2 - $5::interval))`

func collectRecent(userID string, rows pgx.Rows) ([]Paid, error) {
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Paid, error) {
		var p Paid
		err := r.Scan(&p.OrderID, &p.Channel, &p.AmountFen, &p.PaidAt)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read recent recharges of %s: %w", userID, err)
	}
	return out, nil
}
