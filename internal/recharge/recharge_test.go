package recharge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
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
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func count(t *testing.T, h *apptest.Harness, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, h.Pool.QueryRow(context.Background(), q, args...).Scan(&n))
	return n
}

func TestRechargeEndToEnd(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)

	pk := h.Do("GET", "/v1/packages", apptest.Req{Token: user}).RequireStatus(t, 200)
	require.Contains(t, string(pk.Body), `{"amount_fen":600,"diamonds":60,"id":"p60","label":"60 diamonds"}`)
	chs := h.Do("GET", "/v1/channels?amount_fen=600", apptest.Req{Token: user}).RequireStatus(t, 200)
	require.JSONEq(t, `[{"channel":"sandbox","available":true,"reason_code":null,"reason":null},
		{"channel":"monthly_pay","available":false,"reason_code":"credit_not_opened","reason":"You have not opened a monthly credit line."}]`, string(chs.Body))

	body := map[string]any{"channel": "sandbox", "package_id": "p60"}
	first := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "r1", Body: body}).RequireStatus(t, 201)
	o := first.JSON()
	require.Equal(t, "pending", o["status"])
	require.EqualValues(t, 600, o["amount_fen"])
	require.EqualValues(t, 60, o["diamonds"])
	require.Equal(t, "sandbox", o["pay"].(map[string]any)["type"])
	id := o["id"].(string)

	again := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "r1", Body: body}).RequireStatus(t, 201)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first.Body), string(again.Body))
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders`))

	h.Pay(id, 600, "T-1", "e-1")
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail)

	got := h.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()
	require.Equal(t, "paid", got["status"])
	tl := got["timeline"].([]any)
	require.Len(t, tl, 2)
	require.Equal(t, "paid", tl[1].(map[string]any)["status"])
	require.Equal(t, "channel:sandbox", tl[1].(map[string]any)["actor"])

	// a custom amount in whole diamonds
	c := h.Recharge(user, map[string]any{"channel": "sandbox", "amount_fen": 1230}, "r2")
	require.EqualValues(t, 123, c["diamonds"])
	list := h.Do("GET", "/v1/recharges?limit=1", apptest.Req{Token: user}).RequireStatus(t, 200).JSON()
	require.Len(t, list["items"], 1)
	require.Equal(t, c["id"], list["items"].([]any)[0].(map[string]any)["id"])
	next := list["next_cursor"].(string)
	list = h.Do("GET", "/v1/recharges?limit=1&cursor="+next, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()
	require.Equal(t, id, list["items"].([]any)[0].(map[string]any)["id"])

	admin := h.Do("GET", "/v1/admin/recharges/"+id, apptest.Req{Token: h.Token("a", auth.RoleSupport)}).RequireStatus(t, 200).JSON()
	require.Equal(t, "T-1", admin["trade_no"])
	require.Equal(t, "u1", admin["user_id"])
	require.Len(t, admin["payments"], 1)
	h.RequireClean()
}

func TestRechargeValidation(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
		reason string // reason_code, as GET /v1/channels gives it for the amount
	}{
		"both":          {`{"channel":"sandbox","package_id":"p60","amount_fen":600}`, 400, "validation_failed", ""},
		"neither":       {`{"channel":"sandbox"}`, 400, "validation_failed", ""},
		"unknown pkg":   {`{"channel":"sandbox","package_id":"p1"}`, 400, "unknown_package", ""},
		"below min":     {`{"channel":"sandbox","amount_fen":90}`, 422, "channel_unavailable", "amount_below_min"},
		"above max":     {`{"channel":"sandbox","amount_fen":5000010}`, 422, "channel_unavailable", "amount_above_max"},
		"part diamond":  {`{"channel":"sandbox","amount_fen":1234}`, 400, "invalid_amount", ""},
		"float":         {`{"channel":"sandbox","amount_fen":600.5}`, 400, "validation_failed", ""},
		"unknown field": {`{"channel":"sandbox","amount_fen":600,"currency":"USD"}`, 400, "validation_failed", ""},
		"unknown chan":  {`{"channel":"paypal","amount_fen":600}`, 422, "channel_unavailable", "channel_disabled"},
	} {
		t.Run(name, func(t *testing.T) {
			r := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "k-" + name, Body: tc.body})
			require.Equal(t, tc.status, r.Status, "body: %s", r.Body)
			require.Equal(t, tc.code, r.Code(), "body: %s", r.Body)
			if tc.reason == "" {
				return
			}
			require.Equal(t, tc.reason, r.JSON()["reason_code"])
			var req struct {
				Channel   string `json:"channel"`
				AmountFen int64  `json:"amount_fen"`
			}
			require.NoError(t, json.Unmarshal([]byte(tc.body), &req))
			list := h.Do("GET", fmt.Sprintf("/v1/channels?amount_fen=%d", req.AmountFen), apptest.Req{Token: user}).RequireStatus(t, 200)
			listed := false
			for _, e := range list.JSON2() {
				if e["channel"] == req.Channel {
					listed = true
					require.Equal(t, false, e["available"])
					require.Equal(t, tc.reason, e["reason_code"], "the list says what creation says")
				}
			}
			require.Equal(t, req.Channel != "paypal", listed, "an unconfigured channel is not listed")
		})
	}
	r := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Body: `{"channel":"sandbox","amount_fen":600}`}).RequireStatus(t, 400)
	require.Equal(t, "idempotency_key_required", r.Code())
	// ids are opaque: one the API never issued is not found, whatever its
	// shape, in a path or in a body
	id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "real")["id"].(string)
	h.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: user}).RequireStatus(t, 200)
	for i, bad := range []string{"not-a-uuid", strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id,
		strings.ReplaceAll(id, "-", ""), strings.Repeat("x", 300)} {
		for _, path := range []string{"/v1/recharges/" + bad, "/v1/refunds/" + bad} {
			require.Equal(t, "not_found", h.Do("GET", path, apptest.Req{Token: user}).RequireStatus(t, 404).Code(), path)
		}
		if i < 3 { // within the refund requests' rate limit
			r := h.Do("POST", "/v1/refunds", apptest.Req{Token: user, Key: fmt.Sprintf("refund-%d", i),
				Body: map[string]any{"order_id": bad, "reason_code": "other"}})
			require.Equal(t, "not_found", r.RequireStatus(t, 404).Code(), bad)
		}
	}
	// the key is judged before the id
	support := h.Token("agent", auth.RoleSupport)
	r = h.Do("POST", "/v1/admin/recharges/not-a-uuid/payments/T-1/return", apptest.Req{Token: support, Body: map[string]any{"note": "x"}})
	require.Equal(t, "idempotency_key_required", r.RequireStatus(t, 400).Code())
	require.Equal(t, "not_found", h.Do("POST", "/v1/recharges/not-a-uuid/cancel", apptest.Req{Token: user}).RequireStatus(t, 404).Code())
	require.Equal(t, "not_found", h.Do("POST", "/v1/admin/refunds/x/approve", apptest.Req{Token: support, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 404).Code())
}

func TestWebhookRefusals(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "r")["id"].(string)
	body := []byte(fmt.Sprintf(`{"event_id":"e-1","type":"payment.succeeded","order_id":"%s","trade_no":"T-1","amount_fen":600}`, id))
	now := h.Clock.Now().Unix()

	require.Equal(t, 401, h.SignedWebhook(body, now, "wrong-secret").Status)
	require.Equal(t, 401, h.SignedWebhook(body, now-301, apptest.SandboxSecret).Status, "stale")
	require.Equal(t, 401, h.SignedWebhook(body, now+301, apptest.SandboxSecret).Status, "future")
	// tampered: signed for one body, another sent
	tampered := h.Do("POST", "/v1/webhooks/sandbox", apptest.Req{Body: strings.Replace(string(body), "600", "6000", 1),
		Headers: map[string]string{"X-Sandbox-Timestamp": fmt.Sprint(now), "X-Sandbox-Signature": sandbox.Sign(apptest.SandboxSecret, now, body)}})
	require.Equal(t, 401, tampered.Status)
	// a timestamp not in plain unix seconds, even with the right signature
	// for the number it reads as
	for _, ts := range []string{"+" + fmt.Sprint(now), "0" + fmt.Sprint(now)} {
		odd := h.Do("POST", "/v1/webhooks/sandbox", apptest.Req{Body: string(body),
			Headers: map[string]string{"X-Sandbox-Timestamp": ts, "X-Sandbox-Signature": sandbox.Sign(apptest.SandboxSecret, now, body)}})
		require.Equal(t, 401, odd.Status, "timestamp %q", ts)
	}
	unsigned := h.Do("POST", "/v1/webhooks/sandbox", apptest.Req{Body: string(body), Headers: map[string]string{"X-Request-ID": "req-1"}})
	require.Equal(t, 401, unsigned.Status, "unsigned")
	// refusals are problems like every other error of the API
	require.Equal(t, "application/problem+json", unsigned.Header.Get("Content-Type"))
	require.JSONEq(t, `{"type":"https://diamondd.dev/problems/invalid-signature","title":"Unauthorized","status":401,
		"detail":"the webhook signature or timestamp is not valid","code":"invalid_signature","request_id":"req-1"}`, string(unsigned.Body))
	require.Equal(t, 0, count(t, h, `SELECT count(*) FROM webhook_events`))
	avail, _, _ := h.Wallet("u1")
	require.Zero(t, avail)

	// verified but not understood: refused, nothing recorded
	require.Equal(t, 400, h.SignedWebhook([]byte(`{"event_id":"x","type":"payment.teleported"}`), now, apptest.SandboxSecret).Status)
	malformed := h.SignedWebhook([]byte(`not json`), now, apptest.SandboxSecret)
	require.Equal(t, 400, malformed.Status)
	require.Equal(t, "malformed_event", malformed.Code())
	require.NotEmpty(t, malformed.JSON()["request_id"])
	require.Equal(t, 0, count(t, h, `SELECT count(*) FROM webhook_events`))
	require.Equal(t, 404, h.Do("POST", "/v1/webhooks/paypal", apptest.Req{Body: "{}"}).Status)
	mp := h.Do("POST", "/v1/webhooks/monthly_pay", apptest.Req{Body: "{}"})
	require.Equal(t, "invalid_signature", mp.RequireStatus(t, 401).Code(), "the credit line never notifies")
	require.Equal(t, "application/problem+json", mp.Header.Get("Content-Type"))

	// within the window it counts
	require.Equal(t, 200, h.SignedWebhook(body, now-299, apptest.SandboxSecret).Status)
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60, avail)
}

// 50 concurrent deliveries of one event, then 50 of the same payment under
// different event ids: one credit.
func TestConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p300"}, "r")["id"].(string)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := "same-event"
			if i >= 50 {
				ev = fmt.Sprintf("event-%d", i)
			}
			r := h.Webhook(map[string]any{"event_id": ev, "type": "payment.succeeded", "order_id": id, "trade_no": "T-1", "amount_fen": 3000})
			require.Equal(t, 200, r.Status, "body: %s", r.Body)
		}()
	}
	wg.Wait()
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 300, avail)
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM journals WHERE reference = $1`, "recharge:"+id))
	require.Equal(t, 51, count(t, h, `SELECT count(*) FROM webhook_events`))
	// each event is recorded once, with what it did
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM webhook_events WHERE outcome = 'credited' AND user_id = 'u1'`))
	require.Equal(t, 50, count(t, h, `SELECT count(*) FROM webhook_events WHERE outcome = 'duplicate_trade' AND user_id = 'u1'`))

	// concurrent deliveries of an event for an order that does not exist:
	// acknowledged, recorded once, nothing else
	unknown := uuid.NewString()
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.Webhook(map[string]any{"event_id": "ghost", "type": "payment.succeeded", "order_id": unknown, "trade_no": "T-2", "amount_fen": 3000})
			require.Equal(t, 200, r.Status, "body: %s", r.Body)
		}()
	}
	wg.Wait()
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM webhook_events WHERE event_key = 'ghost' AND outcome = 'unknown_order' AND user_id IS NULL`))
	h.RequireClean()
}

