package wechatpay_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/wechatpay"
	"github.com/diamondd/diamondd/internal/channel/wechatpay/wechatpaytest"
)

func order(id string, fen int64) channel.Order {
	return channel.Order{ID: id, UserID: "u1", AmountFen: fen, Diamonds: fen / 10, Subject: "60 diamonds",
		ExpiresAt: time.Now().Add(15 * time.Minute)}
}

// createPaid runs create → the payer pays → notifications acknowledged.
func (e *env) createPaid(t *testing.T, id string, fen int64) wechatpaytest.Order {
	t.Helper()
	ctx := ctxT(t)
	if _, err := e.ch.CreatePayment(ctx, order(id, fen)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fake.Pay(id); err != nil {
		t.Fatal(err)
	}
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	o, _ := e.fake.Order(id)
	return o
}

func TestCreatePayment(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	ctx := ctxT(t)
	o := order("o-create", 600)
	p, err := e.ch.CreatePayment(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	fo, ok := e.fake.Order("o-create")
	if !ok || fo.TradeState != wechatpaytest.StateNotPay || fo.TotalFen != 600 || fo.Description != "60 diamonds" ||
		fo.NotifyURL != e.rc.srv.URL+"/v1/webhooks/wechatpay" {
		t.Fatalf("fake order = %+v", fo)
	}
	if exp, err := time.Parse(time.RFC3339, fo.TimeExpire); err != nil || !exp.Equal(o.ExpiresAt.Truncate(time.Second)) || !strings.HasSuffix(fo.TimeExpire, "+08:00") {
		t.Errorf("time_expire = %q (%v)", fo.TimeExpire, err)
	}
	pay := p.Pay
	for k, want := range map[string]string{"type": "wechatpay_app", "appid": e.fake.AppID(), "partnerid": e.fake.MchID(),
		"prepayid": fo.PrepayID, "package": "Sign=WXPay"} {
		if pay[k] != want {
			t.Errorf("pay[%s] = %v, want %q", k, pay[k], want)
		}
	}
	ts, _ := pay["timestamp"].(string)
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Errorf("timestamp = %q", ts)
	}
	nonce, _ := pay["noncestr"].(string)
	if len(nonce) < 16 || len(nonce) > 32 {
		t.Errorf("noncestr = %q", nonce)
	}
	// The APP invoke signature: appid\ntimestamp\nnoncestr\nprepayid\n with our key.
	sig, err := base64.StdEncoding.DecodeString(pay["sign"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(e.fake.AppID() + "\n" + ts + "\n" + nonce + "\n" + fo.PrepayID + "\n"))
	cfg := e.fake.Config()
	if err := rsa.VerifyPKCS1v15(&cfg.PrivateKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("app sign does not verify: %v", err)
	}
	// Placing the same order again gives the same prepay id.
	p2, err := e.ch.CreatePayment(ctx, o)
	if err != nil || p2.Pay["prepayid"] != fo.PrepayID {
		t.Errorf("second create: %v, %v", p2.Pay["prepayid"], err)
	}
	if e.fake.Calls(wechatpaytest.OpPrepay) != 2 {
		t.Errorf("prepay calls = %d", e.fake.Calls(wechatpaytest.OpPrepay))
	}
	if _, err := e.ch.CreatePayment(ctx, order("o-zero", 0)); err == nil {
		t.Error("zero amount accepted")
	}
}

func TestPayNotifyQuery(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	ctx := ctxT(t)
	fo := e.createPaid(t, "o-pay", 600)
	evs := e.rc.Events()
	if len(evs) != 1 {
		t.Fatalf("events = %+v, errors %v", evs, e.rc.errs)
	}
	if ev := evs[0]; ev.Type != channel.EventPaymentSucceeded || ev.OrderID != "o-pay" || ev.TradeNo != fo.TransactionID || ev.AmountFen != 600 || ev.Key == "" {
		t.Errorf("event = %+v", ev)
	}
	if ds := e.fake.Deliveries(); len(ds) != 1 || !ds[0].Acked || ds[0].Status != http.StatusNoContent {
		t.Errorf("deliveries = %+v", ds)
	}
	st, err := e.ch.QueryPayment(ctx, "o-pay")
	if err != nil || st.State != channel.PaymentPaid || st.TradeNo != fo.TransactionID || st.AmountFen != 600 || !st.PaidAt.Equal(fo.PaidAt.Truncate(time.Second)) {
		t.Errorf("query = %+v, %v", st, err)
	}
	if st, err := e.ch.QueryPayment(ctx, "o-never"); err != nil || st.State != channel.PaymentNotFound {
		t.Errorf("unknown: %+v, %v", st, err)
	}
}

func TestClose(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	ctx := ctxT(t)
	if _, err := e.ch.CreatePayment(ctx, order("o-close", 600)); err != nil {
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
	if err := e.ch.ClosePayment(ctx, "o-close"); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := e.ch.ClosePayment(ctx, "o-unknown"); err != nil {
		t.Errorf("close unknown: %v", err)
	}
	if _, err := e.fake.Pay("o-close"); err == nil {
		t.Error("a closed order could be paid")
	}
	e.createPaid(t, "o-paid", 600)
	if err := e.ch.ClosePayment(ctx, "o-paid"); !errors.Is(err, channel.ErrAlreadyPaid) {
		t.Fatalf("close paid: %v, want ErrAlreadyPaid", err)
	}
}

func TestRefunds(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	ctx := ctxT(t)
	fo := e.createPaid(t, "o-ref", 1000)

	rr := channel.RefundRequest{OrderID: "o-ref", TradeNo: fo.TransactionID, RefundID: "r-1", AmountFen: 300, TotalFen: 1000, Reason: "accidental"}
	st, err := e.ch.Refund(ctx, rr)
	if err != nil || st.State != channel.RefundSucceeded || st.AmountFen != 300 || st.ChannelRefundID == "" {
		t.Fatalf("partial refund: %+v, %v", st, err)
	}
	st2, err := e.ch.Refund(ctx, rr)
	if err != nil || st2 != st {
		t.Fatalf("repeat: %+v, %v; first %+v", st2, err, st)
	}
	if fo, _ = e.fake.Order("o-ref"); fo.RefundedFen != 300 || len(fo.Refunds) != 1 || fo.TradeState != wechatpaytest.StateRefund {
		t.Fatalf("after repeat: %+v", fo)
	}
	st, err = e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-ref", RefundID: "r-2", AmountFen: 800, TotalFen: 1000})
	if err != nil || st.State != channel.RefundFailed || !strings.Contains(st.Reason, "INVALID_REQUEST") {
		t.Fatalf("excess: %+v, %v", st, err)
	}
	st, err = e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-ref", RefundID: "r-3", AmountFen: 700, TotalFen: 1000})
	if err != nil || st.State != channel.RefundSucceeded {
		t.Fatalf("rest: %+v, %v", st, err)
	}
	if ps, err := e.ch.QueryPayment(ctx, "o-ref"); err != nil || ps.State != channel.PaymentRefunded || ps.TradeNo != fo.TransactionID ||
		ps.AmountFen != 1000 || ps.PaidAt.IsZero() {
		t.Fatalf("refunded order: %+v, %v", ps, err)
	}
	if err := e.ch.ClosePayment(ctx, "o-ref"); !errors.Is(err, channel.ErrAlreadyPaid) {
		t.Fatalf("close refunded order: %v, want ErrAlreadyPaid", err)
	}
	for id, want := range map[string]channel.RefundState{"r-1": channel.RefundSucceeded, "r-3": channel.RefundSucceeded, "r-2": channel.RefundNotFound} {
		got, err := e.ch.QueryRefund(ctx, "o-ref", id)
		if err != nil || got.State != want {
			t.Errorf("QueryRefund %s = %+v, %v; want %s", id, got, err, want)
		}
	}
	if st, err := e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-none", RefundID: "r-x", AmountFen: 1, TotalFen: 1}); err != nil || st.State != channel.RefundFailed {
		t.Errorf("refund of an unknown order = %+v, %v", st, err)
	}
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	var refunds []string
	for _, ev := range e.rc.Events() {
		if ev.Type == channel.EventRefundSucceeded {
			refunds = append(refunds, ev.RefundID+":"+strconv.FormatInt(ev.AmountFen, 10))
		}
	}
	if strings.Join(refunds, ",") != "r-1:300,r-3:700" {
		t.Errorf("refund events = %v", refunds)
	}
}

func TestRefundLifecycle(t *testing.T) {
	e := setup(t, wechatpaytest.Options{RefundsPending: true}, nil)
	ctx := ctxT(t)
	e.createPaid(t, "o-life", 900)
	for _, id := range []string{"r-ok", "r-closed", "r-abn"} {
		st, err := e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-life", RefundID: id, AmountFen: 300, TotalFen: 900})
		if err != nil || st.State != channel.RefundProcessing {
			t.Fatalf("refund %s: %+v, %v", id, st, err)
		}
	}
	for id, status := range map[string]string{"r-ok": wechatpaytest.RefundSuccess, "r-closed": wechatpaytest.RefundClosed, "r-abn": wechatpaytest.RefundAbnormal} {
		if _, err := e.fake.CompleteRefund(id, status); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]channel.EventType{}
	for _, ev := range e.rc.Events() {
		if ev.RefundID != "" {
			got[ev.RefundID] = ev.Type
		}
	}
	if len(got) != 2 || got["r-ok"] != channel.EventRefundSucceeded || got["r-closed"] != channel.EventRefundFailed {
		t.Errorf("refund events = %v", got)
	}
	for id, want := range map[string]channel.RefundState{"r-ok": channel.RefundSucceeded, "r-closed": channel.RefundFailed, "r-abn": channel.RefundProcessing} {
		st, err := e.ch.QueryRefund(ctx, "o-life", id)
		if err != nil || st.State != want {
			t.Errorf("QueryRefund %s = %+v, %v; want %s", id, st, err, want)
		}
	}
	// The closed refund's amount can be refunded again under a new number.
	if st, err := e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-life", RefundID: "r-again", AmountFen: 300, TotalFen: 900}); err != nil || st.State != channel.RefundProcessing {
		t.Errorf("refund again: %+v, %v", st, err)
	}
}

func TestRefundTimeoutThenRetry(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, func(c *wechatpay.Config) {
		c.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond}
	})
	ctx := ctxT(t)
	fo := e.createPaid(t, "o-to", 600)
	e.fake.InjectFault(wechatpaytest.Fault{Op: wechatpaytest.OpRefund, Delay: 2 * time.Second})
	rr := channel.RefundRequest{OrderID: "o-to", TradeNo: fo.TransactionID, RefundID: "r-to", AmountFen: 600, TotalFen: 600}
	start := time.Now()
	if st, err := e.ch.Refund(ctx, rr); err == nil {
		t.Fatalf("timed-out refund returned %+v, want an error", st)
	}
	if time.Since(start) > 1500*time.Millisecond {
		t.Errorf("timeout not applied: %v", time.Since(start))
	}
	if r, ok := e.fake.Refund("r-to"); !ok || r.Status != wechatpaytest.RefundSuccess {
		t.Fatalf("the fake should have refunded: %+v", r)
	}
	st, err := e.ch.Refund(ctx, rr)
	if err != nil || st.State != channel.RefundSucceeded {
		t.Fatalf("retry: %+v, %v", st, err)
	}
	if o, _ := e.fake.Order("o-to"); o.RefundedFen != 600 || len(o.Refunds) != 1 {
		t.Fatalf("refunded twice: %+v", o)
	}
}

