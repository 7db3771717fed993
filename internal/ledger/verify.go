package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Finding is one broken invariant.
type Finding struct {
	Check  string
	Detail string
}

func (f Finding) String() string { return f.Check + ": " + f.Detail }

// Verify recomputes the ledger from its postings: every journal has at least
// two postings summing to zero, every reference is applied once, every wallet
// equals the sum of its postings, system accounts keep their sign for every
// user, and nobody has diamonds available while in debt. It
// returns what it found broken (nothing when the ledger is sound).
func Verify(ctx context.Context, db postgres.DBTX) ([]Finding, error) {
	return RunChecks(ctx, db, []Check{
		{Name: "unbalanced journal", Query: `
			SELECT format('journal %s (%s, user %s): %s postings summing to %s', j.id, j.reference, j.user_id, count(p.line), coalesce(sum(p.amount), 0))
			  FROM journals j LEFT JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id
			 GROUP BY j.user_id, j.id, j.reference
			HAVING count(p.line) < 2 OR coalesce(sum(p.amount), 0) <> 0`},
		{Name: "orphan posting", Query: `
			SELECT format('posting %s/%s of user %s has no journal', p.journal_id, p.line, p.user_id)
			  FROM postings p
			 WHERE NOT EXISTS (SELECT 1 FROM journals j WHERE j.user_id = p.user_id AND j.id = p.journal_id)`},
		{Name: "duplicate reference", Query: `
			SELECT format('reference %s applied %s times', reference, count(*))
			  FROM journals GROUP BY reference HAVING count(*) > 1`},
		{Name: "wallet differs from postings", Query: `
			WITH sums AS (
				SELECT user_id,
				       coalesce(sum(amount) FILTER (WHERE account = 'available'), 0) AS available,
				       coalesce(sum(amount) FILTER (WHERE account = 'held'), 0) AS held,
				       -coalesce(sum(amount) FILTER (WHERE account = 'debt'), 0) AS debt
				  FROM postings GROUP BY user_id
			)
			SELECT format('user %s: wallet available=%s held=%s debt=%s, postings say available=%s held=%s debt=%s',
			              coalesce(w.user_id, s.user_id),
			              coalesce(w.available, 0), coalesce(w.held, 0), coalesce(w.debt, 0),
			              coalesce(s.available, 0), coalesce(s.held, 0), coalesce(s.debt, 0))
			  FROM wallets w FULL JOIN sums s ON s.user_id = w.user_id
			 WHERE coalesce(w.available, 0) <> coalesce(s.available, 0)
			    OR coalesce(w.held, 0) <> coalesce(s.held, 0)
			    OR coalesce(w.debt, 0) <> coalesce(s.debt, 0)`},
		{Name: "negative user balance", Query: `
			SELECT format('user %s: %s sums to %s', user_id, account, sum(amount))
			  FROM postings WHERE account IN ('available', 'held')
			 GROUP BY user_id, account HAVING sum(amount) < 0
			UNION ALL
			SELECT format('user %s: debt account sums to %s (positive: owes the user)', user_id, sum(amount))
			  FROM postings WHERE account = 'debt'
			 GROUP BY user_id HAVING sum(amount) > 0`},
		// Per user, not only in total: one user's reversed spend or
		// positive issuance would hide in everyone else's sums.
		{Name: "system account sign", Query: `
			SELECT format('user %s: %s sums to %s', user_id, account, sum(amount))
			  FROM postings
			 WHERE account LIKE 'issuance:%' OR account IN ('writeoff', 'spent', 'refunded')
			 GROUP BY user_id, account
			HAVING (account LIKE 'issuance:%' OR account = 'writeoff') AND sum(amount) > 0
			    OR account IN ('spent', 'refunded') AND sum(amount) < 0`},
		// Debt is paid first by anything that comes in (a credit, a
		// release), and spending stops while there is any.
		{Name: "available while in debt", Query: `
			SELECT format('user %s: %s available while owing %s', user_id, available, debt)
			  FROM wallets WHERE available > 0 AND debt > 0`},
		{Name: "unknown account", Query: `
			SELECT format('posting %s/%s of user %s on unknown account %s', journal_id, line, user_id, account)
			  FROM postings
			 WHERE account NOT IN ('available', 'held', 'debt', 'spent', 'refunded', 'writeoff')
			   AND account NOT LIKE 'issuance:_%'`},
	})
}

// Check is one invariant: a query returning one line per broken instance.
type Check struct {
	Name  string
	Query string
}

// MaxFindings is how many findings of one check are reported: past that the
// report says there are more, so a badly broken ledger gives a report an
// operator can read, and verify's memory stays small.
const MaxFindings = 100

// RunChecks runs invariant queries and collects what they report. The
// recharge, refund and spend packages check their tables against the ledger
// with it.
func RunChecks(ctx context.Context, db postgres.DBTX, checks []Check) ([]Finding, error) {
	var out []Finding
	for _, c := range checks {
		rows, err := db.Query(ctx, `SELECT d FROM (`+c.Query+`) AS found(d) LIMIT $1`, MaxFindings+1)
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", c.Name, err)
		}
		details, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", c.Name, err)
		}
		for i, d := range details {
			if i == MaxFindings {
				d = fmt.Sprintf("and more (only the first %d are listed)", MaxFindings)
			}
			out = append(out, Finding{Check: c.Name, Detail: d})
		}
	}
	return out, nil
}
