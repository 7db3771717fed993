package wechatpay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/diamondd/diamondd/internal/channel"
)

// maxResponse bounds what is read from the API; real answers are a few KiB.
const maxResponse = 1 << 20

// answer is a verified API answer below 500.
type answer struct {
	status    int
	body      []byte
	requestID string
}

func (a answer) decode(v any) error { return json.Unmarshal(a.body, v) }

// apiError is WeChat's error body.
type apiError struct {
	Status    int
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string
}

func (e apiError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s (Request-ID %s)", e.Status, e.Code, e.Message, e.RequestID)
}

func (a answer) apiError() apiError {
	e := apiError{Status: a.status, RequestID: a.requestID}
	_ = json.Unmarshal(a.body, &e) // an odd body still leaves the status
	return e
}

// do sends one signed request and returns the verified answer. 5xx,
// transport errors, timeouts and unverifiable answers are errors: the caller
// cannot know what happened.
func (c *Channel) do(ctx context.Context, method, path string, payload any) (answer, error) {
	var body []byte
	if payload != nil {
		var err error
		if body, err = json.Marshal(payload); err != nil {
			return answer{}, fmt.Errorf("encode request: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, bytes.NewReader(body))
	if err != nil {
		return answer{}, fmt.Errorf("build request: %w", err)
	}
	// The signature covers the request target exactly as it goes on the wire.
	auth, err := c.authorization(method, req.URL.RequestURI(), body)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "diamondd-wechatpay/1")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("call %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return answer{}, fmt.Errorf("read answer: %w", err)
	}
	if len(respBody) > maxResponse {
		return answer{}, errors.New("answer too large")
	}
	a := answer{status: resp.StatusCode, body: respBody, requestID: resp.Header.Get("Request-ID")}
	if resp.StatusCode >= 500 {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, a.apiError())
	}
	if err := c.verify(resp.Header, respBody); err != nil {
		return answer{}, fmt.Errorf("%s %s: HTTP %d answer: %w", method, path, resp.StatusCode, err)
	}
	return a, nil
}

// QueryPayment asks GET /v3/pay/transactions/out-trade-no/{id}.
func (c *Channel) QueryPayment(ctx context.Context, orderID string) (channel.PaymentStatus, error) {
	path := "/v3/pay/transactions/out-trade-no/" + url.PathEscape(orderID) + "?mchid=" + url.QueryEscape(c.mchID)
	a, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return channel.PaymentStatus{}, fmt.Errorf("wechatpay: query payment %s: %w", orderID, err)
	}
	if a.status == http.StatusNotFound {
		if e := a.apiError(); e.Code == "ORDER_NOT_EXIST" || e.Code == "RESOURCE_NOT_EXISTS" {
			return channel.PaymentStatus{State: channel.PaymentNotFound}, nil
		}
	}
	if a.status != http.StatusOK {
		return channel.PaymentStatus{}, fmt.Errorf("wechatpay: query payment %s: %w", orderID, a.apiError())
	}
	var t transaction
	if err := a.decode(&t); err != nil {
		return channel.PaymentStatus{}, fmt.Errorf("wechatpay: query payment %s: decode: %w", orderID, err)
	}
	if t.OutTradeNo != orderID || t.MchID != c.mchID {
		return channel.PaymentStatus{}, fmt.Errorf("wechatpay: query payment %s: answer is for %q of %q", orderID, t.OutTradeNo, t.MchID)
	}
	st := channel.PaymentStatus{TradeNo: t.TransactionID}
	if t.Amount != nil && t.Amount.Total != nil {
		st.AmountFen = *t.Amount.Total
	}
	switch t.TradeState {
	case "SUCCESS":
		st.State = channel.PaymentPaid
		st.PaidAt = parseTime(t.SuccessTime, st.PaidAt)
	case "REFUND":
		// "转入退款": paid, then a refund was made. The transaction does not
		// say how much; only the refunds, by their numbers, would.
		st.State = channel.PaymentRefunded
		st.PaidAt = parseTime(t.SuccessTime, st.PaidAt)
	case "NOTPAY", "USERPAYING":
		st.State = channel.PaymentPending
	case "CLOSED", "REVOKED":
		st.State = channel.PaymentClosed
	case "PAYERROR":
		// The attempt failed but the order is not closed: pending until we
		// close it, which also settles whether it can still be paid.
		st.State = channel.PaymentPending
	default:
		return channel.PaymentStatus{}, fmt.Errorf("wechatpay: query payment %s: unknown trade_state %q", orderID, t.TradeState)
	}
	return st, nil
}

// ClosePayment closes an unpaid order (POST …/close, 204). WeChat refuses
// to close a paid order with ORDERPAID: that is ErrAlreadyPaid. An order
// WeChat does not know can never be paid, so it counts as closed.
func (c *Channel) ClosePayment(ctx context.Context, orderID string) error {
	path := "/v3/pay/transactions/out-trade-no/" + url.PathEscape(orderID) + "/close"
	a, err := c.do(ctx, http.MethodPost, path, map[string]string{"mchid": c.mchID})
	if err != nil {
		return fmt.Errorf("wechatpay: close payment %s: %w", orderID, err)
	}
	if a.status == http.StatusNoContent || a.status == http.StatusOK {
		return nil
	}
	e := a.apiError()
	switch e.Code {
	case "ORDERPAID", "ORDER_PAID":
		return fmt.Errorf("wechatpay: close payment %s: %w (%v)", orderID, channel.ErrAlreadyPaid, e)
	case "ORDERCLOSED", "ORDER_CLOSED", "ORDER_NOT_EXIST":
		return nil
	}
	return fmt.Errorf("wechatpay: close payment %s: %w", orderID, e)
}

