package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

// Regression (a bug found in review, now fixed), as first reported:
// PostWith treats any pgx.ErrNoRows as "the user has no wallet yet", but
// the error it tests may come from Close(), i.e. from a callback of the
// caller's extra statements. An extra QueryRow whose statement returns no
// row (an UPDATE ... RETURNING that matched nothing, a guard SELECT) makes
// PostWith run its fallback on a wallet that exists: the projection is moved
// a second time (600 credited, wallet shows 1200), the caller's error is
// swallowed and PostWith reports success.
func TestPostWithExtraNoRowsIsTheCallersError(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	l := ledger.New(nil, nil)
	ctx := context.Background()
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := l.Credit(ctx, tx, "u1", "sandbox", 100, "recharge:o0", "")
		return err
	}))

	var callbackErr error
	var bal ledger.Balance
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		bal0, err := l.Lock(ctx, tx, "u1")
		if err != nil {
			return err
		}
		extra := &pgx.Batch{}
		extra.Queue(`UPDATE wallets SET updated_at = now() WHERE user_id = 'nobody' RETURNING user_id`).QueryRow(func(row pgx.Row) error {
			var s string
			callbackErr = row.Scan(&s)
			if callbackErr != nil {
				return fmt.Errorf("guard: %w", callbackErr)
			}
			return nil
		})
		bal, err = l.CreditLocked(ctx, tx, bal0, "sandbox", 600, "recharge:o1", "", extra)
		return err
	})
	require.True(t, errors.Is(callbackErr, pgx.ErrNoRows), "the extra statement's callback did fail")
	got, gerr := ledger.Get(ctx, pool, "u1")
	require.NoError(t, gerr)
	findings, verr := ledger.Verify(ctx, pool)
	require.NoError(t, verr)
	t.Logf("PostWith error: %v; returned balance %+v; wallet now %+v; verify: %v", err, bal, got, findings)
	assert.Error(t, err, "the caller's statement failed; PostWith must not report success")
	assert.EqualValues(t, 100, got.Available, "the transaction rolled back: no credit, no double projection")
	assert.Empty(t, findings)
}

// Regression (a bug found in review, now fixed), as first reported:
// With no wallet yet (the fallback's own case) an error of the caller's
// extra statements is dropped: err is already ErrNoRows when Close's error
// comes back, so cerr is discarded and the journal commits as if the
// caller's statements had succeeded.
func TestPostWithMissingWalletKeepsExtraError(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	l := ledger.New(nil, nil)
	ctx := context.Background()
	sentinel := errors.New("caller's check failed")
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		extra := &pgx.Batch{}
		extra.Queue(`SELECT 1`).QueryRow(func(row pgx.Row) error {
			var n int
			if err := row.Scan(&n); err != nil {
				return err
			}
			return sentinel
		})
		_, err := l.PostWith(ctx, tx, ledger.Journal{UserID: "new-user", Kind: "recharge", Reference: "recharge:x",
			Postings: []ledger.Posting{{ledger.Issuance("sandbox"), -10}, {ledger.Available, 10}}}, extra)
		return err
	})
	got, _ := ledger.Get(ctx, pool, "new-user")
	t.Logf("PostWith error: %v; wallet %+v", err, got)
	assert.ErrorIs(t, err, sentinel, "the extra statement's error must reach the caller")
}

// Regression (a bug found in review, now fixed), as first reported:
// Any CHECK violation in the round trip, including one raised by the
// caller's extra statements, is reported as ErrInsufficient (which Spend's
// caller turns into 409 insufficient_diamonds): here a spends row with 0
// diamonds violates spends_diamonds_positive, not a wallet balance.
func TestPostWithExtraCheckViolationIsNotInsufficient(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	l := ledger.New(nil, nil)
	ctx := context.Background()
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := l.Credit(ctx, tx, "u1", "sandbox", 100, "recharge:o0", "")
		return err
	}))
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		extra := &pgx.Batch{}
		extra.Queue(`INSERT INTO spends (user_id, id, service, reference, diamonds) VALUES ('u1', gen_random_uuid(), 's', 'r', 0)`)
		_, err := l.Spend(ctx, tx, "u1", 10, "spend:x", "", extra)
		return err
	})
	t.Logf("error: %v", err)
	assert.False(t, errors.Is(err, ledger.ErrInsufficient), "100 available, 10 spent: the balance was sufficient; the failure is the caller's row")
}
