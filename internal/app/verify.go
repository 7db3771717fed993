package app

import (
	"context"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/recharge"
	"github.com/diamondd/diamondd/internal/refund"
	"github.com/diamondd/diamondd/internal/spend"
)

// Verify runs every invariant check: the ledger's own, and those tying
// orders, refunds and spends to it. It is what `diamondd ledger verify` reports.
func Verify(ctx context.Context, db postgres.DBTX) ([]ledger.Finding, error) {
	var all []ledger.Finding
	for _, check := range []func(context.Context, postgres.DBTX) ([]ledger.Finding, error){
		ledger.Verify, recharge.Verify, refund.Verify, spend.Verify,
	} {
		f, err := check(ctx, db)
		if err != nil {
			return nil, err
		}
		all = append(all, f...)
	}
	return all, nil
}
