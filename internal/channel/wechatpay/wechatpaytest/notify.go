package wechatpaytest

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
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
	s.notifier.Notify(n.message())
	return n, nil
}

func (n Notification) message() channeltest.Message {
	return channeltest.Message{ID: n.ID, URL: n.URL, Body: n.Body}
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
func (s *Server) Redeliver(n Notification) { s.notifier.Push(n.message()) }

// Deliver makes one synchronous, freshly signed delivery attempt of n
// without retries and reports what the receiver answered. The error is the
// transport error, if any (also in Delivery.Err).
func (s *Server) Deliver(ctx context.Context, n Notification) (Delivery, error) {
	d := s.notifier.Deliver(ctx, n.message())
	return d, d.Err
}

// DeliverRaw posts body with exactly the given headers (see SignHeaders):
// for stale timestamps, unknown serials, signature probes and the like.
func (s *Server) DeliverRaw(ctx context.Context, target string, header http.Header, body []byte) (Delivery, error) {
	d := s.notifier.DeliverWith(ctx, channeltest.Message{URL: target, Body: body}, header)
	return d, d.Err
}