func TestPaymentEdgeCases(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	support := h.Token("agent", auth.RoleSupport)
	order := func(key string) string {
		return h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, key)["id"].(string)
	}
	adminView := func(id string) map[string]any {
		return h.Do("GET", "/v1/admin/recharges/"+id, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
	}

	t.Run("amount mismatch", func(t *testing.T) {
		id := order("mismatch")
		h.Pay(id, 599, "T-m", "e-m")
		v := adminView(id)
		require.Equal(t, "pending", v["status"])
		require.Equal(t, []any{"amount_mismatch"}, v["flags"])
		require.Equal(t, "amount_mismatch", v["payments"].([]any)[0].(map[string]any)["outcome"])
		avail, _, _ := h.Wallet("u1")
		require.Zero(t, avail)
	})

	t.Run("double payment is refunded automatically", func(t *testing.T) {
		id := order("double")
		h.Pay(id, 600, "T-d1", "e-d1")
		h.Pay(id, 600, "T-d2", "e-d2")
		avail, _, _ := h.Wallet("u1")
		require.EqualValues(t, 60, avail)
		v := adminView(id)
		require.Equal(t, "paid", v["status"])
		require.Contains(t, v["flags"], "duplicate_payment")
		var refundID string
		for _, p := range v["payments"].([]any) {
			if p.(map[string]any)["trade_no"] == "T-d2" {
				require.Equal(t, "duplicate", p.(map[string]any)["outcome"])
				refundID = p.(map[string]any)["refund_id"].(string)
			}
		}
		require.NotEmpty(t, refundID)
		// the refund worker submits it to the channel; the sandbox confirms by webhook
		h.RunWorkers()
		r := h.Do("GET", "/v1/admin/refunds/"+refundID, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
		require.Equal(t, "processing", r["status"])
		require.Equal(t, "duplicate_payment", r["kind"])
		require.EqualValues(t, 600, r["amount_fen"])
		require.EqualValues(t, 0, r["diamonds"])
		require.Equal(t, 200, h.Webhook(map[string]any{"event_id": "e-rd", "type": "refund.succeeded", "refund_id": refundID, "amount_fen": 600}).Status)
		r = h.Do("GET", "/v1/admin/refunds/"+refundID, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
		require.Equal(t, "succeeded", r["status"])
		require.Equal(t, "paid", adminView(id)["status"], "the order keeps its own payment")
		avail, _, _ = h.Wallet("u1")
		require.EqualValues(t, 60, avail)
		avail = 0
	})

	t.Run("a second payment of another amount is refunded in full too", func(t *testing.T) {
		id := order("double-other")
		before, _, _ := h.Wallet("u1")
		h.Pay(id, 600, "T-o1", "e-o1")
		h.Pay(id, 1200, "T-o2", "e-o2")
		after, _, _ := h.Wallet("u1")
		require.EqualValues(t, 60, after-before)
		v := adminView(id)
		require.Equal(t, "paid", v["status"])
		require.Equal(t, []any{"duplicate_payment"}, v["flags"])
		var refundID string
		for _, p := range v["payments"].([]any) {
			if p := p.(map[string]any); p["trade_no"] == "T-o2" {
				require.Equal(t, "duplicate", p["outcome"])
				refundID = p["refund_id"].(string)
			}
		}
		r := h.Do("GET", "/v1/admin/refunds/"+refundID, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
		require.Equal(t, "duplicate_payment", r["kind"])
		require.EqualValues(t, 1200, r["amount_fen"], "the whole second payment goes back")
	})

	t.Run("failed after paid is ignored", func(t *testing.T) {
		id := order("failed-after")
		before, _, _ := h.Wallet("u1")
		h.Pay(id, 600, "T-f", "e-f1")
		require.Equal(t, 200, h.Webhook(map[string]any{"event_id": "e-f2", "type": "payment.failed", "order_id": id, "trade_no": "T-f"}).Status)
		require.Equal(t, "paid", adminView(id)["status"])
		after, _, _ := h.Wallet("u1")
		require.EqualValues(t, 60, after-before)
	})

	t.Run("cancel then pay: credited late", func(t *testing.T) {
		id := order("late")
		c := h.Do("POST", "/v1/recharges/"+id+"/cancel", apptest.Req{Token: user}).RequireStatus(t, 200).JSON()
		require.Equal(t, "closed", c["status"])
		// a second cancel is refused
		require.Equal(t, "invalid_state", h.Do("POST", "/v1/recharges/"+id+"/cancel", apptest.Req{Token: user}).RequireStatus(t, 409).Code())
		before, _, _ := h.Wallet("u1")
		h.Pay(id, 600, "T-l", "e-l")
		v := adminView(id)
		require.Equal(t, "paid", v["status"])
		require.Contains(t, v["flags"], "late_payment")
		after, _, _ := h.Wallet("u1")
		require.EqualValues(t, 60, after-before)
	})

	t.Run("failed while pending", func(t *testing.T) {
		id := order("fails")
		require.Equal(t, 200, h.Webhook(map[string]any{"event_id": "e-x", "type": "payment.failed", "order_id": id, "reason": "card declined"}).Status)
		require.Equal(t, "failed", adminView(id)["status"])
	})

	t.Run("other users see nothing", func(t *testing.T) {
		id := order("mine")
		other := h.Token("u2", auth.RoleUser)
		require.Equal(t, "not_found", h.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: other}).RequireStatus(t, 404).Code())
		h.Do("POST", "/v1/recharges/"+id+"/cancel", apptest.Req{Token: other}).RequireStatus(t, 404)
		require.Empty(t, h.Do("GET", "/v1/recharges", apptest.Req{Token: other}).RequireStatus(t, 200).JSON()["items"])
	})
	h.RequireClean()
}

func TestMonthlyPay(t *testing.T) {
	t.Parallel()
	h := apptest.New(t, func(c *config.Config) { c.RateLimitRechargePerMin = 0 })
	lead := h.Token("lead", auth.RoleSupportLead)
	user := h.Token("u1", auth.RoleUser)
	eligibility := func(tok string, amount int64) map[string]any {
		list := h.Do("GET", fmt.Sprintf("/v1/channels?amount_fen=%d", amount), apptest.Req{Token: tok}).RequireStatus(t, 200)
		var items []map[string]any
		list.Decode(t, &items)
		for _, it := range items {
			if it["channel"] == "monthly_pay" {
				return it
			}
		}
		t.Fatal("no monthly_pay")
		return nil
	}
	reason := func(tok string, amount int64) any { return eligibility(tok, amount)["reason_code"] }
	setLine := func(user string, limit int64, status string) *apptest.Response {
		return h.Do("PUT", "/v1/admin/users/"+user+"/credit-line", apptest.Req{Token: lead,
			Body: map[string]any{"limit_fen": limit, "status": status}})
	}

	require.Equal(t, "credit_not_opened", reason(user, 600))
	h.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: h.Token("agent", auth.RoleSupport),
		Body: map[string]any{"limit_fen": 100000, "status": "active"}}).RequireStatus(t, 403)
	line := setLine("u1", 100000, "active").RequireStatus(t, 200).JSON()
	require.EqualValues(t, 100000, line["available_fen"])
	require.Equal(t, true, eligibility(user, 600)["available"])
	require.Equal(t, "credit_insufficient", reason(user, 100010))
	require.Equal(t, "amount_above_max", reason(user, 200010))
	setLine("u1", 100000, "frozen").RequireStatus(t, 200)
	require.Equal(t, "credit_frozen", reason(user, 600))
	r := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "frozen", Body: map[string]any{"channel": "monthly_pay", "package_id": "p60"}}).RequireStatus(t, 422)
	require.Equal(t, "channel_unavailable", r.Code())
	require.Equal(t, "credit_frozen", r.JSON()["reason_code"])
	setLine("u1", 100000, "overdue").RequireStatus(t, 200)
	require.Equal(t, "credit_overdue", reason(user, 600))
	setLine("u1", 100000, "active").RequireStatus(t, 200)

	minor := h.Token("kid", auth.RoleUser, h.Clock.Now().AddDate(-12, 0, 0).Format(time.DateOnly))
	setLine("kid", 100000, "active").RequireStatus(t, 200)
	require.Equal(t, "minor_not_allowed", reason(minor, 600))

	// paid at once
	o := h.Recharge(user, map[string]any{"channel": "monthly_pay", "package_id": "p60"}, "m1")
	require.Equal(t, "paid", o["status"])
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail)

	// concurrent orders cannot overdraw the line: 99 400 fen left, 20 × 9 800
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: fmt.Sprintf("c%d", i),
				Body: map[string]any{"channel": "monthly_pay", "package_id": "p980"}}).Status
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		require.Contains(t, []int{201, 422}, s)
		if s == 201 {
			ok++
		}
	}
	require.Equal(t, 10, ok)
	line = setLine("u1", 100000, "active").RequireStatus(t, 200).JSON()
	require.EqualValues(t, 98600, line["used_fen"])
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60+10*980, avail)

	// used up, or a limit lowered below what is used: nothing left, for
	// any amount and when no amount is given
	noAmount := func() map[string]any {
		for _, it := range h.Do("GET", "/v1/channels", apptest.Req{Token: user}).RequireStatus(t, 200).JSON2() {
			if it["channel"] == "monthly_pay" {
				return it
			}
		}
		t.Fatal("no monthly_pay")
		return nil
	}
	for _, limit := range []int64{98600, 98000} {
		setLine("u1", limit, "active").RequireStatus(t, 200)
		it := noAmount()
		require.Equal(t, "credit_insufficient", it["reason_code"], "limit %d", limit)
		require.Equal(t, "Your monthly credit line has ¥0.00 left.", it["reason"])
		require.Equal(t, "Your monthly credit line has ¥0.00 left.", eligibility(user, 100)["reason"])
	}

	// maintenance switches it off for everyone
	h2 := apptest.New(t, func(c *config.Config) { c.ChannelsMaintenance = []string{"monthly_pay"} })
	require.Equal(t, "channel_disabled", h2.Do("GET", "/v1/channels?amount_fen=600", apptest.Req{Token: h2.Token("u1", auth.RoleUser)}).
		RequireStatus(t, 200).JSON2()[1]["reason_code"])
	audit := h.Do("GET", "/v1/admin/audit", apptest.Req{Token: lead}).RequireStatus(t, 200).JSON()
	require.Equal(t, "credit_line.set", audit["items"].([]any)[0].(map[string]any)["action"])
	h.RequireClean()
}

