package alipay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/money"
)

// ParseWebhook verifies an Alipay notification (a form-encoded POST body)
// and turns it into at most one event keyed by notify_id.
//
//   - TRADE_SUCCESS / TRADE_FINISHED: payment.succeeded with total_amount;
//     payment.refunded when it carries a positive refund_fee (money went
//     back since, from a refund that does not name itself in out_biz_no).
//   - TRADE_CLOSED: payment.closed (an unpaid trade timed out or was closed);
//     payment.refunded when a refund_fee says a full refund closed it.
//   - WAIT_BUYER_PAY: no event.
//   - A refund notification (it names the refund in out_biz_no, §1.5):
//     refund.succeeded with RefundID = out_biz_no. Alipay only sends the
//     trade's cumulative refund_fee, not this refund's amount, so AmountFen is
//     that cumulative amount; take the refund's own amount from our record.
//
// The header is unused: Alipay signs the form fields themselves.
func (c *Channel) ParseWebhook(ctx context.Context, _ http.Header, body []byte) ([]channel.Event, error) {
	p, err := c.verifyNotification(body)
	if err != nil {
		return nil, fmt.Errorf("alipay: notification: %w", err)
	}
	evs, err := c.notificationEvents(p)
	if err != nil {
		return nil, fmt.Errorf("alipay: notification %s: %w", clip(p.Get("notify_id")), err)
	}
	return evs, nil
}

// verifyNotification checks the RSA2 signature before anything in the body
// is believed. Everything that prevents verification is ErrBadSignature.
func (c *Channel) verifyNotification(body []byte) (url.Values, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty body", channel.ErrBadSignature)
	}
	p, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: body is not a form: %v", channel.ErrBadSignature, err)
	}
	for k, v := range p {
		// A repeated field makes "the" signed value ambiguous.
		if len(v) != 1 {
			return nil, fmt.Errorf("%w: field %q repeated", channel.ErrBadSignature, clip(k))
		}
	}
	// sign_type=RSA is SHA1withRSA: never accept the weaker algorithm.
	if st := p.Get("sign_type"); st != "RSA2" {
		return nil, fmt.Errorf("%w: sign_type %q, want RSA2", channel.ErrBadSignature, clip(st))
	}
	if err := verify(c.alipayKey, []byte(signContent(p, "sign", "sign_type")), p.Get("sign")); err != nil {
		return nil, fmt.Errorf("%w: %v", channel.ErrBadSignature, err)
	}
	return p, nil
}

func (c *Channel) notificationEvents(p url.Values) ([]channel.Event, error) {
	// Alipay's key may sign for several of the merchant's apps: only
	// notifications for our app are ours to act on.
	if got := p.Get("app_id"); got != c.appID {
		return nil, fmt.Errorf("%w: app_id %q is not ours", channel.ErrMalformed, clip(got))
	}
	// An app can be bound to another merchant's account: Alipay's guidance is
	// to check the seller too, when we know who we are.
	if got := p.Get("seller_id"); c.sellerID != "" && got != c.sellerID {
		return nil, fmt.Errorf("%w: seller_id %q is not ours", channel.ErrMalformed, clip(got))
	}
	if nt := p.Get("notify_type"); nt != "" && nt != "trade_status_sync" {
		// Not a trade notification (no other type is subscribed): nothing to do,
		// and acknowledging stops pointless redeliveries.
		return nil, nil
	}
	notifyID, orderID, status := p.Get("notify_id"), p.Get("out_trade_no"), p.Get("trade_status")
	switch {
	case notifyID == "":
		return nil, fmt.Errorf("%w: no notify_id", channel.ErrMalformed)
	case orderID == "":
		return nil, fmt.Errorf("%w: no out_trade_no", channel.ErrMalformed)
	case status == "":
		return nil, fmt.Errorf("%w: no trade_status", channel.ErrMalformed)
	}
	ev := channel.Event{Key: notifyID, OrderID: orderID, TradeNo: p.Get("trade_no")}

	refundFee, err := optionalYuan(p, "refund_fee")
	if err != nil {
		return nil, err
	}
	if refundID := p.Get("out_biz_no"); refundID != "" {
		if !isTradeStatus(status) {
			return nil, fmt.Errorf("%w: unknown trade_status %q", channel.ErrMalformed, clip(status))
		}
		if refundFee <= 0 {
			return nil, fmt.Errorf("%w: refund notification without a positive refund_fee", channel.ErrMalformed)
		}
		ev.Type = channel.EventRefundSucceeded
		ev.RefundID = refundID
		ev.AmountFen = refundFee
		ev.At = c.notifyTime(p, "gmt_refund")
		return []channel.Event{ev}, nil
	}

	switch status {
	case "TRADE_SUCCESS", "TRADE_FINISHED":
		return c.paidEvent(p, ev, refundFee)
	case "TRADE_CLOSED":
		if refundFee > 0 {
			// Closed by a full refund that does not name the refund: the
			// trade was paid, so payment.closed would be wrong, and without
			// out_biz_no no refund of ours can be matched (the refund
			// worker's QueryRefund settles ours). It is still news for an
			// order not credited yet.
			return c.paidEvent(p, ev, refundFee)
		}
		if p.Get("gmt_refund") != "" {
			// Refunded, without an amount to go on: acknowledging stops the
			// redeliveries, and the query worker sees the closed trade.
			return nil, nil
		}
		if _, err := optionalYuan(p, "total_amount"); err != nil {
			return nil, err
		}
		ev.Type = channel.EventPaymentClosed
		ev.At = c.notifyTime(p, "gmt_close")
		return []channel.Event{ev}, nil
	case "WAIT_BUYER_PAY":
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: unknown trade_status %q", channel.ErrMalformed, clip(status))
	}
}

