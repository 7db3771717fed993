package app_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
	"github.com/diamondd/diamondd/internal/channel/wechatpay"
	"github.com/diamondd/diamondd/internal/channel/wechatpay/wechatpaytest"
)

// outside is a service on a channel fake, and a way to pay an order with
// every notification lost and then refund it in full outside diamondd: a
// second client of the channel with our merchant keys, as the merchant
// console is.
type outside struct {
	h            *apptest.Harness
	pkg          string
	payAndRefund func(t *testing.T, orderID string, pay map[string]any, amountFen int64)
}

// onAlipay starts the service on a fake Alipay that shares its clock.
func onAlipay(t *testing.T) (*apptest.Harness, *alipaytest.Server) {
	var h *apptest.Harness
	fake := alipaytest.New(t, alipaytest.Options{Now: func() time.Time { return h.Clock.Now() }})
	env, err := fake.Env(t.TempDir())
	require.NoError(t, err)
	h = apptest.New(t, withEnv("alipay", env))
	return h, fake
}

func alipayOutside(t *testing.T) outside {
	h, fake := onAlipay(t)
	cfg := fake.Config()
	cfg.NotifyURL, cfg.Now = "https://console.example/notify", h.Clock.Now
	console, err := alipay.New(cfg)
	require.NoError(t, err)
	return outside{h: h, pkg: "p300", payAndRefund: func(t *testing.T, id string, pay map[string]any, amount int64) {
		fake.LoseNextNotifications(2) // the payment's and the refund's
		_, err := fake.PayOrderString(pay["order_string"].(string))
		require.NoError(t, err)
		refundOutside(t, console, id, amount)
		waitIdle(t, fake.WaitIdle)
		tr, _ := fake.Trade(id)
		require.Equal(t, alipaytest.StatusTradeClosed, tr.Status)
	}}
}

func wechatOutside(t *testing.T) outside {
	var h *apptest.Harness
	fake := wechatpaytest.New(t, wechatpaytest.Options{Now: func() time.Time { return h.Clock.Now() }})
	env, err := fake.Env(t.TempDir())
	require.NoError(t, err)
	h = apptest.New(t, withEnv("wechatpay", env))
	cfg := fake.Config()
	cfg.NotifyURL, cfg.Now = "https://console.example/notify", h.Clock.Now
	console, err := wechatpay.New(cfg)
	require.NoError(t, err)
	return outside{h: h, pkg: "p980", payAndRefund: func(t *testing.T, id string, _ map[string]any, amount int64) {
		fake.LoseNextNotifications(2)
		_, err := fake.Pay(id)
		require.NoError(t, err)
		refundOutside(t, console, id, amount)
		waitIdle(t, fake.WaitIdle)
		o, _ := fake.Order(id)
		require.Equal(t, wechatpaytest.StateRefund, o.TradeState)
	}}
}

func refundOutside(t *testing.T, console channel.Channel, orderID string, amountFen int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := console.Refund(ctx, channel.RefundRequest{OrderID: orderID, RefundID: "console-1", AmountFen: amountFen, TotalFen: amountFen})
	require.NoError(t, err)
	require.Equal(t, channel.RefundSucceeded, st.State)
}

// adminOrder reads an order as support sees it.
func adminOrder(h *apptest.Harness, id string) map[string]any {
	h.T.Helper()
	return h.Do("GET", "/v1/admin/recharges/"+id, apptest.Req{Token: h.Token("agent", auth.RoleSupport)}).RequireStatus(h.T, 200).JSON()
}

// requireExternalRefund checks that the order holds the trade, not
// credited, flagged for support with a note, in the given status.
func requireExternalRefund(t *testing.T, h *apptest.Harness, id, status string, amountFen int64) map[string]any {
	t.Helper()
	avail, held, debt := h.Wallet("u1")
	require.Zero(t, avail+held+debt, "diamonds credited for a payment that went back")
	o := adminOrder(h, id)
	require.Equal(t, status, o["status"])
	require.Contains(t, o["flags"], "external_refund")
	pays := o["payments"].([]any)
	require.Len(t, pays, 1)
	require.Equal(t, "external_refund", pays[0].(map[string]any)["outcome"])
	require.EqualValues(t, amountFen, pays[0].(map[string]any)["amount_fen"])
	notes := ""
	for _, e := range o["timeline"].([]any) {
		notes += e.(map[string]any)["note"].(string) + "\n"
	}
	require.Contains(t, notes, "refunded", "timeline: %s", notes)
	require.Contains(t, notes, "left to support", "timeline: %s", notes)
	return o
}

// A payment whose notifications were lost and that was refunded in full
// outside diamondd is found by the pending-order worker: the trade is
// recorded, nothing is credited, the order is flagged for support, and it
// expires like any other.
func TestExternalRefundFoundByQueryIsNotCredited(t *testing.T) {
	t.Parallel()
	for name, start := range map[string]func(*testing.T) outside{"alipay": alipayOutside, "wechatpay": wechatOutside} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := start(t)
			h := c.h
			o := h.Recharge(h.Token("u1", auth.RoleUser), map[string]any{"channel": name, "package_id": c.pkg}, "r1")
			id, amount := o["id"].(string), int64(o["amount_fen"].(float64))
			c.payAndRefund(t, id, o["pay"].(map[string]any), amount)

			h.Clock.Advance(3 * time.Minute)
			h.RunWorkers()
			requireExternalRefund(t, h, id, "pending", amount)
			// Asked again: the trade is known, nothing changes.
			h.Clock.Advance(2 * time.Minute)
			h.RunWorkers()
			requireExternalRefund(t, h, id, "pending", amount)

			// At its expiry the channel refuses to close a paid trade; the
			// order closes here, its payment left to support.
			h.Clock.Advance(15 * time.Minute)
			h.RunWorkers()
			got := requireExternalRefund(t, h, id, "closed", amount)
			tl := got["timeline"].([]any)
			require.Contains(t, tl[len(tl)-1].(map[string]any)["note"], "refunded at the channel, is left to support")
			h.RequireClean()
		})
	}
}