// queryable is the sandbox with a channel-side view of payments, as a real
// channel's query API would give.
type queryable struct {
	*sandbox.Channel
	mu     sync.Mutex
	paid   map[string]channel.PaymentStatus
	closed []string
}

func (q *queryable) QueryPayment(_ context.Context, id string) (channel.PaymentStatus, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if st, ok := q.paid[id]; ok {
		return st, nil
	}
	return channel.PaymentStatus{State: channel.PaymentPending}, nil
}

// pay makes the channel report the order paid by trade.
func (q *queryable) pay(id, trade string, fen int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.paid[id] = channel.PaymentStatus{State: channel.PaymentPaid, TradeNo: trade, AmountFen: fen}
}

func (q *queryable) ClosePayment(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.paid[id]; ok {
		return channel.ErrAlreadyPaid
	}
	q.closed = append(q.closed, id)
	return nil
}

// withQueryable runs the service with a sandbox channel that answers
// queries and closes as the test tells it.
func withQueryable(t *testing.T) (*apptest.Harness, *queryable) {
	t.Helper()
	sb, err := sandbox.New(apptest.SandboxSecret, false, time.Now)
	require.NoError(t, err)
	fake := &queryable{Channel: sb, paid: map[string]channel.PaymentStatus{}}
	return apptest.NewWith(t, map[string]channel.Channel{"sandbox": fake}), fake
}

