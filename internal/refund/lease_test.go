package refund_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/sandbox"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/refund"
)

// gated is a channel that refuses a refund number as WeChat Pay does on 403
// NOT_ENOUGH (the merchant's balance is short): nothing is created, and the
// same number submitted later is a new refund, which it pays. The first call
// for slow blocks until gate is closed, and is then refused if slowRefused.
type gated struct {
	*sandbox.Channel
	started chan struct{}
	gate    chan struct{}

	mu          sync.Mutex
	slow        string
	slowRefused bool
	refuse      map[string]int // refund id → refusals left
	calls       map[string]int
	paid        map[string]int64
}

func (g *gated) Refund(_ context.Context, r channel.RefundRequest) (channel.RefundStatus, error) {
	g.mu.Lock()
	slow := r.RefundID == g.slow
	if slow {
		g.slow = ""
		g.mu.Unlock()
		close(g.started)
		<-g.gate
		g.mu.Lock()
	}
	defer g.mu.Unlock()
	g.calls[r.RefundID]++
	if g.refuse[r.RefundID] > 0 || (slow && g.slowRefused) {
		g.refuse[r.RefundID] = max(g.refuse[r.RefundID]-1, 0)
		return channel.RefundStatus{State: channel.RefundFailed, Reason: "NOT_ENOUGH"}, nil
	}
	g.paid[r.RefundID] = r.AmountFen
	return channel.RefundStatus{State: channel.RefundProcessing, ChannelRefundID: "G-" + r.RefundID}, nil
}

func (g *gated) QueryRefund(_ context.Context, _, id string) (channel.RefundStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.paid[id]; !ok {
		return channel.RefundStatus{State: channel.RefundNotFound}, nil
	}
	return channel.RefundStatus{State: channel.RefundProcessing, ChannelRefundID: "G-" + id}, nil
}

func (g *gated) count(id uuid.UUID) (calls int, paid int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[id.String()], g.paid[id.String()]
}

func gatedFixture(t *testing.T) (*fixture, *gated) {
	t.Helper()
	var h *apptest.Harness
	sb, err := sandbox.New(apptest.SandboxSecret, false, func() time.Time { return h.Clock.Now() })
	require.NoError(t, err)
	g := &gated{Channel: sb, started: make(chan struct{}), gate: make(chan struct{}),
		refuse: map[string]int{}, calls: map[string]int{}, paid: map[string]int64{}}
	h = apptest.NewWith(t, map[string]channel.Channel{"sandbox": g},
		func(c *config.Config) { c.RateLimitRefundPerMin = 0; c.RateLimitRechargePerMin = 0 })
	return &fixture{Harness: h, user: h.Token("u1", auth.RoleUser), agent: h.Token("agent1", auth.RoleSupport)}, g
}

