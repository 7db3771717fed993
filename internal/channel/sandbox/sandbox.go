// Package sandbox is the development and test channel of API.md: payments
// are "made" by posting a webhook signed with HMAC-SHA256 over
// timestamp + "." + body. It keeps no state of its own; with AutoSettle it
// reports refunds settled at once.
package sandbox

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
)

// Name is the channel's name.
const Name = "sandbox"

// MaxSkew is how far a webhook timestamp may be from our clock.
const MaxSkew = 300 * time.Second

// Channel is the sandbox.
type Channel struct {
	secret     []byte
	autoSettle bool
	now        func() time.Time
}

// New builds the sandbox channel.
func New(secret string, autoSettle bool, now func() time.Time) (*Channel, error) {
	if secret == "" {
		return nil, errors.New("SANDBOX_WEBHOOK_SECRET is required for the sandbox channel")
	}
	if now == nil {
		now = time.Now
	}
	return &Channel{secret: []byte(secret), autoSettle: autoSettle, now: now}, nil
}

func (c *Channel) Name() string { return Name }

// PreparesOffline: the sandbox's payment instructions are computed here.
func (c *Channel) PreparesOffline() {}

// Sign is the signature of a webhook body at a timestamp: lowercase hex
// HMAC-SHA256(secret, timestamp + "." + body).
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// CreatePayment tells the developer how to simulate the payment.
func (c *Channel) CreatePayment(_ context.Context, o channel.Order) (channel.Payment, error) {
	return channel.Payment{Pay: map[string]any{
		"type":       "sandbox",
		"order_id":   o.ID,
		"amount_fen": o.AmountFen,
		"simulate": "POST /v1/webhooks/sandbox with {\"event_id\":\"<unique>\",\"type\":\"payment.succeeded\",\"order_id\":\"" +
			o.ID + "\",\"trade_no\":\"<unique>\",\"amount_fen\":" + strconv.FormatInt(o.AmountFen, 10) +
			"}, signed with X-Sandbox-Timestamp and X-Sandbox-Signature (or run `diamondd sandbox pay " + o.ID +
			" --amount " + strconv.FormatInt(o.AmountFen, 10) + "`)",
	}}, nil
}

// event is the sandbox webhook body.
type event struct {
	EventID   string `json:"event_id"`
	Type      string `json:"type"`
	OrderID   string `json:"order_id"`
	TradeNo   string `json:"trade_no"`
	RefundID  string `json:"refund_id"`
	AmountFen *int64 `json:"amount_fen"`
	Reason    string `json:"reason"`
}

// ParseWebhook checks the timestamp window and the signature on the raw
// body, then parses it.
func (c *Channel) ParseWebhook(_ context.Context, h http.Header, body []byte) ([]channel.Event, error) {
	tsRaw, sig := h.Get("X-Sandbox-Timestamp"), h.Get("X-Sandbox-Signature")
	if tsRaw == "" || sig == "" {
		return nil, fmt.Errorf("%w: missing X-Sandbox-Timestamp or X-Sandbox-Signature", channel.ErrBadSignature)
	}
	// The signature covers the header's text; only the plain decimal form
	// is taken, so that text and the number checked are one and the same.
	ts, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil || strconv.FormatInt(ts, 10) != tsRaw {
		return nil, fmt.Errorf("%w: timestamp %q is not unix seconds", channel.ErrBadSignature, tsRaw)
	}
	skew := c.now().Sub(time.Unix(ts, 0))
	if skew > MaxSkew || skew < -MaxSkew {
		return nil, fmt.Errorf("%w: timestamp %d is %s from now", channel.ErrBadSignature, ts, skew)
	}
	want := Sign(string(c.secret), ts, body)
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return nil, fmt.Errorf("%w: signature mismatch", channel.ErrBadSignature)
	}

	var e event
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", channel.ErrMalformed, err)
	}
	if e.EventID == "" {
		return nil, fmt.Errorf("%w: event_id is required", channel.ErrMalformed)
	}
	ev := channel.Event{Key: e.EventID, Type: channel.EventType(e.Type), OrderID: e.OrderID,
		TradeNo: e.TradeNo, RefundID: e.RefundID, Reason: e.Reason, At: c.now()}
	switch ev.Type {
	case channel.EventPaymentSucceeded:
		if e.OrderID == "" || e.TradeNo == "" || e.AmountFen == nil || *e.AmountFen <= 0 {
			return nil, fmt.Errorf("%w: payment.succeeded needs order_id, trade_no and a positive amount_fen", channel.ErrMalformed)
		}
		ev.AmountFen = *e.AmountFen
	case channel.EventPaymentFailed, channel.EventPaymentClosed:
		if e.OrderID == "" {
			return nil, fmt.Errorf("%w: %s needs order_id", channel.ErrMalformed, e.Type)
		}
	case channel.EventRefundSucceeded:
		if e.RefundID == "" {
			return nil, fmt.Errorf("%w: refund.succeeded needs refund_id", channel.ErrMalformed)
		}
		if e.AmountFen != nil {
			ev.AmountFen = *e.AmountFen
		}
	case channel.EventRefundFailed:
		if e.RefundID == "" {
			return nil, fmt.Errorf("%w: refund.failed needs refund_id", channel.ErrMalformed)
		}
	default:
		return nil, fmt.Errorf("%w: unknown type %q", channel.ErrMalformed, e.Type)
	}
	return []channel.Event{ev}, nil
}

// WebhookResponse is 200 {"ok":true} when handled.
func (c *Channel) WebhookResponse(err error) channel.Response {
	switch {
	case err == nil:
		return channel.Response{Status: http.StatusOK, ContentType: "application/json", Body: []byte(`{"ok":true}`)}
	case errors.Is(err, channel.ErrBadSignature):
		return problem(http.StatusUnauthorized, "invalid_signature", "the webhook signature or timestamp is not valid")
	case errors.Is(err, channel.ErrMalformed):
		return problem(http.StatusBadRequest, "malformed_event", "the event is not one the sandbox understands")
	default:
		return problem(http.StatusInternalServerError, "internal_error", "the event could not be applied; deliver it again")
	}
}

// problem is a refusal in the API's own error format.
func problem(status int, code, detail string) channel.Response {
	return channel.Response{Status: status, Code: code, Detail: detail}
}

// QueryPayment: the sandbox has no record of payments beyond its webhooks.
func (c *Channel) QueryPayment(context.Context, string) (channel.PaymentStatus, error) {
	return channel.PaymentStatus{State: channel.PaymentPending}, nil
}

// ClosePayment always succeeds: an unpaid sandbox order can always be closed.
func (c *Channel) ClosePayment(context.Context, string) error { return nil }

// Refund accepts the refund; it settles at once with AutoSettle, otherwise
// when a refund.* webhook arrives.
func (c *Channel) Refund(_ context.Context, r channel.RefundRequest) (channel.RefundStatus, error) {
	st := channel.RefundStatus{State: channel.RefundProcessing, ChannelRefundID: "sandbox-" + r.RefundID, AmountFen: r.AmountFen}
	if c.autoSettle {
		st.State = channel.RefundSucceeded
	}
	return st, nil
}

// QueryRefund reports what Refund would: settled only with AutoSettle.
func (c *Channel) QueryRefund(_ context.Context, _, refundID string) (channel.RefundStatus, error) {
	st := channel.RefundStatus{State: channel.RefundProcessing, ChannelRefundID: "sandbox-" + refundID}
	if c.autoSettle {
		st.State = channel.RefundSucceeded
	}
	return st, nil
}
