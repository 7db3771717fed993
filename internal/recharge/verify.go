package recharge

import (
	"context"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Verify checks orders against the ledger: every paid order credited exactly
// once with its diamonds, and no unpaid order credited at all.
func Verify(ctx context.Context, db postgres.DBTX) ([]ledger.Finding, error) {
	return ledger.RunChecks(ctx, db, []ledger.Check{
		{Name: "order credit", Query: `
			SELECT format('order %s (%s, user %s): %s recharge journal(s) issuing %s diamonds, expected %s',
			              o.id, o.status, o.user_id, count(j.id), coalesce(-sum(p.amount), 0),
			              CASE WHEN o.status IN ('paid', 'partially_refunded', 'refunded') THEN o.diamonds ELSE 0 END)
			  FROM orders o
			  LEFT JOIN journals j ON j.user_id = o.user_id AND j.reference = 'recharge:' || o.id
			  LEFT JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id AND p.account LIKE 'issuance:%'
			 GROUP BY o.user_id, o.id, o.status, o.diamonds
			HAVING (o.status IN ('paid', 'partially_refunded', 'refunded') AND (count(j.id) <> 1 OR -sum(p.amount) <> o.diamonds))
			    OR (o.status NOT IN ('paid', 'partially_refunded', 'refunded') AND count(j.id) > 0)`},
		{Name: "credit without order", Query: `
			SELECT format('journal %s (%s) credits no known order', j.id, j.reference)
			  FROM journals j
			 WHERE j.reference LIKE 'recharge:%'
			   AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = j.user_id AND 'recharge:' || o.id = j.reference)`},
	})
}
