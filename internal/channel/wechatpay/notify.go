package wechatpay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
)

type envelope struct {
	ID           string `json:"id"`
	CreateTime   string `json:"create_time"`
	EventType    string `json:"event_type"`
	ResourceType string `json:"resource_type"`
	Summary      string `json:"summary"`
	Resource     *struct {
		OriginalType   string `json:"original_type"`
		Algorithm      string `json:"algorithm"`
		Ciphertext     string `json:"ciphertext"`
		AssociatedData string `json:"associated_data"`
		Nonce          string `json:"nonce"`
	} `json:"resource"`
}

// transaction is the decrypted resource of a payment notification and the
// answer of the order query.
type transaction struct {
	AppID          string `json:"appid"`
	MchID          string `json:"mchid"`
	OutTradeNo     string `json:"out_trade_no"`
	TransactionID  string `json:"transaction_id"`
	TradeType      string `json:"trade_type"`
	TradeState     string `json:"trade_state"`
	TradeStateDesc string `json:"trade_state_desc"`
	SuccessTime    string `json:"success_time"`
	Amount         *struct {
		Total    *int64 `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
}

// refundResource is the decrypted resource of a refund notification.
type refundResource struct {
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	OutRefundNo   string `json:"out_refund_no"`
	RefundID      string `json:"refund_id"`
	RefundStatus  string `json:"refund_status"`
	SuccessTime   string `json:"success_time"`
	Amount        *struct {
		Total  int64  `json:"total"`
		Refund *int64 `json:"refund"`
	} `json:"amount"`
}

// ParseWebhook verifies a WeChat Pay notification (signed headers over the
// raw body, within five minutes of our clock), decrypts its resource and
// returns at most one event keyed by the notification id.
//
//   - TRANSACTION.*: by trade_state: SUCCESS → payment.succeeded with
//     amount.total (fen); REFUND (paid, then a refund started) →
//     payment.refunded; CLOSED, REVOKED → payment.closed; PAYERROR →
//     payment.failed; NOTPAY, USERPAYING → none.
//   - REFUND.SUCCESS → refund.succeeded; REFUND.CLOSED → refund.failed;
//     REFUND.ABNORMAL → no event: it is not final (the refund can still be
//     rerouted), and the refund worker keeps querying it.
//   - Any other event type: no event.
func (c *Channel) ParseWebhook(ctx context.Context, header http.Header, body []byte) ([]channel.Event, error) {
	if err := c.verify(header, body); err != nil {
		return nil, fmt.Errorf("wechatpay: notification: %w: %v", channel.ErrBadSignature, err)
	}
	evs, err := c.notificationEvents(body)
	if err != nil {
		return nil, fmt.Errorf("wechatpay: notification: %w: %v", channel.ErrMalformed, err)
	}
	return evs, nil
}

func (c *Channel) notificationEvents(body []byte) ([]channel.Event, error) {
	var env envelope
	if err := strictUnmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("envelope: %v", err)
	}
	if env.ID == "" {
		return nil, errors.New("no id")
	}
	kind := ""
	switch {
	case len(env.EventType) > 12 && env.EventType[:12] == "TRANSACTION.":
		kind = "transaction"
	case len(env.EventType) > 7 && env.EventType[:7] == "REFUND.":
		kind = "refund"
	default:
		return nil, nil
	}
	if env.Resource == nil {
		return nil, fmt.Errorf("%s: no resource", env.ID)
	}
	if env.Resource.Algorithm != "AEAD_AES_256_GCM" {
		return nil, fmt.Errorf("%s: resource algorithm %q", env.ID, clip(env.Resource.Algorithm))
	}
	if env.Resource.OriginalType != "" && env.Resource.OriginalType != kind {
		return nil, fmt.Errorf("%s: %s event carries a %q resource", env.ID, env.EventType, clip(env.Resource.OriginalType))
	}
	plain, err := c.decrypt(env.Resource.Ciphertext, env.Resource.Nonce, env.Resource.AssociatedData)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", env.ID, err)
	}
	var ev *channel.Event
	if kind == "transaction" {
		ev, err = c.transactionEvent(plain)
	} else {
		ev, err = c.refundEvent(env.EventType, plain)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", env.ID, err)
	}
	if ev == nil {
		return nil, nil
	}
	ev.Key = env.ID
	if ev.At.IsZero() {
		ev.At = parseTime(env.CreateTime, c.now())
	}
	return []channel.Event{*ev}, nil
}

func (c *Channel) transactionEvent(plain []byte) (*channel.Event, error) {
	var t transaction
	if err := strictUnmarshal(plain, &t); err != nil {
		return nil, fmt.Errorf("transaction: %v", err)
	}
	// WeChat's key signs for every merchant: the resource must be ours.
	if t.MchID != c.mchID {
		return nil, fmt.Errorf("mchid %q is not ours", clip(t.MchID))
	}
	if t.AppID != c.appID {
		return nil, fmt.Errorf("appid %q is not ours", clip(t.AppID))
	}
	if t.OutTradeNo == "" {
		return nil, errors.New("no out_trade_no")
	}
	ev := &channel.Event{OrderID: t.OutTradeNo, TradeNo: t.TransactionID}
	switch t.TradeState {
	case "SUCCESS", "REFUND":
		if t.TransactionID == "" {
			return nil, errors.New("paid without transaction_id")
		}
		if t.Amount == nil || t.Amount.Total == nil || *t.Amount.Total <= 0 {
			return nil, errors.New("paid without a positive amount.total")
		}
		if t.Amount.Currency != "" && t.Amount.Currency != "CNY" {
			return nil, fmt.Errorf("currency %q", clip(t.Amount.Currency))
		}
		ev.Type = channel.EventPaymentSucceeded
		if t.TradeState == "REFUND" {
			ev.Type = channel.EventPaymentRefunded
		}
		ev.AmountFen = *t.Amount.Total
		ev.At = parseTime(t.SuccessTime, time.Time{})
	case "CLOSED", "REVOKED":
		ev.Type = channel.EventPaymentClosed
	case "PAYERROR":
		ev.Type = channel.EventPaymentFailed
		ev.Reason = t.TradeStateDesc
	case "NOTPAY", "USERPAYING":
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown trade_state %q", clip(t.TradeState))
	}
	return ev, nil
}

func (c *Channel) refundEvent(eventType string, plain []byte) (*channel.Event, error) {
	var r refundResource
	if err := strictUnmarshal(plain, &r); err != nil {
		return nil, fmt.Errorf("refund: %v", err)
	}
	if r.MchID != c.mchID {
		return nil, fmt.Errorf("mchid %q is not ours", clip(r.MchID))
	}
	if r.OutRefundNo == "" {
		return nil, errors.New("no out_refund_no")
	}
	// A refund notification always names the order (out_trade_no is
	// required in WeChat Pay's refund resource): one that does not is not
	// one we can trust to be what it says.
	if r.OutTradeNo == "" {
		return nil, errors.New("no out_trade_no")
	}
	// The envelope's event type and the resource's status must agree; a
	// mismatch is not something to guess about.
	if want := eventType[len("REFUND."):]; r.RefundStatus != "" && r.RefundStatus != want {
		return nil, fmt.Errorf("%s carries refund_status %q", eventType, clip(r.RefundStatus))
	}
	ev := &channel.Event{OrderID: r.OutTradeNo, TradeNo: r.TransactionID, RefundID: r.OutRefundNo}
	switch eventType {
	case "REFUND.SUCCESS":
		if r.Amount == nil || r.Amount.Refund == nil || *r.Amount.Refund <= 0 {
			return nil, errors.New("refund without a positive amount.refund")
		}
		ev.Type = channel.EventRefundSucceeded
		ev.AmountFen = *r.Amount.Refund
		ev.At = parseTime(r.SuccessTime, time.Time{})
	case "REFUND.CLOSED":
		ev.Type = channel.EventRefundFailed
		ev.Reason = "refund closed by WeChat Pay"
	case "REFUND.ABNORMAL":
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown event type %q", clip(eventType))
	}
	return ev, nil
}

// strictUnmarshal decodes one JSON value and refuses trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// parseTime reads an RFC 3339 time; times are informational, so a bad one
// falls back instead of rejecting a verified message.
func parseTime(s string, fallback time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t
	}
	return fallback
}

type failBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WebhookResponse is WeChat Pay's acknowledgement: the HTTP status decides
// (204, no body, stops the redeliveries); a failure is 4xx/5xx with
// {"code":"FAIL","message":…}. The message stays generic: WeChat shows it in
// the merchant console, not to us.
func (c *Channel) WebhookResponse(err error) channel.Response {
	if err == nil {
		return channel.Response{Status: http.StatusNoContent}
	}
	status, msg := http.StatusInternalServerError, "处理失败 (processing failed)"
	switch {
	case errors.Is(err, channel.ErrBadSignature):
		status, msg = http.StatusUnauthorized, "签名验证失败 (signature verification failed)"
	case errors.Is(err, channel.ErrMalformed):
		msg = "通知内容无法处理 (notification not understood)"
	}
	body, _ := json.Marshal(failBody{Code: "FAIL", Message: msg})
	return channel.Response{Status: status, ContentType: "application/json", Body: body}
}