func TestFaults(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	ctx := ctxT(t)
	e.createPaid(t, "o-f", 10000)
	refund := func(id string) (channel.RefundStatus, error) {
		return e.ch.Refund(ctx, channel.RefundRequest{OrderID: "o-f", RefundID: id, AmountFen: 1, TotalFen: 10000})
	}
	unknown := map[string]wechatpaytest.Fault{
		"500 after apply":  {Op: wechatpaytest.OpRefund, Status: 500},
		"500 before apply": {Op: wechatpaytest.OpRefund, BeforeApply: true},
		"bad signature":    {Op: wechatpaytest.OpRefund, BadSignature: true},
		"429":              {Op: wechatpaytest.OpRefund, Status: 429, Code: "FREQUENCY_LIMITED"},
		"400 system error": {Op: wechatpaytest.OpRefund, Status: 400, Code: "SYSTEM_ERROR"},
		"401":              {Op: wechatpaytest.OpRefund, Status: 401, Code: "SIGN_ERROR"},
	}
	for name, f := range unknown {
		t.Run(name, func(t *testing.T) {
			e.fake.InjectFault(f)
			if st, err := refund("r-" + name); err == nil {
				t.Fatalf("got %+v, want an error", st)
			}
		})
	}
	// Applied before failing: 500 after apply, bad signature, 429, 400, 401 (5 × 1 fen).
	if o, _ := e.fake.Order("o-f"); o.RefundedFen != 5 {
		t.Errorf("refunded %d fen, want 5", o.RefundedFen)
	}
	e.fake.InjectFault(wechatpaytest.Fault{Op: wechatpaytest.OpRefund, BeforeApply: true, Status: 403, Code: "NOT_ENOUGH"})
	if st, err := refund("r-broke"); err != nil || st.State != channel.RefundFailed || !strings.HasPrefix(st.Reason, "NOT_ENOUGH") {
		t.Errorf("NOT_ENOUGH: %+v, %v", st, err)
	}
	for _, f := range []wechatpaytest.Fault{
		{Op: wechatpaytest.OpQuery, BadSignature: true},
		{Op: wechatpaytest.OpQuery, Status: 502},
		{Op: wechatpaytest.OpQuery, Status: 404, Code: "ORDER_NOT_EXIST", BadSignature: true},
		{Op: wechatpaytest.OpClose, Status: 400, Code: "ORDERPAID", BadSignature: true},
		{Op: wechatpaytest.OpClose, Status: 500},
		{Op: wechatpaytest.OpQueryRefund, BadSignature: true},
		{Op: wechatpaytest.OpPrepay, Status: 503},
	} {
		e.fake.InjectFault(f)
		var err error
		switch f.Op {
		case wechatpaytest.OpQuery:
			_, err = e.ch.QueryPayment(ctx, "o-f")
		case wechatpaytest.OpClose:
			err = e.ch.ClosePayment(ctx, "o-f")
			if errors.Is(err, channel.ErrAlreadyPaid) {
				t.Errorf("%+v: an unverified answer was believed", f)
			}
		case wechatpaytest.OpQueryRefund:
			_, err = e.ch.QueryRefund(ctx, "o-f", "r-x")
		case wechatpaytest.OpPrepay:
			_, err = e.ch.CreatePayment(ctx, order("o-new", 100))
		}
		if err == nil {
			t.Errorf("%+v: no error", f)
		}
	}
}