func TestPendingWorker(t *testing.T) {
	t.Parallel()
	h, fake := withQueryable(t)
	user := h.Token("u1", auth.RoleUser)
	lost := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "lost")["id"].(string)
	expiring := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p300"}, "exp")["id"].(string)
	paidLate := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p980"}, "pl")["id"].(string)

	// the channel took the money but its webhook never came
	fake.pay(lost, "T-lost", 600)
	h.RunWorkers()
	avail, _, _ := h.Wallet("u1")
	require.Zero(t, avail, "not queried before PENDING_QUERY_AFTER")

	h.Clock.Advance(3 * time.Minute)
	h.RunWorkers()
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60, avail, "the query recovered the lost webhook")

	// a late webhook for the same trade changes nothing
	h.Pay(lost, 600, "T-lost", "e-late")
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60, avail)

	// expiry: closed at the channel and here, not credited; an order the
	// channel reports paid at expiry is credited instead
	fake.pay(paidLate, "T-pl", 9800)
	h.Clock.Advance(13 * time.Minute)
	h.RunWorkers()
	support := h.Token("agent", auth.RoleSupport)
	e := h.Do("GET", "/v1/admin/recharges/"+expiring, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
	require.Equal(t, "closed", e["status"])
	require.Contains(t, fake.closed, expiring)
	p := h.Do("GET", "/v1/admin/recharges/"+paidLate, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
	require.Equal(t, "paid", p["status"])
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 60+980, avail)
	require.Equal(t, http.StatusOK, h.Do("GET", "/v1/recharges/"+expiring, apptest.Req{Token: user}).Status)
	h.RequireClean()
}

