package risk

import (
	"fmt"

	"github.com/jackc/pgx/v5"
)

// recentRows bounds how many earlier recharges the rules read. Every rule
// looks at the newest ones only: a user with more than this many in the
// windows is a burst already, so reading further would cost a hot user
// thousands of rows per credit (inside the wallet lock) and change nothing.
const recentRows = 100

// QueueRecent queues the read of what Input.Recent needs for an order into
// the caller's batch, after the user's lock: the user's other paid
// recharges, newest first, at least sample of them and up to recentRows
// (which covers the windows of any user who is not already a burst). There
// is no bound on paid_at: under the lock every paid recharge was credited
// before this one, even one that a clock running ahead stamped later. One
// index scan of orders_user_paid; the rows land in into.
func QueueRecent(b *pgx.Batch, userID, orderID string, sample int, into *[]Paid) {
	b.Queue(recentQuery, userID, orderID, max(sample, recentRows)).Query(func(rows pgx.Rows) error {
		var err error
		*into, err = collectRecent(userID, rows)
		return err
	})
}

const recentQuery = `
		SELECT id::text, channel, amount_fen, paid_at
		  FROM orders
		 WHERE user_id = $1 AND paid_at IS NOT NULL AND id::text <> $2
		 ORDER BY paid_at DESC
		 LIMIT $3`

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
