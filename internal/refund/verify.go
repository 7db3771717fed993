package refund

import (
	"context"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Verify checks refunds against the ledger: a settled refund took its
// diamonds back exactly once and as many as it says, an unsettled one never
// did, every refund journal names a refund, an order never gives back more
// than it credited, and each user's held diamonds are exactly the holds of
// their live refunds.
func Verify(ctx context.Context, db postgres.DBTX) ([]ledger.Finding, error) {
	return ledger.RunChecks(ctx, db, []ledger.Check{
		// A succeeded refund that took diamonds back has exactly one
		// settlement (one that took none may have released a hold in one);
		// any other refund has none.
		{Name: "refund settlement", Query: `
			SELECT format('refund %s (%s, user %s, %s diamonds): %s settlement journal(s)', r.id, r.status, r.user_id, r.diamonds, count(j.id))
			  FROM refunds r
			  LEFT JOIN journals j ON j.user_id = r.user_id AND j.reference = 'refund-post:' || r.id
			 GROUP BY r.user_id, r.id, r.status, r.diamonds
			HAVING (r.status = 'succeeded' AND r.diamonds > 0 AND count(j.id) <> 1)
			    OR (r.status = 'succeeded' AND count(j.id) > 1)
			    OR (r.status <> 'succeeded' AND count(j.id) > 0)`},
		{Name: "refund settlement amount", Query: `
			SELECT format('refund %s (user %s): settled %s diamonds into refunded, the refund took %s', r.id, r.user_id, coalesce(sum(p.amount), 0), r.diamonds)
			  FROM refunds r
			  JOIN journals j ON j.user_id = r.user_id AND j.reference = 'refund-post:' || r.id
			  LEFT JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id AND p.account = 'refunded'
			 WHERE r.status = 'succeeded'
			 GROUP BY r.user_id, r.id, r.diamonds
			HAVING coalesce(sum(p.amount), 0) <> r.diamonds`},
		{Name: "refund journal without refund", Query: `
			SELECT format('journal %s (%s, user %s) names no refund of the user', j.id, j.reference, j.user_id)
			  FROM journals j
			 WHERE j.reference ~ '^refund-(hold|release|post):'
			   AND NOT EXISTS (SELECT 1 FROM refunds r
			                    WHERE r.user_id = j.user_id AND r.id::text = split_part(j.reference, ':', 2))`},
		{Name: "clawback within order", Query: `
			SELECT format('order %s (user %s): refunds took back %s diamonds of the %s it credited', o.id, o.user_id, sum(p.amount), o.diamonds)
			  FROM orders o
			  JOIN refunds r ON r.user_id = o.user_id AND r.order_id = o.id
			  JOIN journals j ON j.user_id = r.user_id AND j.reference = 'refund-post:' || r.id
			  JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id AND p.account = 'refunded'
			 GROUP BY o.user_id, o.id, o.diamonds
			HAVING sum(p.amount) > o.diamonds`},
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