// A failed payment attempt leaves the order open at its channel, where the
// payer may still pay it: the worker goes on querying a failed order and
// closes it at the channel at its expiry, so a payment whose notification
// is lost is still credited, whether the query or the close finds it.
func TestFailedOrderWatchedUntilClosed(t *testing.T) {
	t.Parallel()
	h, fake := withQueryable(t)
	user := h.Token("u1", auth.RoleUser)
	support := h.Token("agent", auth.RoleSupport)
	fail := func(key string) string {
		id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, key)["id"].(string)
		require.Equal(t, 200, h.Webhook(map[string]any{"event_id": "f-" + key, "type": "payment.failed", "order_id": id, "reason": "bank declined"}).Status)
		return id
	}
	paidByQuery, paidAtExpiry, neverPaid := fail("q"), fail("x"), fail("n")
	admin := func(id string) map[string]any {
		return h.Do("GET", "/v1/admin/recharges/"+id, apptest.Req{Token: support}).RequireStatus(t, 200).JSON()
	}
	require.Equal(t, "failed", admin(neverPaid)["status"])
	// a channel that closes the order itself ends the watch
	closedThere := fail("c")
	for _, ev := range []string{"c-1", "c-2"} { // notified twice: noted once
		require.Equal(t, 200, h.Webhook(map[string]any{"event_id": ev, "type": "payment.closed", "order_id": closedThere}).Status)
	}
	c := admin(closedThere)
	require.Equal(t, "failed", c["status"])
	notes := 0
	for _, e := range c["timeline"].([]any) {
		if strings.Contains(e.(map[string]any)["note"].(string), "closed at the channel") {
			notes++
		}
	}
	require.Equal(t, 1, notes)

	// paid with another card; its notification is lost
	fake.pay(paidByQuery, "T-q2", 600)
	h.Clock.Advance(3 * time.Minute)
	h.RunWorkers()
	o := admin(paidByQuery)
	require.Equal(t, "paid", o["status"], "found by the query")
	require.Contains(t, o["flags"], "late_payment")
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail)
	require.Equal(t, "failed", admin(paidAtExpiry)["status"])

	// at expiry each is closed at the channel; one turns out paid
	fake.pay(paidAtExpiry, "T-x2", 600)
	h.Clock.Advance(13 * time.Minute)
	h.RunWorkers()
	require.Equal(t, "paid", admin(paidAtExpiry)["status"])
	avail, _, _ = h.Wallet("u1")
	require.EqualValues(t, 120, avail)
	n := admin(neverPaid)
	require.Equal(t, "failed", n["status"], "a failed order stays failed")
	require.Contains(t, fake.closed, neverPaid)
	require.NotContains(t, fake.closed, closedThere, "no longer watched")
	timeline := n["timeline"].([]any)
	require.Contains(t, timeline[len(timeline)-1].(map[string]any)["note"], "closed at the channel")

	// and is not looked at again
	closes := len(fake.closed)
	h.Clock.Advance(time.Hour)
	h.RunWorkers()
	require.Len(t, fake.closed, closes)
	require.Equal(t, 0, count(t, h, `SELECT count(*) FROM orders WHERE check_after IS NOT NULL`))
	h.RequireClean()
}