func TestClockSkewFailsCalls(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, func(c *wechatpay.Config) {
		c.Now = func() time.Time { return time.Now().Add(10 * time.Minute) }
	})
	if _, err := e.ch.QueryPayment(ctxT(t), "o-any"); err == nil {
		t.Fatal("a call ten minutes off succeeded")
	}
}

func TestNotifier(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	ctx := ctxT(t)
	// 500, 401, then a 200 with a FAIL body: WeChat only looks at the status.
	e.rc.setAnswer(func(n int) int { return map[int]int{1: 500, 2: 401}[n] + map[bool]int{true: 200}[n > 2] })
	e.createPaid(t, "o-retry", 600)
	ds := e.fake.Deliveries()
	if len(ds) != 3 || ds[0].Acked || ds[1].Acked || !ds[2].Acked || ds[2].Status != 200 {
		t.Fatalf("deliveries = %+v", ds)
	}
	evs := e.rc.Events()
	if len(evs) != 3 || evs[0].Key != evs[2].Key {
		t.Errorf("events = %+v", evs)
	}

	// Lost, then delivered by hand; a duplicate keeps its key.
	e.rc.setAnswer(nil)
	if _, err := e.ch.CreatePayment(ctx, order("o-lost", 600)); err != nil {
		t.Fatal(err)
	}
	e.fake.LoseNextNotifications(1)
	n, err := e.fake.Pay("o-lost")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if len(e.fake.Deliveries()) != 3 {
		t.Fatal("a lost notification was delivered")
	}
	d, err := e.fake.Deliver(ctx, n)
	if err != nil || d.Status != http.StatusNoContent || !d.Acked {
		t.Fatalf("deliver: %+v, %v", d, err)
	}
	d, err = e.fake.DeliverRaw(ctx, n.URL, e.fake.SignHeaders(n.Body, time.Now().Add(-10*time.Minute)), n.Body)
	if err != nil || d.Status != http.StatusUnauthorized || d.Acked || !strings.Contains(d.Body, "FAIL") {
		t.Fatalf("stale delivery: %+v, %v", d, err)
	}
	e.fake.Redeliver(n)
	if err := e.fake.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, ev := range e.rc.Events() {
		if ev.OrderID == "o-lost" {
			keys = append(keys, ev.Key)
		}
	}
	if len(keys) != 2 || keys[0] != n.ID || keys[1] != n.ID {
		t.Errorf("keys = %v, want twice %s", keys, n.ID)
	}
}

func TestNotifierGivesUp(t *testing.T) {
	e := setup(t, wechatpaytest.Options{RetrySchedule: []time.Duration{time.Millisecond, time.Millisecond}}, nil)
	e.rc.setAnswer(func(int) int { return 500 })
	e.createPaid(t, "o-gone", 600)
	if ds := e.fake.Deliveries(); len(ds) != 3 {
		t.Fatalf("deliveries = %d, want 3", len(ds))
	}
}
