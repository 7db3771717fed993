package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func post(t *testing.T, pool *pgxpool.Pool, l *ledger.Ledger, j ledger.Journal) (ledger.Balance, error) {
	t.Helper()
	var bal ledger.Balance
	err := postgres.WithTx(context.Background(), pool, func(tx pgx.Tx) error {
		var err error
		bal, err = l.Post(context.Background(), tx, j)
		return err
	})
	return bal, err
}

func requireClean(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	findings, err := ledger.Verify(context.Background(), pool)
	require.NoError(t, err)
	require.Empty(t, findings)
}

func TestPostJournals(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	l := ledger.New(nil, nil)
	credit := ledger.Journal{UserID: "u1", Kind: "recharge", Reference: "recharge:o1",
		Postings: []ledger.Posting{{ledger.Issuance("sandbox"), -600}, {ledger.Available, 600}}}
	_, err := post(t, pool, l, credit)
	require.NoError(t, err)

	tests := []struct {
		name    string
		journal ledger.Journal
		want    error
	}{
		{"balanced spend", ledger.Journal{UserID: "u1", Kind: "spend", Reference: "spend:1",
			Postings: []ledger.Posting{{ledger.Available, -100}, {ledger.Spent, 100}}}, nil},
		{"unbalanced", ledger.Journal{UserID: "u1", Kind: "spend", Reference: "spend:2",
			Postings: []ledger.Posting{{ledger.Available, -100}, {ledger.Spent, 99}}}, ledger.ErrUnbalanced},
		{"single posting", ledger.Journal{UserID: "u1", Kind: "spend", Reference: "spend:3",
			Postings: []ledger.Posting{{ledger.Available, 0}}}, ledger.ErrUnbalanced},
		{"zero amount", ledger.Journal{UserID: "u1", Kind: "spend", Reference: "spend:4",
			Postings: []ledger.Posting{{ledger.Available, 0}, {ledger.Spent, 0}}}, ledger.ErrInvalid},
		{"unknown account", ledger.Journal{UserID: "u1", Kind: "spend", Reference: "spend:5",
			Postings: []ledger.Posting{{ledger.Available, -1}, {"bank", 1}}}, ledger.ErrInvalid},
		{"duplicate reference", credit, ledger.ErrDuplicateReference},
		{"below zero", ledger.Journal{UserID: "u1", Kind: "spend", Reference: "spend:6",
			Postings: []ledger.Posting{{ledger.Available, -501}, {ledger.Spent, 501}}}, ledger.ErrInsufficient},
		{"new user below zero", ledger.Journal{UserID: "u2", Kind: "spend", Reference: "spend:7",
			Postings: []ledger.Posting{{ledger.Available, -1}, {ledger.Spent, 1}}}, ledger.ErrInsufficient},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := post(t, pool, l, tc.journal)
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
	bal, err := ledger.Get(context.Background(), pool, "u1")
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u1", Available: 500}, bal)
	requireClean(t, pool)
}

// The database refuses an unbalanced journal even from code that bypasses
// the ledger package, and refuses to rewrite history.
func TestDatabaseGuards(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO journals (user_id, id, kind, reference) VALUES ('u', gen_random_uuid(), 'x', 'r1')`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO postings (user_id, journal_id, line, account, amount)
			SELECT 'u', id, 1, 'available', 5 FROM journals WHERE reference = 'r1'`)
		return err
	})
	require.True(t, postgres.IsCheckViolation(err, "journals_balanced"), "got %v", err)

	l := ledger.New(nil, nil)
	_, err = post(t, pool, l, ledger.Journal{UserID: "u", Kind: "recharge", Reference: "r2",
		Postings: []ledger.Posting{{ledger.Issuance("sandbox"), -5}, {ledger.Available, 5}}})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE postings SET amount = 50 WHERE user_id = 'u'`)
	require.ErrorContains(t, err, "append-only")
	_, err = pool.Exec(ctx, `DELETE FROM journals`)
	require.ErrorContains(t, err, "append-only")
}

func entryString(e ledger.Entry) string {
	return fmt.Sprintf("%s/%s/%d", e.Reference, e.Account, e.Amount)
}

func TestHoldsAndDebt(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	l := ledger.New(nil, nil)
	run := func(fn func(tx pgx.Tx) (ledger.Balance, error)) (ledger.Balance, error) {
		var bal ledger.Balance
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			var err error
			bal, err = fn(tx)
			return err
		})
		return bal, err
	}
	bal, err := run(func(tx pgx.Tx) (ledger.Balance, error) {
		return l.Credit(ctx, tx, "u", "sandbox", 1000, "recharge:a", "")
	})
	require.NoError(t, err)
	require.Equal(t, int64(1000), bal.Available)

	// place, then void: back to available
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 300, "refund-hold:r1", "") })
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Available: 700, Held: 300}, bal)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Release(ctx, tx, "u", 300, "refund-void:r1", "") })
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Available: 1000}, bal)

	// a hold beyond available is refused and changes nothing
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 1001, "refund-hold:r2", "") })
	require.ErrorIs(t, err, ledger.ErrInsufficient)

	// place, then post: gone for good
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 400, "refund-hold:r3", "") })
	require.NoError(t, err)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "u", 400, 0, 400, ledger.ShortfallDebt, "refund-post:r3", "")
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Available: 600}, bal)

	// spend most, then a refund claws back more than is left: debt
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Spend(ctx, tx, "u", 550, "spend:s1", "", nil) })
	require.NoError(t, err)
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 50, "refund-hold:r4", "") })
	require.NoError(t, err)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "u", 50, 0, 200, ledger.ShortfallDebt, "refund-post:r4", "")
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Debt: 150}, bal)

	// in debt: spending is refused even with diamonds available
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Spend(ctx, tx, "u", 1, "spend:s2", "", nil) })
	require.ErrorIs(t, err, ledger.ErrInsufficient)

	// the next recharge pays the debt first
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		return l.Credit(ctx, tx, "u", "sandbox", 100, "recharge:b", "")
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Debt: 50}, bal)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		return l.Credit(ctx, tx, "u", "sandbox", 100, "recharge:c", "")
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Available: 50}, bal)

	// write-off: the platform absorbs the shortfall, no debt
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 50, "refund-hold:r5", "") })
	require.NoError(t, err)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "u", 50, 0, 80, ledger.ShortfallWriteOff, "refund-post:r5", "")
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u"}, bal)
	var writeoff int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT sum(amount) FROM postings WHERE account = 'writeoff'`).Scan(&writeoff))
	require.Equal(t, int64(-30), writeoff)

	// a settlement smaller than its hold gives the rest back; a larger one
	// takes from available before anything becomes debt
	credit := func(ref string, n int64) {
		_, err := run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Credit(ctx, tx, "u", "sandbox", n, ref, "") })
		require.NoError(t, err)
	}
	credit("recharge:d", 100)
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 30, "refund-hold:r6", "") })
	require.NoError(t, err)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "u", 30, 0, 20, ledger.ShortfallDebt, "refund-post:r6", "")
		require.Equal(t, ledger.Settlement{FromHeld: 20, Released: 10, Balance: st.Balance}, st)
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Available: 80}, bal)
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "u", 10, "refund-hold:r7", "") })
	require.NoError(t, err)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "u", 10, 0, 100, ledger.ShortfallDebt, "refund-post:r7", "")
		require.Equal(t, ledger.Settlement{FromHeld: 10, FromAvailable: 70, Shortfall: 20, Balance: st.Balance}, st)
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "u", Debt: 20}, bal)
	credit("recharge:e", 20)

	// diamonds coming back out of a hold pay debt first, as a credit does
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		return l.Credit(ctx, tx, "v", "sandbox", 100, "recharge:v", "")
	})
	require.NoError(t, err)
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "v", 60, "refund-hold:v1", "") })
	require.NoError(t, err)
	_, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Hold(ctx, tx, "v", 40, "refund-hold:v2", "") })
	require.NoError(t, err)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "v", 0, 0, 30, ledger.ShortfallDebt, "refund-post:v3", "")
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "v", Held: 100, Debt: 30}, bal)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) {
		st, err := l.Settle(ctx, tx, "v", 60, 0, 50, ledger.ShortfallDebt, "refund-post:v1", "")
		require.Equal(t, ledger.Settlement{FromHeld: 50, Released: 10, Repaid: 10, Balance: st.Balance}, st)
		return st.Balance, err
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "v", Held: 40, Debt: 20}, bal)
	bal, err = run(func(tx pgx.Tx) (ledger.Balance, error) { return l.Release(ctx, tx, "v", 40, "refund-void:v2", "") })
	require.NoError(t, err)
	require.Equal(t, ledger.Balance{UserID: "v", Available: 20}, bal)

	entries, err := ledger.Entries(ctx, pool, "u", nil, 3)
	require.NoError(t, err)
	require.Len(t, entries, 3)
	// newest first: the settlement's only user line, then the hold's two
	require.Equal(t, []string{"recharge:e/debt/20", "refund-post:r7/debt/-20", "refund-post:r7/available/-70"},
		[]string{entryString(entries[0]), entryString(entries[1]), entryString(entries[2])})
	next, err := ledger.Entries(ctx, pool, "u", &ledger.Cursor{JournalID: entries[2].JournalID, Line: entries[2].Line}, 1)
	require.NoError(t, err)
	require.Equal(t, "refund-post:r7/held/-10", entryString(next[0]))
	requireClean(t, pool)
}