// A channel taken out of CHANNELS while it still has open orders: cancelling
// one is a 503 to try again later, not a 500, and the worker leaves them
// pending (only the channel can say whether they were paid) until the
// channel is back.
func TestOrderOfARemovedChannel(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	id := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "k")["id"].(string)
	without := h.ReplicaWith(func(c *config.Config) { c.Channels = []string{"monthly_pay"} })
	r := without.Do("POST", "/v1/recharges/"+id+"/cancel", apptest.Req{Token: user})
	require.Equal(t, "channel_error", r.RequireStatus(t, 503).Code())
	h.Clock.Advance(20 * time.Minute)
	without.RunWorkers()
	require.Equal(t, "pending", without.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"])

	h.Clock.Advance(2 * time.Minute) // past the lease
	h.RunWorkers()
	require.Equal(t, "closed", h.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"])
}

// Order creation takes one round trip when the key is fresh
// (idempotency.Once); everything else falls back to the general path. Over
// HTTP: 20 requests with one key at once create one order, and each is
// answered with it or told the key is in progress; the key with another
// body is refused; a later retry is replayed.
func TestCreateSameKeyAtOnce(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	body := map[string]any{"channel": "sandbox", "package_id": "p60"}
	var mu sync.Mutex
	ids, busy := map[string]int{}, 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "same", Body: body})
			mu.Lock()
			defer mu.Unlock()
			switch r.Status {
			case 201:
				ids[r.JSON()["id"].(string)]++
			case 409:
				require.Equal(t, "idempotency_key_in_progress", r.Code())
				busy++
			default:
				t.Errorf("status %d: %s", r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	require.Len(t, ids, 1, "one order, whoever answered: %v (409: %d)", ids, busy)
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders`))

	r := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "same", Body: map[string]any{"channel": "sandbox", "package_id": "p300"}})
	require.Equal(t, "idempotency_key_reused", r.RequireStatus(t, 422).Code())
	again := h.Do("POST", "/v1/recharges", apptest.Req{Token: user, Key: "same", Body: body}).RequireStatus(t, 201)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	for id := range ids {
		require.Equal(t, id, again.JSON()["id"])
	}
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders`))
}

