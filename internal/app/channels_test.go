package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
	"github.com/diamondd/diamondd/internal/channel/wechatpay/wechatpaytest"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// withEnv points the service at a fake channel through its settings, as an
// operator would configure the real one.
func withEnv(name string, env map[string]string) func(*config.Config) {
	return func(c *config.Config) {
		c.Channels = []string{"sandbox", name}
		c.ChannelTimeout = 500 * time.Millisecond
		c.RateLimitRefundPerMin = 0
		set := map[string]*string{
			"ALIPAY_APP_ID": &c.AlipayAppID, "ALIPAY_PRIVATE_KEY_FILE": &c.AlipayPrivateKeyFile,
			"ALIPAY_PUBLIC_KEY_FILE": &c.AlipayPublicKeyFile, "ALIPAY_BASE_URL": &c.AlipayBaseURL,
			"ALIPAY_SELLER_ID": &c.AlipaySellerID,
			"WECHATPAY_MCH_ID": &c.WechatpayMchID, "WECHATPAY_APP_ID": &c.WechatpayAppID,
			"WECHATPAY_PRIVATE_KEY_FILE": &c.WechatpayPrivateKeyFile, "WECHATPAY_CERT_SERIAL": &c.WechatpayCertSerial,
			"WECHATPAY_APIV3_KEY": &c.WechatpayAPIv3Key, "WECHATPAY_PLATFORM_KEYS": &c.WechatpayPlatformKeys,
			"WECHATPAY_BASE_URL": &c.WechatpayBaseURL,
		}
		for k, v := range env {
			if p, ok := set[k]; ok {
				*p = v
			}
		}
	}
}

func waitIdle(t *testing.T, wait func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, wait(ctx))
}

