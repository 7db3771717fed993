package alipay_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
)

func order(id string, fen int64) channel.Order {
	return channel.Order{ID: id, UserID: "u1", AmountFen: fen, Diamonds: fen / 10, Subject: "60 diamonds",
		ExpiresAt: time.Date(2026, 3, 1, 4, 15, 0, 0, time.UTC)}
}

// createPaid runs create → the app pays → notifications acknowledged.
func (e *env) createPaid(t *testing.T, id string, fen int64) alipaytest.Trade {
	t.Helper()
	ctx := ctxT(t)
	p, err := e.ch.CreatePayment(ctx, order(id, fen))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.fake.PayOrderString(p.Pay["order_string"].(string)); err != nil {
		t.Fatal(err)
	}
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	tr, _ := e.fake.Trade(id)
	return tr
}

func TestCreatePaymentOrderString(t *testing.T) {
	e := setup(t, alipaytest.Options{}, func(c *alipay.Config) {
		c.Now = func() time.Time { return time.Date(2026, 3, 1, 4, 0, 0, 0, time.UTC) }
	})
	p, err := e.ch.CreatePayment(context.Background(), order("o-create", 600))
	if err != nil {
		t.Fatal(err)
	}
	if p.Paid || p.Pay["type"] != "alipay_app" {
		t.Fatalf("payment = %+v", p)
	}
	os := p.Pay["order_string"].(string)
	q, err := url.ParseQuery(os)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"app_id": e.fake.AppID(), "method": "alipay.trade.app.pay", "format": "JSON", "charset": "utf-8",
		"sign_type": "RSA2", "version": "1.0", "timestamp": "2026-03-01 12:00:00", "notify_url": e.rc.srv.URL + "/v1/webhooks/alipay",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	var biz map[string]string
	if err := json.Unmarshal([]byte(q.Get("biz_content")), &biz); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"out_trade_no": "o-create", "total_amount": "6.00", "subject": "60 diamonds",
		"product_code": "QUICK_MSECURITY_PAY", "time_expire": "2026-03-01 12:15:00"} {
		if biz[k] != want {
			t.Errorf("biz_content %s = %q, want %q", k, biz[k], want)
		}
	}
	// The fake checks the app signature independently.
	tr, err := e.fake.Submit(os)
	if err != nil {
		t.Fatalf("fake refused the order string: %v", err)
	}
	if tr.TotalFen != 600 || tr.Status != alipaytest.StatusWaitBuyerPay {
		t.Errorf("trade = %+v", tr)
	}
	// A tampered order string is refused by the fake.
	if _, err := e.fake.Submit(strings.Replace(os, "6.00", "0.01", 1)); err == nil {
		t.Error("fake accepted a tampered order string")
	}
	if _, err := e.ch.CreatePayment(context.Background(), order("o-zero", 0)); err == nil {
		t.Error("zero amount accepted")
	}
}

func TestPayNotifyQuery(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	tr := e.createPaid(t, "o-pay", 600)

	evs := e.rc.Events()
	if len(evs) != 1 {
		t.Fatalf("events = %+v (errors %v)", evs, e.rc.Errors())
	}
	if ev := evs[0]; ev.Type != channel.EventPaymentSucceeded || ev.OrderID != "o-pay" || ev.TradeNo != tr.TradeNo || ev.AmountFen != 600 || ev.Key == "" {
		t.Errorf("event = %+v", ev)
	}
	ds := e.fake.Deliveries()
	if len(ds) != 1 || !ds[0].Acked {
		t.Errorf("deliveries = %+v", ds)
	}

	st, err := e.ch.QueryPayment(ctx, "o-pay")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != channel.PaymentPaid || st.TradeNo != tr.TradeNo || st.AmountFen != 600 || !st.PaidAt.Equal(tr.PaidAt.Truncate(time.Second)) {
		t.Errorf("status = %+v, trade %+v", st, tr)
	}
	st, err = e.ch.QueryPayment(ctx, "o-never")
	if err != nil || st.State != channel.PaymentNotFound {
		t.Errorf("unknown order: %+v, %v", st, err)
	}
}

