package alipay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/money"
)

// maxResponse bounds what is read from the gateway; real answers are a few KiB.
const maxResponse = 1 << 20

// result holds the fields every gateway response node has.
type result struct {
	Code    string `json:"code"`
	Msg     string `json:"msg"`
	SubCode string `json:"sub_code"`
	SubMsg  string `json:"sub_msg"`
}

func (r result) ok() bool { return r.Code == "10000" }

func (r result) String() string {
	s := "code " + r.Code + " " + r.Msg
	if r.SubCode != "" {
		s += ": " + r.SubCode + " " + r.SubMsg
	}
	return s
}

// call posts one signed request to the gateway and decodes the verified
// response node into out. Any error means the outcome is unknown.
func (c *Channel) call(ctx context.Context, method string, biz any, out any) error {
	params, err := c.requestParams(method, biz)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.gateway, strings.NewReader(params.Encode()))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("call gateway: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if len(body) > maxResponse {
		return errors.New("response too large")
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway answered HTTP %d", resp.StatusCode)
	}
	node, err := c.verifyResponse(method, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(node, out); err != nil {
		return fmt.Errorf("decode %s response: %w", method, err)
	}
	return nil
}

// verifyResponse returns the raw "<method>_response" node after checking
// Alipay's signature over exactly those bytes. json.RawMessage keeps the
// node's bytes as received, which is what Alipay signed.
func (c *Channel) verifyResponse(method string, body []byte) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("response is not a JSON object: %w", err)
	}
	node, ok := top[strings.ReplaceAll(method, ".", "_")+"_response"]
	if !ok {
		// Gateway-level failures (unknown app, bad method) come as error_response.
		if node, ok = top["error_response"]; !ok {
			return nil, fmt.Errorf("response has no %s node", method)
		}
	}
	var sig string
	if raw, ok := top["sign"]; ok {
		if err := json.Unmarshal(raw, &sig); err != nil {
			return nil, fmt.Errorf("response sign is not a string: %w", err)
		}
	}
	if err := verify(c.alipayKey, node, sig); err != nil {
		// Unsigned error answers exist (e.g. our own request signature was
		// refused); they are still unverified, so the outcome stays unknown.
		return nil, fmt.Errorf("unverifiable response: %v", err)
	}
	return node, nil
}

type tradeRef struct {
	OutTradeNo string `json:"out_trade_no"`
}

type queryResult struct {
	result
	TradeNo      string `json:"trade_no"`
	OutTradeNo   string `json:"out_trade_no"`
	TradeStatus  string `json:"trade_status"`
	TotalAmount  string `json:"total_amount"`
	SendPayDate  string `json:"send_pay_date"`
	BuyerPayAmnt string `json:"buyer_pay_amount"`
}

// QueryPayment asks alipay.trade.query for our order. ACQ.TRADE_NOT_EXIST
// (the payer never opened the cashier) is PaymentNotFound.
func (c *Channel) QueryPayment(ctx context.Context, orderID string) (channel.PaymentStatus, error) {
	var r queryResult
	if err := c.call(ctx, "alipay.trade.query", tradeRef{OutTradeNo: orderID}, &r); err != nil {
		return channel.PaymentStatus{}, fmt.Errorf("alipay: query payment %s: %w", orderID, err)
	}
	if !r.ok() {
		if r.SubCode == "ACQ.TRADE_NOT_EXIST" {
			return channel.PaymentStatus{State: channel.PaymentNotFound}, nil
		}
		return channel.PaymentStatus{}, fmt.Errorf("alipay: query payment %s: %s", orderID, r)
	}
	if r.OutTradeNo != "" && r.OutTradeNo != orderID {
		return channel.PaymentStatus{}, fmt.Errorf("alipay: query payment %s: answer is for %q", orderID, r.OutTradeNo)
	}
	st := channel.PaymentStatus{TradeNo: r.TradeNo}
	if r.TotalAmount != "" {
		fen, err := money.ParseYuan(r.TotalAmount)
		if err != nil {
			return channel.PaymentStatus{}, fmt.Errorf("alipay: query payment %s: total_amount: %w", orderID, err)
		}
		st.AmountFen = fen
	}
	paidAt, paid := parseTime(r.SendPayDate)
	switch r.TradeStatus {
	case "WAIT_BUYER_PAY":
		st.State = channel.PaymentPending
	case "TRADE_SUCCESS", "TRADE_FINISHED":
		st.State = channel.PaymentPaid
		st.PaidAt = paidAt
	case "TRADE_CLOSED":
		// A fully refunded trade is TRADE_CLOSED too (§1.5); it still
		// carries the date it was paid. Only a full refund closes a paid
		// trade, so all of it went back.
		if paid {
			st.State = channel.PaymentRefunded
			st.PaidAt = paidAt
			st.RefundedFen = st.AmountFen
		} else {
			st.State = channel.PaymentClosed
		}
	default:
		return channel.PaymentStatus{}, fmt.Errorf("alipay: query payment %s: unknown trade_status %q", orderID, r.TradeStatus)
	}
	return st, nil
}

