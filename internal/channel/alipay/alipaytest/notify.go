package alipaytest

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
	"github.com/diamondd/diamondd/internal/money"
)

var beijing = time.FixedZone("CST", 8*60*60)

const timeLayout = "2006-01-02 15:04:05"

// signContent: sorted k=v&… of the non-empty fields not excluded.
func signContent(p url.Values, exclude ...string) string {
	var keys []string
	for k, v := range p {
		if len(v) == 0 || v[0] == "" {
			continue
		}
		skip := false
		for _, e := range exclude {
			skip = skip || e == k
		}
		if !skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p[k][0]
	}
	return strings.Join(parts, "&")
}

// verifyRequest checks a request (or order string) signed by the app.
func (s *Server) verifyRequest(p url.Values) error {
	if got := p.Get("app_id"); got != s.opts.AppID {
		return fmt.Errorf("app_id %q is not %q", got, s.opts.AppID)
	}
	if st := p.Get("sign_type"); st != "RSA2" {
		return fmt.Errorf("sign_type %q", st)
	}
	sig, err := base64.StdEncoding.DecodeString(p.Get("sign"))
	if err != nil || len(sig) == 0 {
		return errors.New("sign missing or not base64")
	}
	sum := sha256.Sum256([]byte(signContent(p, "sign")))
	if err := rsa.VerifyPKCS1v15(&s.appKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("app signature does not verify")
	}
	return nil
}

// SignNotification signs notification fields with the fake Alipay key (RSA2
// over the sorted fields without sign, sign_type and empty values), sets
// sign_type=RSA2 when absent, and returns the form body. Tests use it to
// craft notifications of their own.
func (s *Server) SignNotification(fields url.Values) []byte {
	p := url.Values{}
	for k, v := range fields {
		p[k] = append([]string(nil), v...)
	}
	if p.Get("sign_type") == "" {
		p.Set("sign_type", "RSA2")
	}
	p.Del("sign")
	p.Set("sign", channeltest.SignSHA256(s.alipayKey, []byte(signContent(p, "sign", "sign_type"))))
	return []byte(p.Encode())
}

// notifyLocked builds, signs and dispatches the notification for t's
// current state; refund is set for refund-triggered notifications.
func (s *Server) notifyLocked(t *trade, refund *Refund) Notification {
	now := s.opts.Now().In(beijing)
	p := url.Values{}
	p.Set("notify_time", now.Format(timeLayout))
	p.Set("notify_type", "trade_status_sync")
	p.Set("notify_id", channeltest.RandomHex(16))
	p.Set("app_id", s.opts.AppID)
	p.Set("charset", "utf-8")
	p.Set("version", "1.0")
	p.Set("trade_no", t.TradeNo)
	p.Set("out_trade_no", t.OutTradeNo)
	p.Set("buyer_id", "2088102116773037")
	p.Set("buyer_logon_id", "159****5620")
	p.Set("seller_id", s.opts.SellerID)
	p.Set("trade_status", t.Status)
	p.Set("total_amount", money.FormatFen(t.TotalFen))
	p.Set("subject", t.Subject)
	p.Set("gmt_create", t.CreatedAt.In(beijing).Format(timeLayout))
	if !t.PaidAt.IsZero() {
		amt := money.FormatFen(t.TotalFen)
		p.Set("receipt_amount", amt)
		p.Set("invoice_amount", amt)
		p.Set("buyer_pay_amount", amt)
		p.Set("point_amount", "0.00")
		p.Set("gmt_payment", t.PaidAt.In(beijing).Format(timeLayout))
		p.Set("fund_bill_list", `[{"amount":"`+amt+`","fundChannel":"ALIPAYACCOUNT"}]`)
	}
	if !t.ClosedAt.IsZero() {
		p.Set("gmt_close", t.ClosedAt.In(beijing).Format(timeLayout))
	}
	if refund != nil {
		p.Set("refund_fee", money.FormatFen(t.RefundedFen))
		p.Set("gmt_refund", refund.At.In(beijing).Format(timeLayout+".000"))
		p.Set("out_biz_no", refund.OutRequestNo)
	}
	body := s.SignNotification(p)
	signed, _ := url.ParseQuery(string(body))
	target := s.opts.NotifyURL
	if target == "" {
		target = t.NotifyURL
	}
	n := Notification{ID: p.Get("notify_id"), OrderID: t.OutTradeNo, URL: target, Params: signed, Body: body}
	s.notifier.Notify(n.message())
	return n
}

func (n Notification) message() channeltest.Message {
	return channeltest.Message{ID: n.ID, URL: n.URL, Body: n.Body}
}

// Redeliver pushes n again with the full retry schedule (a duplicate, as
// Alipay sends when an acknowledgement was lost).
func (s *Server) Redeliver(n Notification) { s.notifier.Push(n.message()) }

// Deliver makes one synchronous delivery attempt of n, without retries,
// and reports what the receiver answered. The error is the transport error,
// if any (also in Delivery.Err).
func (s *Server) Deliver(ctx context.Context, n Notification) (Delivery, error) {
	d := s.notifier.Deliver(ctx, n.message())
	return d, d.Err
}

// DeliverBody is Deliver for a body of the caller's making (see
// SignNotification).
func (s *Server) DeliverBody(ctx context.Context, target string, body []byte) (Delivery, error) {
	return s.Deliver(ctx, Notification{URL: target, Body: body})
}
