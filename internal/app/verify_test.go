package app_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

// rj plants ledger rows directly, as a corruption (or a buggy code path)
// would, keeping the projection in step unless told otherwise.
type rj struct {
	t    *testing.T
	pool *pgxpool.Pool
}

// journal inserts a journal and its postings and moves the wallet by the
// user-account lines (set proj=false to leave the wallet alone).
func (r rj) journal(tx pgx.Tx, user, kind, ref string, proj bool, lines ...any) uuid.UUID {
	r.t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	_, err := tx.Exec(ctx, `INSERT INTO journals (user_id, id, kind, reference) VALUES ($1,$2,$3,$4)`, user, id, kind, ref)
	require.NoError(r.t, err)
	var da, dh, dd int64
	for i := 0; i < len(lines); i += 2 {
		acc, amt := lines[i].(string), int64(lines[i+1].(int))
		_, err := tx.Exec(ctx, `INSERT INTO postings (user_id, journal_id, line, account, amount) VALUES ($1,$2,$3,$4,$5)`,
			user, id, i/2+1, acc, amt)
		require.NoError(r.t, err)
		switch acc {
		case "available":
			da += amt
		case "held":
			dh += amt
		case "debt":
			dd -= amt
		}
	}
	if proj {
		_, err = tx.Exec(ctx, `INSERT INTO wallets (user_id) VALUES ($1) ON CONFLICT DO NOTHING`, user)
		require.NoError(r.t, err)
		_, err = tx.Exec(ctx, `UPDATE wallets SET available = available + $2, held = held + $3, debt = debt + $4 WHERE user_id = $1`,
			user, da, dh, dd)
		require.NoError(r.t, err)
	}
	return id
}

func (r rj) tx(fn func(tx pgx.Tx)) {
	r.t.Helper()
	require.NoError(r.t, postgres.WithTx(context.Background(), r.pool, func(tx pgx.Tx) error { fn(tx); return nil }))
}

func (r rj) exec(tx pgx.Tx, sql string, args ...any) {
	r.t.Helper()
	_, err := tx.Exec(context.Background(), sql, args...)
	require.NoError(r.t, err)
}

func (r rj) order(tx pgx.Tx, user string, id uuid.UUID, diamonds int, status string) {
	r.exec(tx, `INSERT INTO orders (user_id, id, channel, amount_fen, diamonds, status, expires_at, created_at, updated_at)
		VALUES ($1,$2,'sandbox',$3,$4,$5, now(), now(), now())`, user, id, diamonds*10, diamonds, status)
}

func (r rj) refund(tx pgx.Tx, user string, id, order uuid.UUID, diamonds, held int, status string) {
	r.exec(tx, `INSERT INTO refunds (user_id, id, order_id, channel, trade_no, kind, status, amount_fen, diamonds, held, clawback,
		reason_code, created_by, created_by_role, created_at, updated_at)
		VALUES ($1,$2,$3,'sandbox','t','user',$4,$5,$6,$7,'allow_debt','r','u','user',now(),now())`,
		user, id, order, status, max(diamonds*10, 10), diamonds, held)
}