// ClosePayment closes an unpaid trade with alipay.trade.close. A trade
// Alipay never saw is as good as closed: it cannot be paid after our order
// expired because the order string carried time_expire.
func (c *Channel) ClosePayment(ctx context.Context, orderID string) error {
	var r result
	if err := c.call(ctx, "alipay.trade.close", tradeRef{OutTradeNo: orderID}, &r); err != nil {
		return fmt.Errorf("alipay: close payment %s: %w", orderID, err)
	}
	switch {
	case r.ok(), r.SubCode == "ACQ.TRADE_NOT_EXIST":
		return nil
	case r.SubCode == "ACQ.TRADE_STATUS_ERROR", r.SubCode == "ACQ.REASON_TRADE_STATUS_INVALID":
		// Not waiting for payment: either already closed or paid. Only a
		// query tells which, and "paid" must reach the caller.
		st, err := c.QueryPayment(ctx, orderID)
		if err != nil {
			return fmt.Errorf("alipay: close payment %s: %s, then: %w", orderID, r.SubCode, err)
		}
		switch st.State {
		case channel.PaymentPaid, channel.PaymentRefunded:
			return fmt.Errorf("alipay: close payment %s: %w", orderID, channel.ErrAlreadyPaid)
		case channel.PaymentClosed, channel.PaymentNotFound:
			return nil
		}
		return fmt.Errorf("alipay: close payment %s: %s but the trade is %s", orderID, r.SubCode, st.State)
	default:
		return fmt.Errorf("alipay: close payment %s: %s", orderID, r)
	}
}

type refundBiz struct {
	OutTradeNo   string `json:"out_trade_no"`
	TradeNo      string `json:"trade_no,omitempty"`
	RefundAmount string `json:"refund_amount"`
	OutRequestNo string `json:"out_request_no"`
	RefundReason string `json:"refund_reason,omitempty"`
}

type refundResult struct {
	result
	TradeNo    string `json:"trade_no"`
	OutTradeNo string `json:"out_trade_no"`
	FundChange string `json:"fund_change"`
	RefundFee  string `json:"refund_fee"`
}

// Refund submits alipay.trade.refund with out_request_no = our refund id, so
// a retry of the same refund never pays twice. fund_change=Y means this call
// moved the money; N means Alipay already knew the request (a retry) or has
// not settled it, so it is processing until QueryRefund confirms.
func (c *Channel) Refund(ctx context.Context, rr channel.RefundRequest) (channel.RefundStatus, error) {
	if rr.OrderID == "" || rr.RefundID == "" {
		return channel.RefundStatus{}, errors.New("alipay: refund: order id and refund id are required")
	}
	if rr.AmountFen <= 0 {
		return channel.RefundStatus{}, fmt.Errorf("alipay: refund %s: amount %d fen is not positive", rr.RefundID, rr.AmountFen)
	}
	biz := refundBiz{
		OutTradeNo:   rr.OrderID,
		TradeNo:      rr.TradeNo,
		RefundAmount: money.FormatFen(rr.AmountFen),
		OutRequestNo: rr.RefundID,
		RefundReason: rr.Reason,
	}
	var r refundResult
	if err := c.call(ctx, "alipay.trade.refund", biz, &r); err != nil {
		return channel.RefundStatus{}, fmt.Errorf("alipay: refund %s: %w", rr.RefundID, err)
	}
	if !r.ok() {
		if refusal(r.result) {
			return channel.RefundStatus{State: channel.RefundFailed, Reason: r.String()}, nil
		}
		return channel.RefundStatus{}, fmt.Errorf("alipay: refund %s: %s", rr.RefundID, r)
	}
	st := channel.RefundStatus{State: channel.RefundProcessing, AmountFen: rr.AmountFen}
	if r.FundChange == "Y" {
		st.State = channel.RefundSucceeded
	}
	return st, nil
}