func TestAlipayEndToEnd(t *testing.T) {
	t.Parallel()
	var h *apptest.Harness
	fake := alipaytest.New(t, alipaytest.Options{Now: func() time.Time { return h.Clock.Now() }})
	env, err := fake.Env(t.TempDir())
	require.NoError(t, err)
	h = apptest.New(t, withEnv("alipay", env))
	user := h.Token("u1", auth.RoleUser)
	support := h.Token("agent", auth.RoleSupport)

	// create → the payer pays → Alipay notifies (retrying until "success")
	o := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p300"}, "a1")
	pay := o["pay"].(map[string]any)
	require.Equal(t, "alipay_app", pay["type"])
	n, err := fake.PayOrderString(pay["order_string"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 300, avail)
	// redelivered: acknowledged, credited once
	fake.Redeliver(n)
	waitIdle(t, fake.WaitIdle)
	for _, d := range fake.Deliveries() {
		require.Equal(t, "success", d.Body, "every delivery acknowledged: %+v", d)
	}

	// a refund, with the submission answered by a timeout the first time:
	// the retry uses the same out_request_no and refunds once
	id := o["id"].(string)
	r := h.Do("POST", "/v1/refunds", apptest.Req{Token: user, Key: "rf", Body: map[string]any{"order_id": id, "reason_code": "other"}}).RequireStatus(t, 201).JSON()
	fake.InjectFault(alipaytest.Fault{Method: "alipay.trade.refund", Delay: 2 * time.Second})
	fake.LoseNextNotifications(1) // so that only the resubmission can confirm it
	a := h.Do("POST", "/v1/admin/refunds/"+r["id"].(string)+"/approve", apptest.Req{Token: support, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200).JSON()
	require.Equal(t, "approved", a["status"], "timed out: outcome unknown")
	h.Clock.Advance(time.Minute)
	h.RunWorkers() // resubmitted: Alipay answers fund_change=N for a repeated request
	h.Clock.Advance(time.Minute)
	h.RunWorkers() // polled: alipay.trade.fastpay.refund.query says it is done
	got := h.Do("GET", "/v1/admin/refunds/"+r["id"].(string), apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
	require.Equal(t, "succeeded", got["status"])
	tr, ok := fake.Trade(id)
	require.True(t, ok)
	require.EqualValues(t, 3000, tr.RefundedFen, "refunded once")
	require.GreaterOrEqual(t, fake.Calls("alipay.trade.refund"), 2)
	require.Equal(t, "refunded", h.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"])

	// the payment notified again after the refund (out of order): nothing moves
	fake.Redeliver(n)
	waitIdle(t, fake.WaitIdle)
	avail, held, _ := h.Wallet("u1")
	require.EqualValues(t, 0, avail)
	require.EqualValues(t, 0, held)

	// a lost notification is recovered by the query worker
	o2 := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p60"}, "a2")
	fake.LoseNextNotifications(1)
	_, err = fake.PayOrderString(o2["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	avail, _, _ = h.Wallet("u1")
	require.Zero(t, avail)
	h.Clock.Advance(3 * time.Minute)
	h.RunWorkers()
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60, avail)

	// an expired, unpaid order is closed at Alipay too
	o3 := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p60"}, "a3")
	_, err = fake.Submit(o3["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	h.Clock.Advance(16 * time.Minute)
	h.RunWorkers()
	require.Equal(t, "closed", h.Do("GET", "/v1/recharges/"+o3["id"].(string), apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"])
	tr, _ = fake.Trade(o3["id"].(string))
	require.Equal(t, "TRADE_CLOSED", tr.Status)
	h.RequireClean()
}

// With ALIPAY_SELLER_ID set, a payment notified for another seller (our app
// bound to someone else's merchant account) is refused and credits nothing;
// the query worker, which asks about our own trade, is not affected.
func TestAlipaySellerChecked(t *testing.T) {
	t.Parallel()
	var h *apptest.Harness
	fake := alipaytest.New(t, alipaytest.Options{SellerID: "2088000000000002", Now: func() time.Time { return h.Clock.Now() }})
	env, err := fake.Env(t.TempDir())
	require.NoError(t, err)
	env["ALIPAY_SELLER_ID"] = "2088000000000001"
	h = apptest.New(t, withEnv("alipay", env))
	user := h.Token("u1", auth.RoleUser)

	o := h.Recharge(user, map[string]any{"channel": "alipay", "package_id": "p60"}, "a1")
	_, err = fake.PayOrderString(o["pay"].(map[string]any)["order_string"].(string))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(fake.Deliveries()) > 0 }, 10*time.Second, 10*time.Millisecond)
	for _, d := range fake.Deliveries() {
		require.NotEqual(t, "success", d.Body, "another seller's notification acknowledged: %+v", d)
	}
	avail, _, _ := h.Wallet("u1")
	require.Zero(t, avail)
	require.Equal(t, "pending", h.Do("GET", "/v1/recharges/"+o["id"].(string), apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"])
}

func TestWechatPayEndToEnd(t *testing.T) {
	t.Parallel()
	var h *apptest.Harness
	fake := wechatpaytest.New(t, wechatpaytest.Options{RefundsPending: true, Now: func() time.Time { return h.Clock.Now() }})
	env, err := fake.Env(t.TempDir())
	require.NoError(t, err)
	h = apptest.New(t, withEnv("wechatpay", env))
	user := h.Token("u1", auth.RoleUser)
	support := h.Token("agent", auth.RoleSupport)

	o := h.Recharge(user, map[string]any{"channel": "wechatpay", "package_id": "p980"}, "w1")
	require.NotEmpty(t, o["pay"].(map[string]any)["prepayid"])
	id := o["id"].(string)
	n, err := fake.Pay(id)
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	fake.Redeliver(n)
	waitIdle(t, fake.WaitIdle)
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 980, avail)

	// a partial refund: submitted (the first answer spoiled by a 500, the
	// refund applied anyway), then confirmed by notification
	r := h.Do("POST", "/v1/refunds", apptest.Req{Token: user, Key: "rf1", Body: map[string]any{"order_id": id, "amount_fen": 4900, "reason_code": "other"}}).RequireStatus(t, 201).JSON()
	rid := r["id"].(string)
	fake.InjectFault(wechatpaytest.Fault{Op: "refund", Status: 500})
	h.Do("POST", "/v1/admin/refunds/"+rid+"/approve", apptest.Req{Token: support, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	h.Clock.Advance(time.Minute)
	h.RunWorkers()
	require.Equal(t, "processing", h.Do("GET", "/v1/admin/refunds/"+rid, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()["status"])
	_, err = fake.CompleteRefund(rid, "SUCCESS")
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	require.Equal(t, "succeeded", h.Do("GET", "/v1/admin/refunds/"+rid, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()["status"])
	ord, _ := fake.Order(id)
	require.EqualValues(t, 4900, ord.RefundedFen, "refunded once")
	avail, held, _ := h.Wallet("u1")
	require.EqualValues(t, 490, avail)
	require.Zero(t, held)

	// the rest, confirmed by query when the notification is lost
	r2 := h.Do("POST", "/v1/refunds", apptest.Req{Token: user, Key: "rf2", Body: map[string]any{"order_id": id, "reason_code": "other"}}).RequireStatus(t, 201).JSON()
	rid2 := r2["id"].(string)
	h.Do("POST", "/v1/admin/refunds/"+rid2+"/approve", apptest.Req{Token: support, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	fake.LoseNextNotifications(1)
	_, err = fake.CompleteRefund(rid2, "SUCCESS")
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	require.Equal(t, "processing", h.Do("GET", "/v1/admin/refunds/"+rid2, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()["status"])
	h.Clock.Advance(2 * time.Minute)
	h.RunWorkers()
	require.Equal(t, "succeeded", h.Do("GET", "/v1/admin/refunds/"+rid2, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()["status"])
	require.Equal(t, "refunded", h.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"])

	// the payment notified again after the refunds: nothing moves
	fake.Redeliver(n)
	waitIdle(t, fake.WaitIdle)
	avail, _, _ = h.Wallet("u1")
	require.Zero(t, avail)

	// a lost payment notification is recovered by the query worker
	o2 := h.Recharge(user, map[string]any{"channel": "wechatpay", "package_id": "p60"}, "w2")
	fake.LoseNextNotifications(1)
	_, err = fake.Pay(o2["id"].(string))
	require.NoError(t, err)
	waitIdle(t, fake.WaitIdle)
	h.Clock.Advance(3 * time.Minute)
	h.RunWorkers()
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60, avail)
	h.RequireClean()
}

// A channel missing its keys refuses to start, naming what is missing.
func TestChannelConfigRefused(t *testing.T) {
	cfg := apptest.Defaults()
	cfg.Channels = []string{"alipay"}
	cfg.PublicBaseURL = "http://localhost"
	require.NoError(t, cfg.Validate())
	h := apptest.New(t) // for a pool
	_, err := newApp(h, cfg)
	require.ErrorContains(t, err, "ALIPAY_APP_ID")
	cfg.Channels = []string{"wechatpay"}
	_, err = newApp(h, cfg)
	require.ErrorContains(t, err, "WECHATPAY_")
}