func TestQueryPendingAndClose(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	p, err := e.ch.CreatePayment(ctx, order("o-close", 600))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.fake.Submit(p.Pay["order_string"].(string)); err != nil {
		t.Fatal(err)
	}
	if st, err := e.ch.QueryPayment(ctx, "o-close"); err != nil || st.State != channel.PaymentPending {
		t.Fatalf("pending: %+v, %v", st, err)
	}
	if err := e.ch.ClosePayment(ctx, "o-close"); err != nil {
		t.Fatal(err)
	}
	if st, err := e.ch.QueryPayment(ctx, "o-close"); err != nil || st.State != channel.PaymentClosed {
		t.Fatalf("closed: %+v, %v", st, err)
	}
	// Closing again is fine.
	if err := e.ch.ClosePayment(ctx, "o-close"); err != nil {
		t.Fatalf("second close: %v", err)
	}
	// A trade Alipay never saw counts as closed.
	if err := e.ch.ClosePayment(ctx, "o-unknown"); err != nil {
		t.Fatalf("close unknown: %v", err)
	}
	// Close sends TRADE_CLOSED, which is payment.closed.
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	evs := e.rc.Events()
	if len(evs) != 1 || evs[0].Type != channel.EventPaymentClosed || evs[0].OrderID != "o-close" {
		t.Errorf("events = %+v", evs)
	}

	e.createPaid(t, "o-paid", 600)
	if err := e.ch.ClosePayment(ctx, "o-paid"); !errors.Is(err, channel.ErrAlreadyPaid) {
		t.Fatalf("close paid: %v, want ErrAlreadyPaid", err)
	}
}

func TestRefunds(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	tr := e.createPaid(t, "o-ref", 1000)

	rr := channel.RefundRequest{OrderID: "o-ref", TradeNo: tr.TradeNo, RefundID: "r-1", AmountFen: 300, TotalFen: 1000, Reason: "accidental"}
	st, err := e.ch.Refund(ctx, rr)
	if err != nil || st.State != channel.RefundSucceeded || st.AmountFen != 300 {
		t.Fatalf("partial refund: %+v, %v", st, err)
	}
	// The same refund number again: no second refund.
	st, err = e.ch.Refund(ctx, rr)
	if err != nil || st.State == channel.RefundFailed {
		t.Fatalf("repeat: %+v, %v", st, err)
	}
	tr, _ = e.fake.Trade("o-ref")
	if tr.RefundedFen != 300 || len(tr.Refunds) != 1 || tr.Status != alipaytest.StatusTradeSuccess {
		t.Fatalf("after repeat: %+v", tr)
	}
	// More than what is left is a definite refusal.
	st, err = e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-ref", RefundID: "r-2", AmountFen: 800, TotalFen: 1000})
	if err != nil || st.State != channel.RefundFailed || !strings.Contains(st.Reason, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL") {
		t.Fatalf("excess: %+v, %v", st, err)
	}
	// The rest: the trade closes; QueryPayment says it was paid and refunded
	// in full, and it cannot be closed as unpaid.
	st, err = e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-ref", RefundID: "r-3", AmountFen: 700, TotalFen: 1000})
	if err != nil || st.State != channel.RefundSucceeded {
		t.Fatalf("rest: %+v, %v", st, err)
	}
	if tr, _ = e.fake.Trade("o-ref"); tr.RefundedFen != 1000 || tr.Status != alipaytest.StatusTradeClosed {
		t.Fatalf("after full refund: %+v", tr)
	}
	if ps, err := e.ch.QueryPayment(ctx, "o-ref"); err != nil || ps.State != channel.PaymentRefunded || ps.TradeNo != tr.TradeNo ||
		ps.AmountFen != 1000 || ps.RefundedFen != 1000 || ps.PaidAt.IsZero() {
		t.Fatalf("refunded trade: %+v, %v", ps, err)
	}
	if err := e.ch.ClosePayment(ctx, "o-ref"); !errors.Is(err, channel.ErrAlreadyPaid) {
		t.Fatalf("close refunded trade: %v, want ErrAlreadyPaid", err)
	}

	for id, want := range map[string]channel.RefundStatus{
		"r-1": {State: channel.RefundSucceeded, AmountFen: 300},
		"r-3": {State: channel.RefundSucceeded, AmountFen: 700},
		"r-2": {State: channel.RefundNotFound},
	} {
		got, err := e.ch.QueryRefund(ctx, "o-ref", id)
		if err != nil || got != want {
			t.Errorf("QueryRefund %s = %+v, %v; want %+v", id, got, err, want)
		}
	}
	if got, err := e.ch.QueryRefund(ctx, "o-none", "r-9"); err != nil || got.State != channel.RefundNotFound {
		t.Errorf("QueryRefund unknown order = %+v, %v", got, err)
	}
	// Refund of an unpaid trade is refused.
	if st, err := e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-none", RefundID: "r-x", AmountFen: 1, TotalFen: 1}); err != nil || st.State != channel.RefundFailed {
		t.Errorf("refund unknown trade = %+v, %v", st, err)
	}

	// Every refund was notified, with out_biz_no naming it.
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	var refunds []string
	for _, ev := range e.rc.Events() {
		if ev.Type == channel.EventRefundSucceeded {
			refunds = append(refunds, ev.RefundID)
			if ev.OrderID != "o-ref" || ev.TradeNo != tr.TradeNo {
				t.Errorf("refund event = %+v", ev)
			}
		}
	}
	if strings.Join(refunds, ",") != "r-1,r-3" {
		t.Errorf("refund events = %v", refunds)
	}
}