// paidEvent reports a paid trade. One that carries a refund_fee has had
// money returned since (refund_fee is cumulative): payment.refunded, which
// never credits an order that is not credited yet.
func (c *Channel) paidEvent(p url.Values, ev channel.Event, refundFee int64) ([]channel.Event, error) {
	if ev.TradeNo == "" {
		return nil, fmt.Errorf("%w: paid trade without trade_no", channel.ErrMalformed)
	}
	total, err := optionalYuan(p, "total_amount")
	if err != nil {
		return nil, err
	}
	if total <= 0 {
		return nil, fmt.Errorf("%w: paid trade without a positive total_amount", channel.ErrMalformed)
	}
	ev.Type = channel.EventPaymentSucceeded
	if refundFee > 0 {
		ev.Type = channel.EventPaymentRefunded
		ev.RefundedFen = refundFee
	}
	ev.AmountFen = total
	ev.At = c.notifyTime(p, "gmt_payment")
	return []channel.Event{ev}, nil
}

func isTradeStatus(s string) bool {
	switch s {
	case "WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED":
		return true
	}
	return false
}

// optionalYuan parses an amount field; absent is 0, present but not a strict
// yuan amount is malformed.
func optionalYuan(p url.Values, key string) (int64, error) {
	v := p.Get(key)
	if v == "" {
		return 0, nil
	}
	fen, err := money.ParseYuan(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", channel.ErrMalformed, key, err)
	}
	return fen, nil
}

// notifyTime reads the event time from the first usable field. The times are
// informational, so an odd format falls back instead of rejecting a verified
// notification.
func (c *Channel) notifyTime(p url.Values, field string) time.Time {
	for _, f := range []string{field, "notify_time"} {
		if t, ok := parseTime(p.Get(f)); ok {
			return t
		}
	}
	return c.now()
}

// parseTime reads "2006-01-02 15:04:05" in Beijing time; Go accepts the
// fractional seconds gmt_refund carries ("… 15:45:57.320") without a layout change.
func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation(timeLayout, s, beijing)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// WebhookResponse is Alipay's acknowledgement: the seven characters
// "success" stop the redeliveries, anything else asks for one.
func (c *Channel) WebhookResponse(err error) channel.Response {
	switch {
	case err == nil:
		return channel.Response{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte("success")}
	case errors.Is(err, channel.ErrBadSignature):
		return channel.Response{Status: http.StatusUnauthorized, ContentType: "text/plain; charset=utf-8", Body: []byte("fail")}
	default:
		return channel.Response{Status: http.StatusInternalServerError, ContentType: "text/plain; charset=utf-8", Body: []byte("fail")}
	}
}

// clip bounds attacker-controlled text that ends up in error messages and logs.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
