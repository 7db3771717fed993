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
		// One journal per paid order, issuing its diamonds from its own
		// channel's issuance account and from no other.
		{Name: "order credit", Query: `
			SELECT format('order %s (%s, %s, user %s): %s recharge journal(s) issuing %s diamonds from issuance:%s and %s line(s) from other issuance accounts, expected %s',
			              o.id, o.status, o.channel, o.user_id, c.journals, c.issued, o.channel, c.foreign_lines,
			              CASE WHEN o.status IN ('paid', 'partially_refunded', 'refunded') THEN o.diamonds ELSE 0 END)
			  FROM orders o
			  CROSS JOIN LATERAL (
				SELECT count(DISTINCT j.id) AS journals,
				       coalesce(-sum(p.amount) FILTER (WHERE p.account = 'issuance:' || o.channel), 0) AS issued,
				       count(p.line) FILTER (WHERE p.account LIKE 'issuance:%' AND p.account <> 'issuance:' || o.channel) AS foreign_lines
				  FROM journals j LEFT JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id
				 WHERE j.user_id = o.user_id AND j.reference = 'recharge:' || o.id
			  ) c
			 WHERE (o.status IN ('paid', 'partially_refunded', 'refunded') AND (c.journals <> 1 OR c.issued <> o.diamonds OR c.foreign_lines > 0))
			    OR (o.status NOT IN ('paid', 'partially_refunded', 'refunded') AND c.journals > 0)`},
		{Name: "credit without order", Query: `
			SELECT format('journal %s (%s) credits no known order', j.id, j.reference)
			  FROM journals j
			 WHERE j.reference LIKE 'recharge:%'
			   AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = j.user_id AND 'recharge:' || o.id = j.reference)`},
	})
}