// A refund query answer without refund_status is a success only with the
// time the money was paid back (gmt_refund_pay): under Alipay's newer
// contract an echoed refund_amount alone means the refund was not made (§1.4).
func TestRefundQueryWithoutStatus(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	e.createPaid(t, "o-rq", 600)
	if st, err := e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-rq", RefundID: "r-1", AmountFen: 200, TotalFen: 600}); err != nil || st.State != channel.RefundSucceeded {
		t.Fatalf("refund: %+v, %v", st, err)
	}
	for _, tc := range []struct {
		omit []string
		want channel.RefundState
	}{
		{nil, channel.RefundSucceeded},
		{[]string{"refund_status"}, channel.RefundSucceeded},
		{[]string{"refund_status", "gmt_refund_pay"}, channel.RefundNotFound},
	} {
		e.fake.InjectFault(alipaytest.Fault{Method: alipaytest.MethodRefundQuery, Omit: tc.omit})
		got, err := e.ch.QueryRefund(ctx, "o-rq", "r-1")
		if err != nil || got.State != tc.want || got.AmountFen != 200 {
			t.Errorf("without %v: %+v, %v; want %s of 200 fen", tc.omit, got, err, tc.want)
		}
	}
}

func TestRefundTimeoutThenRetry(t *testing.T) {
	e := setup(t, alipaytest.Options{}, func(c *alipay.Config) {
		c.HTTPClient = &http.Client{Timeout: 5 * time.Second}
		c.Timeout = 200 * time.Millisecond
	})
	ctx := ctxT(t)
	e.createPaid(t, "o-to", 600)

	// The refund happens at the fake, but the answer comes too late.
	e.fake.InjectFault(alipaytest.Fault{Method: alipaytest.MethodRefund, Delay: 2 * time.Second})
	rr := channel.RefundRequest{OrderID: "o-to", RefundID: "r-to", AmountFen: 600, TotalFen: 600}
	start := time.Now()
	st, err := e.ch.Refund(ctx, rr)
	if err == nil {
		t.Fatalf("timed-out refund returned %+v, want an error (outcome unknown)", st)
	}
	if time.Since(start) > 1500*time.Millisecond {
		t.Errorf("timeout not applied: took %v", time.Since(start))
	}
	if tr, _ := e.fake.Trade("o-to"); tr.RefundedFen != 600 {
		t.Fatalf("the fake should have applied the refund: %+v", tr)
	}
	// Retrying with the same number is safe: still one refund.
	st, err = e.ch.Refund(ctx, rr)
	if err != nil || st.State == channel.RefundFailed {
		t.Fatalf("retry: %+v, %v", st, err)
	}
	if got, err := e.ch.QueryRefund(ctx, "o-to", "r-to"); err != nil || got.State != channel.RefundSucceeded {
		t.Fatalf("query: %+v, %v", got, err)
	}
	if tr, _ := e.fake.Trade("o-to"); tr.RefundedFen != 600 || len(tr.Refunds) != 1 {
		t.Fatalf("refunded twice: %+v", tr)
	}
}

