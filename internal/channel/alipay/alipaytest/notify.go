package alipaytest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

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

func rsa2Sign(key *rsa.PrivateKey, content []byte) string {
	sum := sha256.Sum256(content)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err) // cannot fail with a valid RSA-2048 key
	}
	return base64.StdEncoding.EncodeToString(sig)
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
	p.Set("sign", rsa2Sign(s.alipayKey, []byte(signContent(p, "sign", "sign_type"))))
	return []byte(p.Encode())
}

// notifyLocked builds, signs and dispatches the notification for t's
// current state; refund is set for refund-triggered notifications.
func (s *Server) notifyLocked(t *trade, refund *Refund) Notification {
	now := s.opts.Now().In(beijing)
	p := url.Values{}
	p.Set("notify_time", now.Format(timeLayout))
	p.Set("notify_type", "trade_status_sync")
	p.Set("notify_id", randomHex(16))
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
	if s.lose > 0 {
		s.lose--
		return n
	}
	s.pushLocked(n)
	return n
}

// Redeliver pushes n again with the full retry schedule (a duplicate, as
// Alipay sends when an acknowledgement was lost).
func (s *Server) Redeliver(n Notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushLocked(n)
}

func (s *Server) pushLocked(n Notification) {
	if s.closed || n.URL == "" {
		return
	}
	s.inflight++
	s.wg.Add(1)
	go func() {
		defer func() {
			s.mu.Lock()
			s.inflight--
			s.mu.Unlock()
			s.wg.Done()
		}()
		for attempt := 1; ; attempt++ {
			if d := s.deliver(s.ctx, n, attempt); d.Acked {
				return
			}
			if attempt > len(s.opts.RetrySchedule) {
				return
			}
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(s.opts.RetrySchedule[attempt-1]):
			}
		}
	}()
}

// Deliver makes one synchronous delivery attempt of n, without retries,
// and reports what the receiver answered. The error is the transport error,
// if any (also in Delivery.Err).
func (s *Server) Deliver(ctx context.Context, n Notification) (Delivery, error) {
	d := s.deliver(ctx, n, 0)
	return d, d.Err
}

// DeliverBody is Deliver for a body of the caller's making (see
// SignNotification).
func (s *Server) DeliverBody(ctx context.Context, target string, body []byte) (Delivery, error) {
	return s.Deliver(ctx, Notification{URL: target, Body: body})
}

func (s *Server) deliver(ctx context.Context, n Notification, attempt int) Delivery {
	d := Delivery{NotificationID: n.ID, URL: n.URL, Attempt: attempt, At: s.opts.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(n.Body))
	if err != nil {
		d.Err = err
	} else {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		resp, err := s.client.Do(req)
		if err != nil {
			d.Err = err
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			d.Status, d.Body = resp.StatusCode, string(body)
			// Alipay looks at the body only: the seven characters "success".
			d.Acked = d.Body == "success"
		}
	}
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
	return d
}