func (r rj) verify() []string {
	r.t.Helper()
	fs, err := app.Verify(context.Background(), r.pool)
	require.NoError(r.t, err)
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

// base: u1 paid order O (100 diamonds), spent 30 (spends row S), has a live
// refund R2 of another paid order O2 (50 diamonds) holding 20. Verify clean.
type baseIDs struct{ O, O2, S, R2 uuid.UUID }

func base(t *testing.T) (rj, baseIDs) {
	r := rj{t: t, pool: pgtest.Pool(t)}
	ids := baseIDs{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	r.tx(func(tx pgx.Tx) {
		r.order(tx, "u1", ids.O, 100, "paid")
		r.journal(tx, "u1", "recharge", "recharge:"+ids.O.String(), true, "issuance:sandbox", -100, "available", 100)
		r.order(tx, "u1", ids.O2, 50, "paid")
		r.journal(tx, "u1", "recharge", "recharge:"+ids.O2.String(), true, "issuance:sandbox", -50, "available", 50)
		r.exec(tx, `INSERT INTO spends (user_id, id, service, reference, diamonds) VALUES ('u1',$1,'gifts','g1',30)`, ids.S)
		r.journal(tx, "u1", "spend", "spend:"+ids.S.String(), true, "available", -30, "spent", 30)
		r.refund(tx, "u1", ids.R2, ids.O2, 20, 20, "pending_review")
		r.journal(tx, "u1", "hold", "refund-hold:"+ids.R2.String()+":0", true, "available", -20, "held", 20)
	})
	require.Empty(t, r.verify(), "baseline is clean")
	return r, ids
}

// Each corruption planted on a clean ledger is reported by app.Verify, what
// `diamondd ledger verify` runs. (What it cannot see: a balanced journal
// under a reference of no known kind, or balanced lines added to an old
// journal, forgeries that need write access to the database, which the
// service's own role should not grant.)
func TestVerifyFindsPlantedCorruption(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		plant func(r rj, ids baseIDs)
	}{
		{"wallet available drift", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `UPDATE wallets SET available = available + 1`) })
		}},
		{"wallet held drift", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `UPDATE wallets SET held = held + 1`) })
		}},
		{"wallet debt drift", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `UPDATE wallets SET debt = debt + 1`) })
		}},
		{"wallet row deleted", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `DELETE FROM wallets`) })
		}},
		{"posting added to an old journal in a later tx (DB accepts)", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.exec(tx, `INSERT INTO postings SELECT user_id, id, 9, 'available', 5 FROM journals WHERE reference = $1`, "recharge:"+ids.O.String())
				r.exec(tx, `UPDATE wallets SET available = available + 5`)
			})
		}},
		{"unknown account 'user:u2:available'", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.journal(tx, "u1", "x", "x:1", true, "available", -1, "user:u2:available", 1) })
		}},
		{"paid order whose recharge journal has no issuance line", func(r rj, _ baseIDs) {
			o := uuid.New()
			r.tx(func(tx pgx.Tx) {
				r.order(tx, "u1", o, 100, "paid")
				r.journal(tx, "u1", "recharge", "recharge:"+o.String(), true, "writeoff", -100, "available", 100)
			})
		}},
		{"paid order credited through another channel's issuance", func(r rj, _ baseIDs) {
			o := uuid.New()
			r.tx(func(tx pgx.Tx) {
				r.order(tx, "u1", o, 100, "paid")
				r.journal(tx, "u1", "recharge", "recharge:"+o.String(), true, "issuance:wechat", -100, "available", 100)
			})
		}},
		{"paid order without recharge journal", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.order(tx, "u1", uuid.New(), 100, "paid") })
		}},
		{"recharge journal without order", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.journal(tx, "u1", "recharge", "recharge:"+uuid.NewString(), true, "issuance:sandbox", -1, "available", 1)
			})
		}},
		{"debt and available both positive", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.journal(tx, "u1", "x", "x:1", true, "debt", -10, "available", 10) })
		}},
		{"spend journal without spends row", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.journal(tx, "u1", "spend", "spend:"+uuid.NewString(), true, "available", -5, "spent", 5)
			})
		}},
		{"spends row without spend journal", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.exec(tx, `INSERT INTO spends (user_id, id, service, reference, diamonds) VALUES ('u1',$1,'gifts','g2',5)`, uuid.New())
			})
		}},
		{"spends row amount differs from its journal", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `DELETE FROM spends`) })
			r.tx(func(tx pgx.Tx) {
				r.exec(tx, `INSERT INTO spends (user_id, id, service, reference, diamonds) VALUES ('u1',$1,'gifts','g1',3)`, ids.S)
			})
		}},
		{"spent reversed for one user, below zero", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) { r.journal(tx, "u1", "x", "x:1", true, "spent", -40, "available", 40) })
		}},
		{"issuance:sandbox positive for one user", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.journal(tx, "u1", "x", "x:1", true, "issuance:sandbox", 200, "available", -100, "debt", -100)
			})
		}},
		{"writeoff positive for one user, while another user has a real write-off", func(r rj, _ baseIDs) {
			o, rf := uuid.New(), uuid.New()
			r.tx(func(tx pgx.Tx) {
				// u2: a legitimate story: paid 50, spent 50, refund succeeded writing off 50
				r.order(tx, "u2", o, 50, "paid")
				r.journal(tx, "u2", "recharge", "recharge:"+o.String(), true, "issuance:sandbox", -50, "available", 50)
				sp := uuid.New()
				r.exec(tx, `INSERT INTO spends (user_id, id, service, reference, diamonds) VALUES ('u2',$1,'gifts','g9',50)`, sp)
				r.journal(tx, "u2", "spend", "spend:"+sp.String(), true, "available", -50, "spent", 50)
				r.refund(tx, "u2", rf, o, 50, 0, "succeeded")
				r.journal(tx, "u2", "refund", "refund-post:"+rf.String(), true, "refunded", 50, "writeoff", -50)
			})
			require.Empty(r.t, r.verify(), "u2's story is clean")
			// u1: diamonds taken back into writeoff (writeoff +10 for u1)
			r.tx(func(tx pgx.Tx) { r.journal(tx, "u1", "x", "x:1", true, "writeoff", 10, "available", -10) })
		}},
		{"held != live refunds' holds (hold journal without refund)", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.journal(tx, "u1", "hold", "refund-hold:"+uuid.NewString()+":0", true, "available", -5, "held", 5)
			})
		}},
		{"refund ended (rejected) but its hold never released", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `UPDATE refunds SET status = 'rejected' WHERE id = $1`, ids.R2) })
		}},
		{"refund succeeded without refund-post journal", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) { r.exec(tx, `UPDATE refunds SET status = 'succeeded' WHERE id = $1`, ids.R2) })
		}},
		{"refund succeeded, refund-post takes 1000 though it claws back 20", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.exec(tx, `UPDATE refunds SET status = 'succeeded', held = 0 WHERE id = $1`, ids.R2)
				r.journal(tx, "u1", "refund", "refund-post:"+ids.R2.String(), true, "refunded", 1000, "held", -20, "writeoff", -980)
			})
		}},
		{"refund succeeded, settled twice (second journal under another user)", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.exec(tx, `UPDATE refunds SET status = 'succeeded', held = 0 WHERE id = $1`, ids.R2)
				r.journal(tx, "u1", "refund", "refund-post:"+ids.R2.String(), true, "refunded", 20, "held", -20)
				r.journal(tx, "u2", "refund", "refund-post:"+ids.R2.String(), true, "refunded", 20, "debt", -20)
			})
		}},
		{"refund-post journal for a refund that does not exist", func(r rj, _ baseIDs) {
			r.tx(func(tx pgx.Tx) {
				r.journal(tx, "u1", "refund", "refund-post:"+uuid.NewString(), true, "refunded", 50, "available", -50)
			})
		}},
		{"rejected refund with diamonds=0 that has a refund-post journal", func(r rj, ids baseIDs) {
			id := uuid.New()
			r.tx(func(tx pgx.Tx) {
				r.refund(tx, "u1", id, ids.O, 0, 0, "rejected")
				r.journal(tx, "u1", "refund", "refund-post:"+id.String(), true, "refunded", 50, "available", -50)
			})
		}},
		{"refund rows exceed the order (refunds within order)", func(r rj, ids baseIDs) {
			r.tx(func(tx pgx.Tx) { r.refund(tx, "u1", uuid.New(), ids.O2, 40, 0, "approved") })
		}},
		{"clawback in the ledger exceeds what the order credited", func(r rj, ids baseIDs) {
			// one refund of O (100 credited) that is recorded as 100 but
			// whose journal takes 300 out of the user's available + debt
			id := uuid.New()
			r.tx(func(tx pgx.Tx) {
				r.refund(tx, "u1", id, ids.O, 100, 0, "succeeded")
				r.journal(tx, "u1", "refund", "refund-post:"+id.String(), true, "refunded", 300, "available", -100, "debt", -200)
			})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r, ids := base(t)
			c.plant(r, ids)
			require.NotEmpty(t, r.verify())
		})
	}
}
