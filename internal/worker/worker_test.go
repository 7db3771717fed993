package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/sandbox"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
	"github.com/diamondd/diamondd/internal/recovery"
	"github.com/diamondd/diamondd/internal/refund"
	"github.com/diamondd/diamondd/internal/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// counter counts Inc calls in place of a registered counter.
type counter struct {
	prometheus.Counter
	n atomic.Int64
}

func (c *counter) Inc() { c.n.Add(1) }

func explode() { panic("poison row") }

// itemFailure is how a step reports an item that panicked (recovery.Catch).
var itemFailure = &recovery.Panic{Value: "poison item", Stack: []byte("goroutine 1 [running]:\nitem.stack()")}

// A panicking step is recovered: logged at error level with its stack,
// counted, and run again after the interval, never at once, even though the
// step would say it had a full batch. Panics a step recovered in single
// items are logged and counted the same way.
func TestLoopSurvivesPanics(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer // read once the loop has returned
	panics := &counter{}
	const interval = 50 * time.Millisecond
	var mu sync.Mutex
	var calls []time.Time
	l := worker.Loop{
		Name: "poisoned", Interval: interval, Panics: panics,
		Log: slog.New(slog.NewJSONHandler(&logs, nil)),
		Step: func(context.Context) (int, bool, error) {
			mu.Lock()
			calls = append(calls, time.Now())
			n := len(calls)
			mu.Unlock()
			switch n {
			case 1:
				explode()
			case 2:
				return 2, true, fmt.Errorf("order 1: %w", errors.Join(errors.New("order 2: timeout"), itemFailure))
			}
			return 0, false, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) >= 3 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, calls[1].Sub(calls[0]), interval, "after a panic the loop waits its interval")
	require.GreaterOrEqual(t, calls[2].Sub(calls[1]), interval, "a full batch with a failed item is not run again at once")
	require.EqualValues(t, 2, panics.n.Load())
	out := logs.String()
	require.Contains(t, out, `"level":"ERROR","msg":"worker panicked","loop":"poisoned","panic":"poison row"`)
	require.Contains(t, out, "worker_test.explode", "the stack of the panic")
	require.Contains(t, out, `"panic":"poison item","stack":"goroutine 1 [running]:\nitem.stack()"`)
}

// poisoned is the sandbox with a query API that panics on one order and
// reports another paid, and a refund API that panics on one refund: answers
// an adapter might choke on.
type poisoned struct {
	*sandbox.Channel
	mu        sync.Mutex
	bad       string
	paid      string
	queries   map[string]int
	badRefund string
	refunds   int
}

func (p *poisoned) QueryPayment(_ context.Context, id string) (channel.PaymentStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queries[id]++
	switch id {
	case p.bad:
		panic("unexpected answer for " + id)
	case p.paid:
		return channel.PaymentStatus{State: channel.PaymentPaid, TradeNo: "T-" + id, AmountFen: 600}, nil
	}
	return channel.PaymentStatus{State: channel.PaymentPending}, nil
}

func (p *poisoned) Refund(_ context.Context, r channel.RefundRequest) (channel.RefundStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refunds++
	if r.RefundID == p.badRefund {
		panic("unexpected refund answer")
	}
	return channel.RefundStatus{State: channel.RefundProcessing, ChannelRefundID: "P-" + r.RefundID}, nil
}

func (p *poisoned) counts() (bad, paid, refunds int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queries[p.bad], p.queries[p.paid], p.refunds
}

// panicCount reads diamondd_worker_panics_total{loop}.
func panicCount(t *testing.T, reg *prometheus.Registry, loop string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "diamondd_worker_panics_total" && m.GetLabel()[0].GetValue() == loop {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// The loops as serve runs them, with a channel that panics on one pending
// order's query and on a refund: the service keeps serving, the other order
// of the batch is credited, each panic is counted once, and neither the
// order nor the refund is tried again before its lease ends.
func TestServiceSurvivesPanickingChannel(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.New(apptest.SandboxSecret, false, time.Now)
	require.NoError(t, err)
	fake := &poisoned{Channel: sb, queries: map[string]int{}}
	h := apptest.NewWith(t, map[string]channel.Channel{"sandbox": fake},
		func(c *config.Config) { c.WorkerInterval = 20 * time.Millisecond })
	ctx := context.Background()
	user := h.Token("u1", auth.RoleUser)

	// two approved refunds of paid orders, left for the refund worker: the
	// first of the batch panics, the second goes on
	var refunds []string
	for i, amount := range []int64{600, 700} {
		paid := h.Recharge(user, map[string]any{"channel": "sandbox", "amount_fen": amount}, fmt.Sprint("k0", i))["id"].(string)
		h.Pay(paid, amount, fmt.Sprint("T-0", i), fmt.Sprint("e-0", i))
		r := h.Do(http.MethodPost, "/v1/refunds", apptest.Req{Token: user, Key: fmt.Sprint("r", i),
			Body: map[string]any{"order_id": paid, "reason_code": "other"}}).RequireStatus(t, 201).JSON()
		require.NoError(t, postgres.WithTx(ctx, h.Pool, func(tx pgx.Tx) error {
			_, err := h.App.Refunds.Approve(ctx, tx, refund.Actor{ID: "agent1", Role: "support"}, uuid.MustParse(r["id"].(string)), "ok")
			return err
		}))
		refunds = append(refunds, r["id"].(string))
	}
	fake.badRefund = refunds[0]
	_, err = h.Pool.Exec(ctx, `UPDATE refunds SET next_attempt_at = next_attempt_at - interval '1 second' WHERE id = $1`, refunds[0])
	require.NoError(t, err)
	// two pending orders, due for a query
	fake.mu.Lock()
	fake.bad = h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "k1")["id"].(string)
	fake.paid = h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "k2")["id"].(string)
	fake.mu.Unlock()
	h.Clock.Advance(3 * time.Minute)

	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); worker.RunAll(wctx, h.App.Loops...) }()
	require.Eventually(t, func() bool {
		avail, _, _ := h.Wallet("u1")
		_, _, calls := fake.counts()
		return avail == 60 && calls == 2
	}, 10*time.Second, 10*time.Millisecond, "the other order is credited, both refunds tried")
	time.Sleep(10 * h.Config.WorkerInterval) // rounds that must leave the leased ones alone
	stop()
	<-done

	bad, queried, calls := fake.counts()
	require.Equal(t, [3]int{1, 1, 2}, [3]int{bad, queried, calls}, "nothing tried again within its lease")
	require.EqualValues(t, 1, panicCount(t, h.App.Registry, "pending-orders"))
	require.EqualValues(t, 1, panicCount(t, h.App.Registry, "refunds"))
	require.Equal(t, 200, h.Do(http.MethodGet, "/v1/recharges/"+fake.bad, apptest.Req{Token: user}).Status)
	status := func(id string) any {
		return h.Do(http.MethodGet, "/v1/refunds/"+id, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"]
	}
	require.Equal(t, "approved", status(refunds[0]))
	require.Equal(t, "processing", status(refunds[1]), "the rest of the batch went on")
	h.RequireClean()
}