// Concurrent credits of one user are judged one after the other: the risk
// rules read the user's paid recharges under the wallet's lock, so each of
// ten payments at once sees every one credited before it, whether or not the
// user had a wallet.
func TestConcurrentCreditsJudgedInTurn(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	for _, tc := range []struct {
		user   string
		wallet bool
		bursts []int // the k-th credit counts k in its burst, with the earlier payment
	}{
		{"u1", true, []int{3, 4, 5, 6, 7, 8, 9, 10, 11}},
		{"u2", false, []int{3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		user := h.Token(tc.user, auth.RoleUser)
		var before int64
		if tc.wallet {
			first := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p300"}, "r0")["id"].(string)
			h.Pay(first, 3000, tc.user+"-T-0", tc.user+"-e-0")
			before = 300
		}
		ids := make([]string, 10)
		for i := range ids {
			ids[i] = h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, fmt.Sprintf("r%d", i+1))["id"].(string)
		}
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.Pay(id, 600, fmt.Sprintf("%s-T-%d", tc.user, i+1), fmt.Sprintf("%s-e-%d", tc.user, i+1))
			}()
		}
		wg.Wait()
		avail, _, _ := h.Wallet(tc.user)
		require.EqualValues(t, before+10*60, avail)
		require.Equal(t, 9, count(t, h, `SELECT count(*) FROM orders
			WHERE user_id = $1 AND amount_fen = 600 AND risk->'flags' @> '[{"code": "duplicate_recharge"}]'`, tc.user))
		var bursts []int
		require.NoError(t, h.Pool.QueryRow(context.Background(), `
			SELECT array_agg((f->'evidence'->>'count')::int ORDER BY (f->'evidence'->>'count')::int)
			  FROM orders, jsonb_array_elements(risk->'flags') f WHERE user_id = $1 AND f->>'code' = 'burst'`, tc.user).Scan(&bursts))
		require.Equal(t, tc.bursts, bursts, tc.user)
	}
	h.RequireClean()
}

// Two payments of one amount on one channel a minute apart are a duplicate
// whatever order their transactions reach the user's lock in: here b reads
// its clock, then waits (on a trade row held by another transaction) while a
// is paid a minute later and commits; b, credited last but stamped first,
// still sees a.
func TestDuplicateSeenWhateverTheCommitOrder(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	ctx := context.Background()
	user := h.Token("u1", auth.RoleUser)
	a := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "a")["id"].(string)
	b := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "b")["id"].(string)

	other, done := webhookBehindTrade(t, h, b, "credited",
		map[string]any{"event_id": "e-b", "type": "payment.succeeded", "order_id": b, "trade_no": "T-B", "amount_fen": 600})

	h.Clock.Advance(time.Minute)
	h.Pay(a, 600, "T-A", "e-a")
	require.NoError(t, other.Rollback(ctx))
	r := <-done
	require.Equal(t, 200, r.Status, "body: %s", r.Body)

	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 120, avail)
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders
		WHERE id = $1 AND paid_at < (SELECT paid_at FROM orders WHERE id = $2)`, b, a), "b is stamped before a")
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders
		WHERE id = $1 AND risk->'flags' @> jsonb_build_array(jsonb_build_object('code', 'duplicate_recharge',
		      'evidence', jsonb_build_object('order_id', $2::text, 'seconds_apart', 0)))`, b, a),
		"b, credited last, is the duplicate of a")
	h.RequireClean()
}