type refundAmount struct {
	Refund   int64  `json:"refund"`
	Total    int64  `json:"total"`
	Currency string `json:"currency"`
}

type refundRequest struct {
	TransactionID string       `json:"transaction_id,omitempty"`
	OutTradeNo    string       `json:"out_trade_no"`
	OutRefundNo   string       `json:"out_refund_no"`
	Reason        string       `json:"reason,omitempty"`
	NotifyURL     string       `json:"notify_url"`
	Amount        refundAmount `json:"amount"`
}

// refund is the API's refund object (note "status", where the notification
// says "refund_status").
type refund struct {
	RefundID    string `json:"refund_id"`
	OutRefundNo string `json:"out_refund_no"`
	OutTradeNo  string `json:"out_trade_no"`
	Status      string `json:"status"`
	Amount      struct {
		Refund int64 `json:"refund"`
	} `json:"amount"`
}

func (r refund) status() (channel.RefundStatus, error) {
	st := channel.RefundStatus{ChannelRefundID: r.RefundID, AmountFen: r.Amount.Refund}
	switch r.Status {
	case "SUCCESS":
		st.State = channel.RefundSucceeded
	case "PROCESSING":
		st.State = channel.RefundProcessing
	case "ABNORMAL":
		// Not final: the money could not reach the payer's account and can be
		// rerouted (by the payer or in the merchant console).
		st.State = channel.RefundProcessing
		st.Reason = "ABNORMAL: refund needs manual handling"
	case "CLOSED":
		st.State = channel.RefundFailed
		st.Reason = "refund closed by WeChat Pay"
	default:
		return channel.RefundStatus{}, fmt.Errorf("unknown refund status %q", r.Status)
	}
	return st, nil
}

// Refund submits POST /v3/refund/domestic/refunds with out_refund_no = our
// refund id: WeChat refunds one number once, however often it is sent.
func (c *Channel) Refund(ctx context.Context, rr channel.RefundRequest) (channel.RefundStatus, error) {
	if rr.OrderID == "" || rr.RefundID == "" {
		return channel.RefundStatus{}, errors.New("wechatpay: refund: order id and refund id are required")
	}
	if rr.AmountFen <= 0 || rr.TotalFen < rr.AmountFen {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: refund %s: amount %d of total %d fen", rr.RefundID, rr.AmountFen, rr.TotalFen)
	}
	req := refundRequest{
		TransactionID: rr.TradeNo,
		OutTradeNo:    rr.OrderID,
		OutRefundNo:   rr.RefundID,
		Reason:        rr.Reason,
		NotifyURL:     c.notifyURL,
		Amount:        refundAmount{Refund: rr.AmountFen, Total: rr.TotalFen, Currency: "CNY"},
	}
	a, err := c.do(ctx, http.MethodPost, "/v3/refund/domestic/refunds", req)
	if err != nil {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: refund %s: %w", rr.RefundID, err)
	}
	if a.status != http.StatusOK {
		e := a.apiError()
		if refusal(e) {
			return channel.RefundStatus{State: channel.RefundFailed, Reason: e.Code + ": " + e.Message}, nil
		}
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: refund %s: %w", rr.RefundID, e)
	}
	var r refund
	if err := a.decode(&r); err != nil {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: refund %s: decode: %w", rr.RefundID, err)
	}
	if r.OutRefundNo != rr.RefundID {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: refund %s: answer is for %q", rr.RefundID, r.OutRefundNo)
	}
	st, err := r.status()
	if err != nil {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: refund %s: %w", rr.RefundID, err)
	}
	return st, nil
}

// refusal tells a definite "no" (400/403/404 business errors: bad request,
// amount too large, order not found or unpaid, balance insufficient) from
// answers that leave the outcome open: 401 (our signature refused), 429 and
// the codes WeChat documents as "retry with the same number".
func refusal(e apiError) bool {
	switch e.Status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound:
	default:
		return false
	}
	switch e.Code {
	case "SYSTEM_ERROR", "FREQUENCY_LIMITED", "SIGN_ERROR", "":
		return false
	}
	return true
}

// QueryRefund asks GET /v3/refund/domestic/refunds/{out_refund_no}.
func (c *Channel) QueryRefund(ctx context.Context, orderID, refundID string) (channel.RefundStatus, error) {
	a, err := c.do(ctx, http.MethodGet, "/v3/refund/domestic/refunds/"+url.PathEscape(refundID), nil)
	if err != nil {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: query refund %s: %w", refundID, err)
	}
	if a.status == http.StatusNotFound {
		if e := a.apiError(); e.Code == "RESOURCE_NOT_EXISTS" || e.Code == "ORDER_NOT_EXIST" {
			return channel.RefundStatus{State: channel.RefundNotFound}, nil
		}
	}
	if a.status != http.StatusOK {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: query refund %s: %w", refundID, a.apiError())
	}
	var r refund
	if err := a.decode(&r); err != nil {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: query refund %s: decode: %w", refundID, err)
	}
	if r.OutRefundNo != refundID || (orderID != "" && r.OutTradeNo != "" && r.OutTradeNo != orderID) {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: query refund %s: answer is for %q of order %q", refundID, r.OutRefundNo, r.OutTradeNo)
	}
	st, err := r.status()
	if err != nil {
		return channel.RefundStatus{}, fmt.Errorf("wechatpay: query refund %s: %w", refundID, err)
	}
	return st, nil
}