func TestGatewayFaultsAreUnknownOutcomes(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	e.createPaid(t, "o-f", 600)
	faults := map[string]alipaytest.Fault{
		"500 after apply":     {Method: alipaytest.MethodRefund, Status: 500},
		"bad signature":       {Method: alipaytest.MethodRefund, BadSignature: true},
		"503 before apply":    {Method: alipaytest.MethodRefund, BeforeApply: true},
		"200 html":            {Method: alipaytest.MethodRefund, Status: 200},
		"query bad signature": {Method: alipaytest.MethodQuery, BadSignature: true},
		"refund query 502":    {Method: alipaytest.MethodRefundQuery, Status: 502},
		"close bad signature": {Method: alipaytest.MethodClose, BadSignature: true},
	}
	for name, f := range faults {
		t.Run(name, func(t *testing.T) {
			e.fake.InjectFault(f)
			var err error
			var st any
			switch f.Method {
			case alipaytest.MethodRefund:
				st, err = e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-f", RefundID: "r-" + name, AmountFen: 1, TotalFen: 600})
			case alipaytest.MethodQuery:
				st, err = e.ch.QueryPayment(ctx, "o-f")
			case alipaytest.MethodRefundQuery:
				st, err = e.ch.QueryRefund(ctx, "o-f", "r-x")
			case alipaytest.MethodClose:
				err = e.ch.ClosePayment(ctx, "o-f")
				if errors.Is(err, channel.ErrAlreadyPaid) {
					t.Fatal("an unverified answer was believed")
				}
			}
			if err == nil {
				t.Fatalf("got %+v, want an error", st)
			}
		})
	}
	// Each refund call above used a fresh number; only those that applied
	// before failing (500, bad signature, 200 html) moved money.
	if tr, _ := e.fake.Trade("o-f"); tr.RefundedFen != 3 {
		t.Errorf("refunded %d fen, want 3", tr.RefundedFen)
	}
}

func TestNotifierRetriesUntilSuccess(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	e.rc.answer = func(n int) (int, string) {
		switch n {
		case 1:
			return 500, "fail"
		case 2:
			return 200, "SUCCESS" // not the exact seven characters
		case 3:
			return 200, "success\n"
		}
		return 200, "success"
	}
	e.createPaid(t, "o-retry", 600)
	ds := e.fake.Deliveries()
	if len(ds) != 4 || !ds[3].Acked || ds[0].Acked || ds[1].Acked || ds[2].Acked {
		t.Fatalf("deliveries = %+v", ds)
	}
	for i, d := range ds {
		if d.Attempt != i+1 || d.NotificationID != ds[0].NotificationID {
			t.Errorf("delivery %d = %+v", i, d)
		}
	}
	// Every redelivery carries the same notify_id: one key for the receiver.
	evs := e.rc.Events()
	for _, ev := range evs {
		if ev.Key != evs[0].Key {
			t.Errorf("keys differ: %+v", evs)
		}
	}
	_ = ctx
}

func TestNotifierGivesUp(t *testing.T) {
	e := setup(t, alipaytest.Options{RetrySchedule: []time.Duration{time.Millisecond, time.Millisecond}}, nil)
	e.rc.answer = func(int) (int, string) { return 500, "fail" }
	e.createPaid(t, "o-gone", 600)
	if ds := e.fake.Deliveries(); len(ds) != 3 {
		t.Fatalf("deliveries = %d, want 3", len(ds))
	}
}

func TestLostNotificationDeliveredByHand(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ctx := ctxT(t)
	p, err := e.ch.CreatePayment(ctx, order("o-lost", 600))
	if err != nil {
		t.Fatal(err)
	}
	e.fake.LoseNextNotifications(1)
	n, err := e.fake.PayOrderString(p.Pay["order_string"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if len(e.fake.Deliveries()) != 0 || len(e.rc.Events()) != 0 {
		t.Fatal("a lost notification was delivered")
	}
	// The order can still be settled by querying.
	if st, err := e.ch.QueryPayment(ctx, "o-lost"); err != nil || st.State != channel.PaymentPaid {
		t.Fatalf("query: %+v, %v", st, err)
	}
	d, err := e.fake.Deliver(ctx, n)
	if err != nil || d.Status != 200 || d.Body != "success" || !d.Acked {
		t.Fatalf("deliver: %+v, %v", d, err)
	}
	// A duplicate is the same event key.
	e.fake.Redeliver(n)
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	evs := e.rc.Events()
	if len(evs) != 2 || evs[0].Key != evs[1].Key || evs[0].Key != n.ID {
		t.Fatalf("events = %+v", evs)
	}
	// A forged notification delivered by hand gets 401.
	forged := []byte(strings.Replace(string(n.Body), "total_amount=6.00", "total_amount=0.01", 1))
	d, err = e.fake.DeliverBody(ctx, n.URL, forged)
	if err != nil || d.Status != http.StatusUnauthorized || d.Acked {
		t.Fatalf("forged: %+v, %v", d, err)
	}
}