// refusal tells a definite "no" (code 40004, business failure) from answers
// that leave the outcome open: system errors, and a repeated out_request_no
// with different content, where an earlier request under that number may
// have been paid.
func refusal(r result) bool {
	if r.Code != "40004" {
		return false
	}
	switch {
	case r.SubCode == "ACQ.SYSTEM_ERROR", r.SubCode == "aop.ACQ.SYSTEM_ERROR",
		r.SubCode == "ACQ.DISCORDANT_REPEAT_REQUEST", strings.HasPrefix(r.SubCode, "isp."):
		return false
	}
	return true
}

type refundQueryBiz struct {
	OutTradeNo   string   `json:"out_trade_no"`
	OutRequestNo string   `json:"out_request_no"`
	QueryOptions []string `json:"query_options,omitempty"`
}

type refundQueryResult struct {
	result
	OutRequestNo string `json:"out_request_no"`
	RefundAmount string `json:"refund_amount"`
	RefundStatus string `json:"refund_status"`
	GmtRefundPay string `json:"gmt_refund_pay"`
}

// QueryRefund asks alipay.trade.fastpay.refund.query. Alipay answers success
// with no refund fields when it has no such refund (yet): that is
// RefundNotFound, and resubmitting the same refund id is safe.
func (c *Channel) QueryRefund(ctx context.Context, orderID, refundID string) (channel.RefundStatus, error) {
	var r refundQueryResult
	biz := refundQueryBiz{OutTradeNo: orderID, OutRequestNo: refundID, QueryOptions: []string{"gmt_refund_pay"}}
	if err := c.call(ctx, "alipay.trade.fastpay.refund.query", biz, &r); err != nil {
		return channel.RefundStatus{}, fmt.Errorf("alipay: query refund %s: %w", refundID, err)
	}
	if !r.ok() {
		if r.SubCode == "ACQ.TRADE_NOT_EXIST" {
			return channel.RefundStatus{State: channel.RefundNotFound}, nil
		}
		return channel.RefundStatus{}, fmt.Errorf("alipay: query refund %s: %s", refundID, r)
	}
	if r.RefundAmount == "" && r.RefundStatus == "" {
		return channel.RefundStatus{State: channel.RefundNotFound}, nil
	}
	if r.OutRequestNo != "" && r.OutRequestNo != refundID {
		return channel.RefundStatus{}, fmt.Errorf("alipay: query refund %s: answer is for %q", refundID, r.OutRequestNo)
	}
	st := channel.RefundStatus{}
	if r.RefundAmount != "" {
		fen, err := money.ParseYuan(r.RefundAmount)
		if err != nil {
			return channel.RefundStatus{}, fmt.Errorf("alipay: query refund %s: refund_amount: %w", refundID, err)
		}
		st.AmountFen = fen
	}
	switch r.RefundStatus {
	case "REFUND_SUCCESS":
		st.State = channel.RefundSucceeded
	case "":
		// No status (§1.4): under the older contract a refund is only
		// returned once it succeeded, under the newer one an echoed
		// refund_amount alone means it was not made. The time the money
		// was paid back (gmt_refund_pay, asked for above) is what only a
		// succeeded refund has; without it the refund counts as not found,
		// so the caller submits it again under the same out_request_no,
		// which Alipay applies at most once (polling alone would wait for
		// a refund that will never come).
		st.State = channel.RefundNotFound
		if r.GmtRefundPay != "" {
			st.State = channel.RefundSucceeded
		}
	default:
		st.State = channel.RefundProcessing
	}
	return st, nil
}
