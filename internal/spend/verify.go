package spend

import (
	"context"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Verify checks spends against the ledger: every spend journal has its
// spends row and every row its journal, for the same diamonds.
func Verify(ctx context.Context, db postgres.DBTX) ([]ledger.Finding, error) {
	return ledger.RunChecks(ctx, db, []ledger.Check{
		{Name: "spend journal without spend", Query: `
			SELECT format('journal %s (%s, user %s) names no spend of the user', j.id, j.reference, j.user_id)
			  FROM journals j
			 WHERE j.reference LIKE 'spend:%'
			   AND NOT EXISTS (SELECT 1 FROM spends s WHERE s.user_id = j.user_id AND 'spend:' || s.id = j.reference)`},
		{Name: "spend ledger", Query: `
			SELECT format('spend %s (user %s, %s diamonds): %s journal(s) moving %s diamonds into spent',
			              s.id, s.user_id, s.diamonds, count(DISTINCT j.id), coalesce(sum(p.amount), 0))
			  FROM spends s
			  LEFT JOIN journals j ON j.user_id = s.user_id AND j.reference = 'spend:' || s.id
			  LEFT JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id AND p.account = 'spent'
			 GROUP BY s.user_id, s.id, s.diamonds
			HAVING count(DISTINCT j.id) <> 1 OR coalesce(sum(p.amount), 0) <> s.diamonds`},
	})
}
