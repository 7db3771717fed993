package refund_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
)

// A notification of a refund diamondd did not make, named after one of our
// orders (Alipay's number for a refund made without one, from the merchant
// console), is recorded and acknowledged, not refused until the channel
// gives up; it changes nothing.
func TestRefundNotificationNamingAnOrder(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 600)
	r := f.Webhook(map[string]any{"event_id": "e-x", "type": "refund.succeeded", "refund_id": order, "amount_fen": 600})
	require.Equal(t, 200, r.Status, "body: %s", r.Body)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "e-x", "type": "refund.succeeded", "refund_id": order, "amount_fen": 600}).Status)
	require.Equal(t, 1, f.count(t, `SELECT count(*) FROM webhook_events WHERE event_key = 'e-x' AND outcome = 'unknown_refund'`))
	require.Equal(t, "paid", f.orderStatus(t, order))
	require.Equal(t, [3]int64{60, 0, 0}, f.wallet(t))
	v := f.Do("GET", "/v1/admin/recharges/"+order, apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()
	require.Equal(t, []any{"external_refund"}, v["flags"], "support sees the diamonds no one took back")
	f.RequireClean()
}

// When that notification comes before the payment's own (lost, then
// redelivered), the order is never credited: the money went back.
func TestPaymentAfterAnOutsideRefund(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.Recharge(f.user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "o")["id"].(string)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "e-r", "type": "refund.succeeded", "refund_id": order, "order_id": order, "amount_fen": 600}).Status)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "e-p", "type": "payment.succeeded", "order_id": order, "trade_no": "T-1", "amount_fen": 600}).Status)
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	v := f.Do("GET", "/v1/admin/recharges/"+order, apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()
	require.Equal(t, "pending", v["status"])
	require.Equal(t, []any{"external_refund"}, v["flags"])
	require.Equal(t, "external_refund", v["payments"].([]any)[0].(map[string]any)["outcome"])
	f.RequireClean()
}

// A verified refund notification that names another order, or less money
// than the refund, settles nothing; the worker's own query of the refund
// settles it later.
func TestRefundNotificationMustMatch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 600)
	other := f.paidOrder(t, 700)
	r := f.refund(t, f.user, "k", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id := r["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, "processing", f.admin(t, id)["status"])

	for key, ev := range map[string]map[string]any{
		"e-order":  {"type": "refund.succeeded", "refund_id": id, "order_id": other, "amount_fen": 600},
		"e-amount": {"type": "refund.succeeded", "refund_id": id, "amount_fen": 1},
		"e-failed": {"type": "refund.failed", "refund_id": id, "order_id": other, "reason": "?"},
	} {
		ev["event_id"] = key
		require.Equal(t, 200, f.Webhook(ev).Status, key)
		require.Equal(t, 1, f.count(t, `SELECT count(*) FROM webhook_events WHERE event_key = $1 AND outcome = 'refund_mismatch'`, key), key)
		require.Equal(t, "processing", f.admin(t, id)["status"], key)
	}
	require.Equal(t, [3]int64{70, 60, 0}, f.wallet(t))

	f.bank.mu.Lock()
	f.bank.settle = "succeeded"
	f.bank.mu.Unlock()
	f.Clock.Advance(time.Hour)
	f.RunWorkers()
	require.Equal(t, "succeeded", f.admin(t, id)["status"])
	require.Equal(t, [3]int64{70, 0, 0}, f.wallet(t))
	f.RequireClean()
}

func (f *fixture) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, f.Pool.QueryRow(context.Background(), q, args...).Scan(&n))
	return n
}
