package wechatpaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

var beijing = time.FixedZone("CST", 8*60*60)

func rfc3339(t time.Time) string { return t.In(beijing).Format(time.RFC3339) }

type envelope struct {
	ID           string   `json:"id"`
	CreateTime   string   `json:"create_time"`
	ResourceType string   `json:"resource_type"`
	EventType    string   `json:"event_type"`
	Summary      string   `json:"summary"`
	Resource     Resource `json:"resource"`
}

// NewNotification builds a notification envelope around plaintext,
// encrypted with the APIv3 key (associated_data = originalType, as WeChat
// does). It is not sent: set URL and use Deliver or Redeliver.
func (s *Server) NewNotification(eventType, summary, originalType string, plaintext []byte) Notification {
	id := "EV-" + upperHex(10)
	env := envelope{
		ID:           id,
		CreateTime:   rfc3339(s.opts.Now()),
		ResourceType: "encrypt-resource",
		EventType:    eventType,
		Summary:      summary,
		Resource:     s.EncryptResource(originalType, originalType, plaintext),
	}
	body, err := json.Marshal(env)
	if err != nil {
		panic(err) // plain strings always marshal
	}
	return Notification{ID: id, EventType: eventType, Body: body, Resource: plaintext}
}

func (s *Server) transactionJSON(o *order) []byte {
	m := map[string]any{
		"mchid":            s.opts.MchID,
		"appid":            s.opts.AppID,
		"out_trade_no":     o.OutTradeNo,
		"transaction_id":   o.TransactionID,
		"trade_type":       "APP",
		"trade_state":      o.TradeState,
		"trade_state_desc": map[string]string{StateNotPay: "订单未支付", StateSuccess: "支付成功", StateRefund: "转入退款", StateClosed: "已关闭"}[o.TradeState],
		"bank_type":        "OTHERS",
		"attach":           "",
		"payer":            map[string]string{"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		"amount":           map[string]any{"total": o.TotalFen, "currency": "CNY"},
	}
	if !o.PaidAt.IsZero() {
		m["success_time"] = rfc3339(o.PaidAt)
		m["amount"] = map[string]any{"total": o.TotalFen, "payer_total": o.TotalFen, "currency": "CNY", "payer_currency": "CNY"}
	}
	if o.TransactionID == "" {
		delete(m, "transaction_id")
	}
	b, _ := json.Marshal(m)
	return b
}

func (s *Server) notifyLocked(eventType, summary, originalType string, plaintext []byte, orderID, refundID, target string) (Notification, error) {
	n := s.NewNotification(eventType, summary, originalType, plaintext)
	n.OrderID, n.RefundID = orderID, refundID
	n.URL = target
	if s.opts.NotifyURL != "" {
		n.URL = s.opts.NotifyURL
	}
	if s.lose > 0 {
		s.lose--
		return n, nil
	}
	s.pushLocked(n)
	return n, nil
}

func (s *Server) notifyRefundLocked(r *Refund) (Notification, error) {
	o := s.orders[r.OutTradeNo]
	m := map[string]any{
		"mchid":                 s.opts.MchID,
		"out_trade_no":          r.OutTradeNo,
		"transaction_id":        r.TransactionID,
		"out_refund_no":         r.OutRefundNo,
		"refund_id":             r.RefundID,
		"refund_status":         r.Status,
		"user_received_account": "支付用户零钱",
		"amount":                map[string]any{"total": r.TotalFen, "refund": r.AmountFen, "payer_total": o.TotalFen, "payer_refund": r.AmountFen},
	}
	if !r.SuccessAt.IsZero() {
		m["success_time"] = rfc3339(r.SuccessAt)
	}
	b, _ := json.Marshal(m)
	summary := map[string]string{RefundSuccess: "退款成功", RefundClosed: "退款关闭", RefundAbnormal: "退款异常"}[r.Status]
	target := r.NotifyURL
	if target == "" {
		target = o.NotifyURL
	}
	return s.notifyLocked("REFUND."+r.Status, summary, "refund", b, r.OutTradeNo, r.OutRefundNo, target)
}

// Redeliver pushes n again with the full retry schedule (a duplicate, as
// WeChat Pay sends when an acknowledgement was lost).
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
			if d := s.deliver(s.ctx, n.URL, n.ID, s.SignHeaders(n.Body, time.Time{}), n.Body, attempt); d.Acked {
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

// Deliver makes one synchronous, freshly signed delivery attempt of n
// without retries and reports what the receiver answered. The error is the
// transport error, if any (also in Delivery.Err).
func (s *Server) Deliver(ctx context.Context, n Notification) (Delivery, error) {
	d := s.deliver(ctx, n.URL, n.ID, s.SignHeaders(n.Body, time.Time{}), n.Body, 0)
	return d, d.Err
}

// DeliverRaw posts body with exactly the given headers (see SignHeaders):
// for stale timestamps, unknown serials, signature probes and the like.
func (s *Server) DeliverRaw(ctx context.Context, target string, header http.Header, body []byte) (Delivery, error) {
	d := s.deliver(ctx, target, "", header, body, 0)
	return d, d.Err
}

func (s *Server) deliver(ctx context.Context, target, id string, h http.Header, body []byte, attempt int) Delivery {
	d := Delivery{NotificationID: id, URL: target, Attempt: attempt, At: s.opts.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		d.Err = err
	} else {
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.client.Do(req)
		if err != nil {
			d.Err = fmt.Errorf("deliver %s: %w", id, err)
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			d.Status, d.Body = resp.StatusCode, string(b)
			// The status decides: a 200 with {"code":"FAIL"} is still an ack.
			d.Acked = resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent
		}
	}
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
	return d
}
