package recharge_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
)

// Regression (a bug found in review, now fixed), as first reported:
// API.md: orders expire after ORDER_TTL (pending → closed). A payment of the
// wrong amount clears check_after, so the pending worker never looks at the
// order again: it stays "pending" forever (and cancellable, and payable).
func TestAmountMismatchOrderStillExpires(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "mm")["id"].(string)
	h.Pay(id, 599, "T-m", "e-m")
	h.Clock.Advance(24 * time.Hour)
	h.RunWorkers()
	h.RunWorkers()
	v := h.Do("GET", "/v1/admin/recharges/"+id, apptest.Req{Token: h.Token("agent", auth.RoleSupport)}).RequireStatus(t, 200).JSON()
	require.NotEqual(t, "pending", v["status"], "a day after ORDER_TTL the order is still pending")
}

// two trades, a close, a failure, a cancel and
// the expiry worker racing on one order: credited once, the other trade
// refunded, the ledger clean.
func TestOrderRace(t *testing.T) {
	t.Parallel()
	for round := range 5 {
		h := apptest.New(t)
		user := h.Token("u1", auth.RoleUser)
		id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "r")["id"].(string)
		h.Clock.Advance(16 * time.Minute)
		var wg sync.WaitGroup
		run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
		run(func() { h.Pay(id, 600, "T-1", "e-1") })
		run(func() { h.Pay(id, 600, "T-2", "e-2") })
		run(func() {
			h.Webhook(map[string]any{"event_id": "e-3", "type": "payment.closed", "order_id": id})
		})
		run(func() {
			h.Webhook(map[string]any{"event_id": "e-4", "type": "payment.failed", "order_id": id})
		})
		run(func() { h.Do("POST", "/v1/recharges/"+id+"/cancel", apptest.Req{Token: user}) })
		run(func() { h.RunWorkers() })
		wg.Wait()
		avail, _, _ := h.Wallet("u1")
		require.EqualValues(t, 60, avail, "round %d", round)
		require.Equal(t, 1, count(t, h, `SELECT count(*) FROM refunds WHERE kind = 'duplicate_payment'`), "round %d", round)
		h.RequireClean()
	}
}