// approvedRefund requests a refund of a paid order of amount fen and
// approves it without submitting it, as a crash after the approval's commit
// would leave it.
func (f *fixture) approvedRefund(t *testing.T, amount int64) (uuid.UUID, string) {
	t.Helper()
	ctx := context.Background()
	order := f.paidOrder(t, amount)
	r := f.refund(t, f.user, order, map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id := uuid.MustParse(r["id"].(string))
	require.NoError(t, postgres.WithTx(ctx, f.Pool, func(tx pgx.Tx) error {
		_, err := f.App.Refunds.Approve(ctx, tx, refund.Actor{ID: "agent1", Role: "support"}, id, "ok")
		return err
	}))
	return id, order
}

// busyWorker approves refunds a and b of two paid orders (700 fen for b)
// and starts the refund worker, which claims both and is held up in a's
// channel call when busyWorker returns; close g.gate to let it go on, then
// read its error from the channel returned.
func busyWorker(t *testing.T) (*fixture, *gated, uuid.UUID, string, <-chan error) {
	t.Helper()
	f, g := gatedFixture(t)
	a, _ := f.approvedRefund(t, 1000)
	b, orderB := f.approvedRefund(t, 700)
	g.slow = a.String()
	_, err := f.Pool.Exec(context.Background(), `UPDATE refunds SET next_attempt_at = next_attempt_at - interval '1 second' WHERE id = $1`, a)
	require.NoError(t, err) // a first in the batch

	done := make(chan error, 1)
	go func() { _, _, err := f.App.Refunds.ProcessDue(context.Background(), 50); done <- err }()
	<-g.started
	return f, g, b, orderB, done
}

// A refund that ends while the worker is busy with another of its batch is
// not submitted again when the worker reaches it: here the channel reports
// it failed (hold released, its amount free for a new refund of the order)
// and then pays anything submitted under its number.
func TestWorkerActsOnTheRefundAsItIsNow(t *testing.T) {
	t.Parallel()
	f, g, b, orderB, done := busyWorker(t)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "e-fail", "type": "refund.failed", "refund_id": b.String(), "reason": "NOT_ENOUGH"}).Status)
	require.Equal(t, "failed", f.admin(t, b.String())["status"])
	close(g.gate)
	require.NoError(t, <-done)

	calls, paid := g.count(b)
	require.Zero(t, calls, "a failed refund is never sent to the channel")
	require.Zero(t, paid)
	f.refund(t, f.user, "b2", map[string]any{"order_id": orderB, "reason_code": "other"}).RequireStatus(t, 201)
	f.RequireClean()
}

// The approval's own submission and the worker never call the channel for
// one refund at the same time: the one holding the refund's lease does. A
// refusal is then acted on by the only caller, and the refund fails once,
// with nothing paid.
func TestOneSubmitterAtATime(t *testing.T) {
	t.Parallel()
	f, g, b, _, done := busyWorker(t)
	g.mu.Lock()
	g.refuse[b.String()] = 1
	g.mu.Unlock()
	require.NoError(t, f.App.Refunds.Submit(context.Background(), "u1", b), "the worker holds it: nothing to do")
	calls, _ := g.count(b)
	require.Zero(t, calls)
	require.Equal(t, "approved", f.admin(t, b.String())["status"])

	close(g.gate)
	require.NoError(t, <-done)
	calls, paid := g.count(b)
	require.Equal(t, 1, calls)
	require.Zero(t, paid)
	require.Equal(t, "failed", f.admin(t, b.String())["status"])
	require.Equal(t, [3]int64{70, 100, 0}, f.wallet(t), "b's hold is back; a's is still held (processing)")
	f.RunWorkers()
	calls, _ = g.count(b)
	require.Equal(t, 1, calls, "a failed refund is never resubmitted")
	f.RequireClean()
}

// A caller whose lease ran out during its channel call does not act on a
// refusal: by then another replica has the refund and may have had it paid.
// Here the approval's submission hangs past its lease, the worker takes the
// refund over and the channel pays it, then the first call comes back
// refused: the refund stays with the worker, its hold in place.
func TestRefusalPastTheLeaseIsIgnored(t *testing.T) {
	t.Parallel()
	f, g := gatedFixture(t)
	id, _ := f.approvedRefund(t, 700)
	g.slow, g.slowRefused = id.String(), true
	done := make(chan error, 1)
	go func() { done <- f.App.Refunds.Submit(context.Background(), "u1", id) }()
	<-g.started

	f.Clock.Advance(2 * time.Minute)
	f.RunWorkers()
	calls, paid := g.count(id)
	require.Equal(t, 1, calls)
	require.EqualValues(t, 700, paid)
	require.Equal(t, "processing", f.admin(t, id.String())["status"])

	close(g.gate)
	require.NoError(t, <-done)
	calls, _ = g.count(id)
	require.Equal(t, 2, calls)
	require.Equal(t, "processing", f.admin(t, id.String())["status"], "paid at the channel: never failed")
	require.Equal(t, [3]int64{0, 70, 0}, f.wallet(t))
	f.RequireClean()
}