// An Alipay notification of a paid trade that carries a refund_fee without
// naming a refund of ours (out_biz_no) never credits an order still
// pending; for a credited order it changes nothing.
func TestAlipayNotificationWithRefundFee(t *testing.T) {
	t.Parallel()
	h, fake := onAlipay(t)
	user := h.Token("u1", auth.RoleUser)
	ctx := context.Background()
	refunded := func(n alipaytest.Notification, key, fee string) alipaytest.Delivery {
		p := url.Values{}
		for k, v := range n.Params {
			p[k] = v
		}
		p.Set("notify_id", key)
		p.Set("refund_fee", fee)
		p.Set("gmt_refund", h.Clock.Now().In(time.FixedZone("CST", 8*3600)).Format("2006-01-02 15:04:05.000"))
		d, err := fake.DeliverBody(ctx, h.URL+"/v1/webhooks/alipay", fake.SignNotification(p))
		require.NoError(t, err)
		return d
	}

	o := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p300"}, "a1")
	id := o["id"].(string)
	fake.LoseNextNotifications(1)
	n, err := fake.PayOrderString(o["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	d := refunded(n, "late-refunded", "10.00")
	require.Equal(t, "success", d.Body, "%+v", d)
	requireExternalRefund(t, h, id, "pending", 3000)
	// The payment's own notification, late: its trade is known.
	d, err = fake.Deliver(ctx, n)
	require.NoError(t, err)
	require.Equal(t, "success", d.Body, "%+v", d)
	requireExternalRefund(t, h, id, "pending", 3000)

	// A credited order: the same kind of notification is a known trade.
	o2 := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p300"}, "a2")
	n2, err := fake.PayOrderString(o2["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	d = refunded(n2, "after-credit", "10.00")
	require.Equal(t, "success", d.Body, "%+v", d)
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 300, avail)
	got := adminOrder(h, o2["id"].(string))
	require.Equal(t, "paid", got["status"])
	require.NotContains(t, got["flags"], "external_refund")
	require.Len(t, got["payments"], 1)
	h.RequireClean()
}

// A refund notification of one channel never flags an order of another: a
// sandbox refund.succeeded naming an Alipay order is recorded as
// wrong_channel, and the order's real Alipay payment is credited.
func TestOutsideRefundOfAnotherChannel(t *testing.T) {
	t.Parallel()
	h, fake := onAlipay(t)
	user := h.Token("u1", auth.RoleUser)
	o := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p300"}, "a1")
	id := o["id"].(string)
	r := h.Webhook(map[string]any{"event_id": "x-1", "type": "refund.succeeded", "refund_id": id, "amount_fen": 1})
	require.Equal(t, 200, r.Status, "body: %s", r.Body)
	var outcome string
	require.NoError(t, h.Pool.QueryRow(context.Background(), `SELECT outcome FROM webhook_events WHERE event_key = 'x-1'`).Scan(&outcome))
	require.Equal(t, "wrong_channel", outcome)

	_, err := fake.PayOrderString(o["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	require.Empty(t, adminOrder(h, id)["flags"])
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 300, avail)
	h.RequireClean()
}

// A refund Alipay reports not made (its query answers refund_amount alone,
// without refund_status or gmt_refund_pay: the newer contract) is submitted
// again under the same out_request_no, not polled for ever.
func TestAlipayRefundNotMadeIsSubmittedAgain(t *testing.T) {
	t.Parallel()
	h, fake := onAlipay(t)
	user := h.Token("u1", auth.RoleUser)
	support := h.Token("agent", auth.RoleSupport)
	o := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p300"}, "a1")
	_, err := fake.PayOrderString(o["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)

	// accepted without fund_change (processing), its notification lost, and
	// the first query answers "not made"
	fake.InjectFault(alipaytest.Fault{Method: alipaytest.MethodRefund, Omit: []string{"fund_change"}})
	fake.LoseNextNotifications(1)
	fake.InjectFault(alipaytest.Fault{Method: alipaytest.MethodRefundQuery, Omit: []string{"refund_status", "gmt_refund_pay"}})
	r := h.Do("POST", "/v1/refunds", apptest.Req{Token: user, Key: "rf", Body: map[string]any{"order_id": o["id"], "reason_code": "other"}}).RequireStatus(t, 201).JSON()
	rid := r["id"].(string)
	h.Do("POST", "/v1/admin/refunds/"+rid+"/approve", apptest.Req{Token: support, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 1, fake.Calls(alipaytest.MethodRefund))
	h.Clock.Advance(10 * time.Minute)
	h.RunWorkers()
	require.Equal(t, 2, fake.Calls(alipaytest.MethodRefund), "submitted again under the same number")
	h.Clock.Advance(10 * time.Minute)
	h.RunWorkers() // polled: made once
	require.Equal(t, 2, fake.Calls(alipaytest.MethodRefund))
	got := h.Do("GET", "/v1/admin/refunds/"+rid, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
	require.Equal(t, "succeeded", got["status"])
	h.RequireClean()
}