// The same with no race: a is paid through a replica whose clock runs 2 s
// ahead, b a second later (1 s before a by the stamps) through another.
// Three such payments are a burst too.
func TestDuplicateSeenAcrossSkewedReplicas(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	ahead := h.SkewedReplica(2 * time.Second)
	user := h.Token("u1", auth.RoleUser)
	var ids []string
	for i := range 3 {
		ids = append(ids, h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, fmt.Sprint(i))["id"].(string))
	}
	ahead.Pay(ids[0], 600, "T-0", "e-0")
	h.Clock.Advance(time.Second)
	h.Pay(ids[1], 600, "T-1", "e-1")
	ahead.Pay(ids[2], 600, "T-2", "e-2")

	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 180, avail)
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders
		WHERE id = $1 AND risk->'flags' @> '[{"code": "duplicate_recharge"}]'`, ids[1]))
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders
		WHERE id = $1 AND risk->'flags' @> '[{"code": "burst", "evidence": {"count": 3}}]'`, ids[2]))
	h.RequireClean()
}

// A trade being recorded for another order of the user (a channel reporting
// one trade for two orders) while the webhook records it: the webhook waits
// for the other transaction, finds the trade recorded and credits nothing.
func TestTradeRecordedMeanwhile(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	ctx := context.Background()
	user := h.Token("u1", auth.RoleUser)
	first := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "r0")["id"].(string)
	h.Pay(first, 600, "T-0", "e-0")
	a := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "a")["id"].(string)
	b := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "b")["id"].(string)

	// Another transaction records trade T-X for order b and holds it open.
	other, done := webhookBehindTrade(t, h, b, "amount_mismatch",
		map[string]any{"event_id": "e-x", "type": "payment.succeeded", "order_id": a, "trade_no": "T-X", "amount_fen": 600})
	require.NoError(t, other.Commit(ctx))

	r := <-done
	require.Equal(t, 200, r.Status, "body: %s", r.Body)
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail, "only the first order is credited")
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM orders WHERE id = $1 AND status = 'pending'`, a))
	require.Equal(t, 1, count(t, h, `SELECT count(*) FROM webhook_events WHERE event_key = 'e-x' AND outcome = 'duplicate_trade'`))
	require.Zero(t, count(t, h, `SELECT count(*) FROM journals WHERE reference = $1`, "recharge:"+a))
	h.RequireClean()
}

// webhookBehindTrade has another transaction record the event's trade for
// order (of user u1, sandbox, 600 fen) as outcome and hold it open, sends
// the event, and returns once the webhook waits on that row. The caller ends
// other and reads the webhook's answer from done.
func webhookBehindTrade(t *testing.T, h *apptest.Harness, order, outcome string, event map[string]any) (pgx.Tx, <-chan *apptest.Response) {
	t.Helper()
	ctx := context.Background()
	other, err := h.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Rollback(ctx) })
	_, err = other.Exec(ctx, `INSERT INTO payments (user_id, channel, trade_no, order_id, amount_fen, outcome, created_at)
		VALUES ('u1', 'sandbox', $1, $2, 600, $3, now())`, event["trade_no"], order, outcome)
	require.NoError(t, err)
	done := make(chan *apptest.Response, 1)
	go func() { done <- h.Webhook(event) }()
	require.Eventually(t, func() bool {
		return count(t, h, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO payments%'`) == 1
	}, 10*time.Second, 10*time.Millisecond)
	return other, done
}

// An order is closed when it expires, not a lease later: a query shortly
// before the expiry leaves the next look at the expiry itself.
func TestExpiryOnTime(t *testing.T) {
	t.Parallel()
	h, fake := withQueryable(t)
	user := h.Token("u1", auth.RoleUser)
	o := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "k")
	expires, err := time.Parse(time.RFC3339, o["expires_at"].(string))
	require.NoError(t, err)
	status := func() string {
		return h.Do("GET", "/v1/recharges/"+o["id"].(string), apptest.Req{Token: user}).RequireStatus(t, 200).JSON()["status"].(string)
	}

	h.Clock.Advance(expires.Add(-10 * time.Second).Sub(h.Clock.Now()))
	h.RunWorkers() // queried: still pending at the channel
	require.Equal(t, "pending", status())
	h.Clock.Advance(10 * time.Second)
	h.RunWorkers()
	require.Equal(t, "closed", status())
	require.Contains(t, fake.closed, o["id"].(string))
}
