package refund

import (
	"context"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Verify checks refunds against the ledger: a settled refund took its
// diamonds back exactly once, an unsettled one never did, and each user's
// held diamonds are exactly the holds of their live refunds.
func Verify(ctx context.Context, db postgres.DBTX) ([]ledger.Finding, error) {
	return ledger.RunChecks(ctx, db, []ledger.Check{
		{Name: "refund settlement", Query: `
			SELECT format('refund %s (%s, user %s): %s settlement journal(s)', r.id, r.status, r.user_id, count(j.id))
			  FROM refunds r
			  LEFT JOIN journals j ON j.user_id = r.user_id AND j.reference = 'refund-post:' || r.id
			 WHERE r.diamonds > 0
			 GROUP BY r.user_id, r.id, r.status
			HAVING (r.status = 'succeeded' AND count(j.id) <> 1) OR (r.status <> 'succeeded' AND count(j.id) > 0)`},
		{Name: "held diamonds", Query: `
			WITH live AS (
				SELECT user_id, sum(held) AS held FROM refunds
				 WHERE status IN ('pending_review', 'approved', 'processing') GROUP BY user_id
			)
			SELECT format('user %s: %s held, live refunds hold %s', coalesce(w.user_id, l.user_id), coalesce(w.held, 0), coalesce(l.held, 0))
			  FROM wallets w FULL JOIN live l ON l.user_id = w.user_id
			 WHERE coalesce(w.held, 0) <> coalesce(l.held, 0)`},
		{Name: "refunds within order", Query: `
			SELECT format('order %s: live refunds of %s fen and %s diamonds exceed %s fen and %s diamonds', o.id,
			              sum(r.amount_fen), sum(r.diamonds), o.amount_fen, o.diamonds)
			  FROM orders o JOIN refunds r ON r.user_id = o.user_id AND r.order_id = o.id
			 WHERE r.clawback <> 'none' AND r.status NOT IN ('failed', 'rejected', 'cancelled')
			 GROUP BY o.user_id, o.id, o.amount_fen, o.diamonds
			HAVING sum(r.amount_fen) > o.amount_fen OR sum(r.diamonds) > o.diamonds`},
	})
}