// 50 goroutines spend and credit one wallet at once: no lost update, no
// negative balance, and the projection equals the postings.
func TestConcurrentWallet(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	l := ledger.New(nil, nil)
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := l.Credit(ctx, tx, "hot", "sandbox", 100, "recharge:seed", "")
		return err
	}))
	var credited, spent, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				ref := fmt.Sprintf("%d-%d", g, i)
				err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
					if (g+i)%2 == 0 {
						_, err := l.Credit(ctx, tx, "hot", "sandbox", 7, "recharge:"+ref, "")
						return err
					}
					_, err := l.Spend(ctx, tx, "hot", 11, "spend:"+ref, "", nil)
					return err
				})
				switch {
				case err == nil && (g+i)%2 == 0:
					credited.Add(7)
				case err == nil:
					spent.Add(11)
				case errors.Is(err, ledger.ErrInsufficient):
					refused.Add(1)
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	bal, err := ledger.Get(ctx, pool, "hot")
	require.NoError(t, err)
	require.Equal(t, 100+credited.Load()-spent.Load(), bal.Available)
	var sum int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT sum(amount) FROM postings WHERE user_id = 'hot' AND account = 'available'`).Scan(&sum))
	require.Equal(t, bal.Available, sum)
	requireClean(t, pool)
}

func TestVerifyFindsCorruption(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	l := ledger.New(nil, nil)
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := l.Credit(ctx, tx, "u", "sandbox", 60, "recharge:x", "")
		return err
	}))
	requireClean(t, pool)
	_, err := pool.Exec(ctx, `UPDATE wallets SET available = available + 1 WHERE user_id = 'u'`)
	require.NoError(t, err)
	findings, err := ledger.Verify(ctx, pool)
	require.NoError(t, err)
	require.Len(t, findings, 1)
	require.Equal(t, "wallet differs from postings", findings[0].Check)
	require.Contains(t, findings[0].Detail, "user u: wallet available=61")

	// a ledger broken everywhere gives a report one can read
	_, err = pool.Exec(ctx, `INSERT INTO wallets (user_id, available) SELECT 'w' || g, 1 FROM generate_series(1, 150) g`)
	require.NoError(t, err)
	findings, err = ledger.Verify(ctx, pool)
	require.NoError(t, err)
	require.Len(t, findings, ledger.MaxFindings+1)
	require.Equal(t, "and more (only the first 100 are listed)", findings[ledger.MaxFindings].Detail)
}

func BenchmarkPostJournal(b *testing.B) {
	pool := pgtest.Pool(b)
	ctx := context.Background()
	l := ledger.New(nil, nil)
	i := 0
	for b.Loop() {
		i++
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			_, err := l.Credit(ctx, tx, fmt.Sprintf("u%d", i%1000), "sandbox", 10, fmt.Sprintf("recharge:%d", i), "")
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// A posting whose caller commits in the same round trip (postgres.QueueCommit)
// can never commit a journal its wallet did not see: when the wallet is
// missing, the journal is left without postings and the commit fails. With
// the wallet there, the credit and the caller's statements commit together.
func TestPostWithQueuedCommit(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	l := ledger.New(nil, nil)
	_, err := pool.Exec(ctx, `CREATE TABLE marks (ref text PRIMARY KEY)`)
	require.NoError(t, err)
	credit := func(ref string) error {
		return postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			fin := &pgx.Batch{}
			fin.Queue(`INSERT INTO marks VALUES ($1)`, ref)
			postgres.QueueCommit(tx, fin)
			_, err := l.PostWith(ctx, tx, ledger.Journal{UserID: "u1", Kind: "recharge", Reference: ref,
				Postings: []ledger.Posting{{ledger.Issuance("sandbox"), -60}, {ledger.Available, 60}}}, fin)
			return err
		})
	}
	require.Error(t, credit("recharge:o1"), "no wallet yet")
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM journals`).Scan(&n))
	require.Zero(t, n)

	_, err = post(t, pool, l, ledger.Journal{UserID: "u1", Kind: "recharge", Reference: "recharge:o0",
		Postings: []ledger.Posting{{ledger.Issuance("sandbox"), -60}, {ledger.Available, 60}}})
	require.NoError(t, err)
	require.NoError(t, credit("recharge:o1"))
	bal, err := ledger.Get(ctx, pool, "u1")
	require.NoError(t, err)
	require.EqualValues(t, 120, bal.Available)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM marks`).Scan(&n))
	require.Equal(t, 1, n)
	requireClean(t, pool)
}

// Lock locks an existing wallet without writing a row version (another
// transaction cannot take it meanwhile), and creates a missing one.
func TestLockWithoutWriting(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	l := ledger.New(nil, nil)
	_, err := post(t, pool, l, ledger.Journal{UserID: "u1", Kind: "recharge", Reference: "recharge:o1",
		Postings: []ledger.Posting{{ledger.Issuance("sandbox"), -60}, {ledger.Available, 60}}})
	require.NoError(t, err)
	version := func(user string) (x string) {
		require.NoError(t, pool.QueryRow(ctx, `SELECT xmin::text FROM wallets WHERE user_id = $1`, user).Scan(&x))
		return x
	}
	before := version("u1")
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		bal, err := l.Lock(ctx, tx, "u1")
		require.Equal(t, ledger.Balance{UserID: "u1", Available: 60}, bal)
		_, other := pool.Exec(ctx, `SELECT FROM wallets WHERE user_id = 'u1' FOR UPDATE NOWAIT`)
		require.Error(t, other, "the wallet is locked")
		return err
	}))
	require.Equal(t, before, version("u1"), "locking an existing wallet writes no row version")
	require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		bal, err := l.Lock(ctx, tx, "u3")
		require.Equal(t, ledger.Balance{UserID: "u3"}, bal)
		return err
	}))
	version("u3") // created

	// Many first movements of a user at once: the ones that find no wallet
	// meet at the upsert, which lets one create it and the rest lock it.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
				_, err := l.Credit(ctx, tx, "new", "sandbox", 7, fmt.Sprintf("recharge:new-%d", i), "")
				return err
			}))
		}()
	}
	wg.Wait()
	bal, err := ledger.Get(ctx, pool, "new")
	require.NoError(t, err)
	require.EqualValues(t, 140, bal.Available)
	requireClean(t, pool)
}
