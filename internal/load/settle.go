package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/ledger"
)

// SettleResult says how the run was brought to rest before the checks.
type SettleResult struct {
	Resolved        int     `json:"resolved"`         // operations replayed to a definitive answer
	Unresolved      int     `json:"unresolved"`       // still unknown
	WebhooksPending int     `json:"webhooks_pending"` // never acknowledged
	RefundsFinished int     `json:"refunds_finished"` // refunds taken to the end after the run
	RefundsOpen     int     `json:"refunds_open"`     // refunds left open: not taken to the end after the run
	Seconds         float64 `json:"seconds"`
}

// Settle brings the run to rest, the way its callers would: operations that
// never got a definitive answer are replayed with their Idempotency-Key,
// every unacknowledged webhook is redelivered until acknowledged, and
// refunds left half-way are approved and reported by the channel. It stops
// when ctx ends.
func (r *Runner) Settle(ctx context.Context) SettleResult {
	start := time.Now()
	var res SettleResult
	r.mu.Lock()
	ops := r.unresolved
	r.unresolved = nil
	r.mu.Unlock()
	for len(ops) > 0 && ctx.Err() == nil {
		var left []func(context.Context) bool
		for _, op := range ops {
			if op(ctx) {
				res.Resolved++
				r.model.Unresolved(-1)
			} else {
				left = append(left, op)
			}
		}
		ops = left
	}
	res.Unresolved = len(ops)
	r.mu.Lock()
	r.unresolved = append(r.unresolved, ops...)
	r.mu.Unlock()

	r.ch.drain(ctx)

	exp := r.model.Expect()
	var open []Refund
	for _, id := range sortedKeys(exp.Refunds) {
		if rf := exp.Refunds[id]; !rf.WebhookAcked {
			open = append(open, rf)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, rf := range open {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			finished := false
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				if finished {
					res.RefundsFinished++
				} else {
					res.RefundsOpen++
				}
			}()
			rep, err := r.call(ctx, StepRefundPoll, request{method: "GET", path: "/v1/admin/refunds/" + rf.ID,
				token: r.cl.token(agent, auth.RoleSupport)})
			if err != nil || rep.status != 200 {
				return
			}
			var b refundBody
			if json.Unmarshal(rep.body, &b) != nil {
				return
			}
			wait := time.Minute
			if d, ok := ctx.Deadline(); ok {
				wait = time.Until(d)
			}
			finished = r.finishRefund(ctx, b, wait)
		}()
	}
	wg.Wait()
	// Both are also checks (CheckPending, CheckRefundsOpen), read afresh
	// when the run is observed.
	res.WebhooksPending = r.ch.drain(ctx)
	res.Seconds = time.Since(start).Seconds()
	return res
}

// ObserveOptions say where the checks read from besides the HTTP API.
type ObserveOptions struct {
	// DB is the service's database (DATABASE_URL); nil skips the checks
	// that need it (credits per order, order status, refunds not asked
	// for).
	DB *pgxpool.Pool
	// Verify runs `diamondd ledger verify`; nil skips it.
	Verify func(ctx context.Context) ([]string, error)
	// Concurrency of the wallet reads (default 16).
	Concurrency int
}

// Observe reads what the service says about the run: every user's wallet
// and every refund of the run through the admin API, the credits, orders
// and all refunds of the run's users from the database, and the ledger
// verification; and how many notifications the channel still owes.
func (r *Runner) Observe(ctx context.Context, o ObserveOptions) (Observation, error) {
	exp := r.model.Expect()
	obs := Observation{Wallets: map[string]Wallet{}, RefundStatus: map[string]string{},
		WebhooksPending: r.ch.pending(), SkipNotes: map[string]string{}}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	tok := r.cl.token(agent, auth.RoleSupport)
	var mu sync.Mutex
	var firstErr error
	get := func(path string, into func([]byte)) {
		rep, err := r.call(ctx, "check_read", request{method: "GET", path: path, token: tok})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			firstErr = cmpErr(firstErr, err)
		case rep.status != 200:
			firstErr = cmpErr(firstErr, fmt.Errorf("GET %s: %d %s", path, rep.status, rep.code))
		default:
			into(rep.body)
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.Concurrency)
	for _, u := range exp.Users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			get("/v1/admin/users/"+u+"/wallet", func(b []byte) {
				var w Wallet
				if json.Unmarshal(b, &w) == nil {
					obs.Wallets[u] = w
				}
			})
		}()
	}
	for id := range exp.Refunds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			get("/v1/admin/refunds/"+id, func(b []byte) {
				var rf refundBody
				if json.Unmarshal(b, &rf) == nil {
					obs.RefundStatus[id] = rf.Status
				}
			})
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return obs, fmt.Errorf("read wallets and refunds: %w", firstErr)
	}
	if o.DB != nil {
		credits, err := ReadCredits(ctx, o.DB, exp.Users)
		if err != nil {
			return obs, err
		}
		obs.Credits = credits
		// The orders and refunds tables belong to the recharge and refund
		// packages: a missing table skips its check (with a note), any
		// other error fails it.
		obs.OrderStatus, obs.OrderStatusErr = readOrderStatus(ctx, o.DB, exp.Users)
		if isUndefinedTable(obs.OrderStatusErr) {
			obs.OrderStatusErr, obs.SkipNotes[CheckOrderStatus] = nil, "no orders table"
		}
		obs.Refunds, obs.RefundsErr = ReadRefunds(ctx, o.DB, exp.Users)
		if isUndefinedTable(obs.RefundsErr) {
			obs.RefundsErr, obs.SkipNotes[CheckUnasked] = nil, "no refunds table"
		}
	} else {
		for _, c := range []string{CheckAckedOnce, CheckNoDouble, CheckNoStray, CheckOrderStatus, CheckUnasked} {
			obs.SkipNotes[c] = "no database (DATABASE_URL)"
		}
	}
	if o.Verify == nil {
		obs.SkipNotes[CheckLedger] = "not run"
	} else {
		findings, err := o.Verify(ctx)
		if err != nil {
			return obs, fmt.Errorf("ledger verify: %w", err)
		}
		obs.Ledger, obs.LedgerChecked = findings, true
	}
	return obs, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// Check observes and compares with the model.
