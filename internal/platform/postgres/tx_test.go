package postgres_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func notes(t *testing.T) *pgxpool.Pool {
	pool := pgtest.Pool(t)
	_, err := pool.Exec(context.Background(), `CREATE TABLE notes (n int PRIMARY KEY)`)
	require.NoError(t, err)
	return pool
}

func noted(t *testing.T, pool *pgxpool.Pool) []int {
	rows, err := pool.Query(context.Background(), `SELECT n FROM notes ORDER BY n`)
	require.NoError(t, err)
	ns, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return ns
}

var errAbort = errors.New("abort")

// BEGIN travels with the first batch or row query, and it is a real BEGIN:
// what the first round trip wrote rolls back with the rest. (Were BEGIN
// missing, the first round trip would commit on its own.)
func TestTxBeginTravelsWithTheFirstRoundTrip(t *testing.T) {
	t.Parallel()
	pool := notes(t)
	ctx := context.Background()
	first := map[string]func(tx pgx.Tx) error{
		"batch": func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`SELECT 1`)
			b.Queue(`INSERT INTO notes VALUES (1)`)
			return tx.SendBatch(ctx, b).Close()
		},
		"row": func(tx pgx.Tx) error {
			var n int
			return tx.QueryRow(ctx, `INSERT INTO notes VALUES (1) RETURNING n`).Scan(&n)
		},
		"exec": func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO notes VALUES (1)`)
			return err
		},
		"exec with arguments": func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO notes VALUES ($1)`, 1)
			return err
		},
		"query": func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `INSERT INTO notes VALUES (1) RETURNING n`)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		},
	}
	for name, send := range first {
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			if err := send(tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO notes VALUES (3)`)
			require.NoError(t, err, name)
			return errAbort
		})
		require.ErrorIs(t, err, errAbort, name)
		require.Empty(t, noted(t, pool), name)

		require.NoError(t, postgres.WithTx(ctx, pool, send), name)
		require.Equal(t, []int{1}, noted(t, pool), name)
		_, err = pool.Exec(ctx, `DELETE FROM notes`)
		require.NoError(t, err)
	}
	// a transaction that sends nothing commits nothing, without a round trip
	require.NoError(t, postgres.WithTx(ctx, pool, func(pgx.Tx) error { return nil }))
}

// QueueCommit commits in the batch's round trip; nothing may follow it. A
// failing statement of the batch skips the COMMIT and everything rolls back.
func TestTxQueueCommit(t *testing.T) {
	t.Parallel()
	pool := notes(t)
	ctx := context.Background()

	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO notes VALUES (1)`)
		require.NoError(t, tx.SendBatch(ctx, b).Close())
		fin := &pgx.Batch{}
		fin.Queue(`INSERT INTO notes VALUES (2)`)
		postgres.QueueCommit(tx, fin)
		require.NoError(t, tx.SendBatch(ctx, fin).Close())
		_, err := tx.Exec(ctx, `INSERT INTO notes VALUES (3)`)
		require.ErrorIs(t, err, pgx.ErrTxClosed, "nothing is sent after the commit")
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, noted(t, pool))

	err = postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO notes VALUES (4)`)
		require.NoError(t, tx.SendBatch(ctx, b).Close())
		fin := &pgx.Batch{}
		fin.Queue(`INSERT INTO notes VALUES (5)`)
		fin.Queue(`INSERT INTO notes VALUES (1)`) // a duplicate: fails the batch
		postgres.QueueCommit(tx, fin)
		return tx.SendBatch(ctx, fin).Close()
	})
	require.True(t, postgres.IsUniqueViolation(err, "notes_pkey"), "%v", err)
	require.Equal(t, []int{1, 2}, noted(t, pool))

	// the connection went back to the pool clean: the next transaction works
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO notes VALUES (6)`)
		postgres.QueueCommit(tx, b) // one round trip: BEGIN, the insert, COMMIT
		return tx.SendBatch(ctx, b).Close()
	}))
	require.Equal(t, []int{1, 2, 6}, noted(t, pool))
}

// A deferred constraint that fails at a queued COMMIT fails the batch, and
// nothing is committed: here the ledger's balance trigger, refusing a
// journal without postings.
func TestTxQueuedCommitRunsDeferredChecks(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO journals (user_id, id, kind, reference) VALUES ('u1', $1, 'test', 'unbalanced')`, uuid.New())
		postgres.QueueCommit(tx, b)
		return tx.SendBatch(ctx, b).Close()
	})
	require.Error(t, err)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM journals`).Scan(&n))
	require.Zero(t, n)
}

// A first round trip that fails before its BEGIN runs (here while pgx
// prepares its statements) leaves no transaction open: nothing more is sent
// in it, so nothing can commit on its own.
func TestTxNothingRunsOutsideTheTransaction(t *testing.T) {
	t.Parallel()
	pool := notes(t)
	ctx := context.Background()
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT no_such_column FROM notes`)
		require.Error(t, tx.SendBatch(ctx, b).Close())
		_, err := tx.Exec(ctx, `INSERT INTO notes VALUES ($1)`, 7)
		require.Error(t, err)
		_, err = tx.Exec(ctx, `INSERT INTO notes VALUES (8)`)
		require.Error(t, err)
		require.Error(t, tx.QueryRow(ctx, `INSERT INTO notes VALUES (9) RETURNING n`).Scan(new(int)))
		return errAbort
	})
	require.ErrorIs(t, err, errAbort)
	require.Empty(t, noted(t, pool))
}

// Once a batch holding the queued COMMIT is sent, nothing more is sent in
// the transaction. The server commits when it reaches the COMMIT, so an
// error the caller finds in the batch's results afterwards (here a scan)
// undoes nothing: QueueCommit's contract is that such a batch holds only
// statements whose results the caller does not judge.
func TestTxNothingAfterAQueuedCommit(t *testing.T) {
	t.Parallel()
	pool := notes(t)
	ctx := context.Background()
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO notes VALUES (1) RETURNING 'not a number'::text`)
		postgres.QueueCommit(tx, b)
		br := tx.SendBatch(ctx, b)
		scanErr := br.QueryRow().Scan(new(int))
		require.Error(t, scanErr)
		_ = br.Close()
		_, err := tx.Exec(ctx, `INSERT INTO notes VALUES ($1)`, 2)
		require.ErrorIs(t, err, pgx.ErrTxClosed)
		return scanErr
	})
	require.Error(t, err)
	require.Equal(t, []int{1}, noted(t, pool))
}
