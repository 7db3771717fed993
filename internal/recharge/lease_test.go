package recharge_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/sandbox"
)

// stalled is the sandbox with a query API that reports every order paid,
// and holds its first query up until gate is closed.
type stalled struct {
	*sandbox.Channel
	started, gate chan struct{}

	mu      sync.Mutex
	first   string
	queries map[string]int
}

func (s *stalled) QueryPayment(_ context.Context, id string) (channel.PaymentStatus, error) {
	s.mu.Lock()
	first := s.first == ""
	if first {
		s.first = id
	}
	s.queries[id]++
	s.mu.Unlock()
	if first {
		close(s.started)
		<-s.gate
	}
	return channel.PaymentStatus{State: channel.PaymentPaid, TradeNo: "T-" + id, AmountFen: 600}, nil
}

// A batch of pending orders outlives its lease when one channel call hangs:
// another replica's round takes the orders over, and the slow worker then
// leaves the later order to it rather than query it a second time. Only the
// order whose call was under way when the lease ran out is queried twice.
func TestPendingOrderLeasePerOrder(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.New(apptest.SandboxSecret, false, time.Now)
	require.NoError(t, err)
	fake := &stalled{Channel: sb, started: make(chan struct{}), gate: make(chan struct{}), queries: map[string]int{}}
	h := apptest.NewWith(t, map[string]channel.Channel{"sandbox": fake})
	user := h.Token("u1", auth.RoleUser)
	a := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "a")["id"].(string)
	b := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "b")["id"].(string)
	h.Clock.Advance(3 * time.Minute) // both due for a query

	done := make(chan error, 1)
	go func() { _, _, err := h.App.Recharges.ProcessPending(context.Background(), 50); done <- err }()
	<-fake.started
	h.Clock.Advance(2 * time.Minute) // past the batch's lease
	h.RunWorkers()                   // another replica's round
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 120, avail, "both credited by the second round")

	close(fake.gate)
	require.NoError(t, <-done)
	later := map[string]string{a: b, b: a}[fake.first]
	fake.mu.Lock()
	defer fake.mu.Unlock()
	require.Equal(t, 1, fake.queries[later], "the later order is handled once")
	require.Equal(t, 2, fake.queries[fake.first])
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 120, avail)
	h.RequireClean()
}