func (r *Runner) Check(ctx context.Context, o ObserveOptions) (CheckReport, error) {
	obs, err := r.Observe(ctx, o)
	if err != nil {
		return CheckReport{}, err
	}
	return Check(r.model.Expect(), obs), nil
}

// ReadCredits lists every journal that issued diamonds to the users: a
// posting on an issuance account, whatever its kind or reference.
func ReadCredits(ctx context.Context, db *pgxpool.Pool, users []string) ([]Credit, error) {
	rows, err := db.Query(ctx, `
		SELECT j.user_id, j.reference, -sum(p.amount)
		  FROM journals j
		  JOIN postings p ON p.user_id = j.user_id AND p.journal_id = j.id
		 WHERE j.user_id = ANY($1) AND p.account LIKE 'issuance:%'
		 GROUP BY j.user_id, j.id, j.reference`, users)
	if err != nil {
		return nil, fmt.Errorf("read credits: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Credit, error) {
		var c Credit
		err := r.Scan(&c.UserID, &c.Reference, &c.Diamonds)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read credits: %w", err)
	}
	if out == nil {
		out = []Credit{}
	}
	return out, nil
}

// ReadRefunds lists every refund of the users, whoever asked for it.
func ReadRefunds(ctx context.Context, db *pgxpool.Pool, users []string) ([]RefundRow, error) {
	rows, err := db.Query(ctx, `
		SELECT id::text, user_id, order_id::text, kind, status, amount_fen, diamonds
		  FROM refunds WHERE user_id = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("read refunds: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RefundRow, error) {
		var f RefundRow
		err := r.Scan(&f.ID, &f.UserID, &f.OrderID, &f.Kind, &f.Status, &f.AmountFen, &f.Diamonds)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("read refunds: %w", err)
	}
	if out == nil {
		out = []RefundRow{}
	}
	return out, nil
}

func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

func readOrderStatus(ctx context.Context, db *pgxpool.Pool, users []string) (map[string]string, error) {
	rows, err := db.Query(ctx, `SELECT id::text, status::text FROM orders WHERE user_id = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("read order statuses: %w", err)
	}
	out := map[string]string{}
	defer rows.Close()
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, fmt.Errorf("read order statuses: %w", err)
		}
		out[id] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read order statuses: %w", err)
	}
	return out, nil
}

// VerifyBinary runs `<bin> ledger verify` on the database, as an operator
// would, and returns its findings (exit 1) or nothing (exit 0).
func VerifyBinary(bin, databaseURL string) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "ledger", "verify")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+databaseURL)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return nil, nil
		case errors.As(err, &ee) && ee.ExitCode() == 1 && strings.Contains(out.String(), "problem"):
			var findings []string
			for _, l := range strings.Split(out.String(), "\n") {
				if f, ok := strings.CutPrefix(strings.TrimSpace(l), "- "); ok {
					findings = append(findings, f)
				}
			}
			if len(findings) == 0 {
				findings = []string{strings.TrimSpace(out.String())}
			}
			return findings, nil
		default:
			return nil, fmt.Errorf("%s ledger verify: %w: %s", bin, err, strings.TrimSpace(out.String()))
		}
	}
}

// VerifyInProcess runs the same verification as `diamondd ledger verify`
// over a pool.
func VerifyInProcess(db *pgxpool.Pool) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		fs, err := ledger.Verify(ctx, db)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(fs))
		for _, f := range fs {
			out = append(out, f.String())
		}
		return out, nil
	}
}
