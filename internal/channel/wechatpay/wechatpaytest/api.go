package wechatpaytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
)

type apiErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type handler func(r *http.Request, body []byte) (int, any)

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v3/pay/transactions/app", s.op(OpPrepay, s.prepay))
	mux.HandleFunc("GET /v3/pay/transactions/out-trade-no/{id}", s.op(OpQuery, s.query))
	mux.HandleFunc("POST /v3/pay/transactions/out-trade-no/{id}/close", s.op(OpClose, s.closeOrder))
	mux.HandleFunc("POST /v3/refund/domestic/refunds", s.op(OpRefund, s.refund))
	mux.HandleFunc("GET /v3/refund/domestic/refunds/{no}", s.op(OpQueryRefund, s.queryRefund))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusNotFound, apiErr{"NOT_FOUND", "no such API in the fake"}, false)
	})
	return mux
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any, bad bool) {
	var body []byte
	if v != nil {
		body, _ = json.Marshal(v)
	}
	s.writeSigned(w, status, body, bad)
}

// op wraps a handler with call counting, the merchant signature check and
// fault injection; the handler runs under the lock.
func (s *Server) op(name string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		fault := s.calls.Take(name)
		if err := s.verifyAuth(r, body); err != nil {
			s.writeJSON(w, http.StatusUnauthorized, apiErr{"SIGN_ERROR", err.Error()}, false)
			return
		}
		failure := func(f *Fault) bool {
			if !channeltest.Sleep(r.Context(), f.Delay, s.notifier.Closed()) {
				return true
			}
			if f.Status == 0 {
				return false
			}
			code := f.Code
			if code == "" {
				code = "SYSTEM_ERROR"
			}
			s.writeJSON(w, f.Status, apiErr{code, "fault injected"}, f.BadSignature)
			return true
		}
		if fault != nil && fault.BeforeApply {
			if fault.Status == 0 {
				fault.Status = http.StatusInternalServerError
			}
			failure(fault)
			return
		}
		s.mu.Lock()
		status, v := h(r, body)
		s.mu.Unlock()
		if fault != nil && failure(fault) {
			return
		}
		s.writeJSON(w, status, v, fault != nil && fault.BadSignature)
	}
}

func bad(code, msg string) (int, any) { return http.StatusBadRequest, apiErr{code, msg} }

func (s *Server) prepay(r *http.Request, body []byte) (int, any) {
	var req struct {
		AppID       string `json:"appid"`
		MchID       string `json:"mchid"`
		Description string `json:"description"`
		OutTradeNo  string `json:"out_trade_no"`
		TimeExpire  string `json:"time_expire"`
		NotifyURL   string `json:"notify_url"`
		Amount      struct {
			Total    int64  `json:"total"`
			Currency string `json:"currency"`
		} `json:"amount"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return bad("PARAM_ERROR", "body is not JSON: "+err.Error())
	}
	switch {
	case req.MchID != s.opts.MchID || req.AppID != s.opts.AppID:
		return bad("APPID_MCHID_NOT_MATCH", "appid 和 mch_id 不匹配")
	case req.OutTradeNo == "" || req.Description == "" || req.NotifyURL == "":
		return bad("PARAM_ERROR", "out_trade_no, description and notify_url are required")
	case req.Amount.Total <= 0 || (req.Amount.Currency != "" && req.Amount.Currency != "CNY"):
		return bad("PARAM_ERROR", "amount")
	}
	if o, ok := s.orders[req.OutTradeNo]; ok {
		switch {
		case o.TradeState == StateSuccess || o.TradeState == StateRefund:
			return bad("ORDERPAID", "该订单已支付")
		case o.TradeState == StateClosed:
			return bad("ORDERCLOSED", "当前订单已关闭，请重新下单")
		case o.TotalFen != req.Amount.Total || o.Description != req.Description:
			return bad("INVALID_REQUEST", "201 商户订单号重复")
		}
		return http.StatusOK, map[string]string{"prepay_id": o.PrepayID}
	}
	now := s.opts.Now()
	o := &order{Order: Order{
		OutTradeNo:  req.OutTradeNo,
		PrepayID:    "wx" + now.In(beijing).Format("02150405") + channeltest.RandomHex(12),
		TradeState:  StateNotPay,
		Description: req.Description,
		NotifyURL:   req.NotifyURL,
		TimeExpire:  req.TimeExpire,
		TotalFen:    req.Amount.Total,
		CreatedAt:   now,
	}}
	s.orders[o.OutTradeNo] = o
	return http.StatusOK, map[string]string{"prepay_id": o.PrepayID}
}

func (s *Server) query(r *http.Request, _ []byte) (int, any) {
	if r.URL.Query().Get("mchid") != s.opts.MchID {
		return bad("PARAM_ERROR", "mchid")
	}
	o, ok := s.orders[r.PathValue("id")]
	if !ok {
		return http.StatusNotFound, apiErr{"ORDER_NOT_EXIST", "订单不存在"}
	}
	return http.StatusOK, json.RawMessage(s.transactionJSON(o))
}

func (s *Server) closeOrder(r *http.Request, body []byte) (int, any) {
	var req struct {
		MchID string `json:"mchid"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.MchID != s.opts.MchID {
		return bad("PARAM_ERROR", "mchid")
	}
	o, ok := s.orders[r.PathValue("id")]
	if !ok {
		return http.StatusNotFound, apiErr{"ORDER_NOT_EXIST", "订单不存在"}
	}
	switch o.TradeState {
	case StateSuccess, StateRefund:
		return bad("ORDERPAID", "订单已支付")
	}
	o.TradeState = StateClosed
	return http.StatusNoContent, nil
}

func (s *Server) refundJSON(r *Refund) map[string]any {
	o := s.orders[r.OutTradeNo]
	m := map[string]any{
		"refund_id":             r.RefundID,
		"out_refund_no":         r.OutRefundNo,
		"transaction_id":        r.TransactionID,
		"out_trade_no":          r.OutTradeNo,
		"channel":               "ORIGINAL",
		"user_received_account": "支付用户零钱",
		"create_time":           rfc3339(r.CreatedAt),
		"status":                r.Status,
		"funds_account":         "AVAILABLE",
		"amount": map[string]any{"total": r.TotalFen, "refund": r.AmountFen, "payer_total": o.TotalFen,
			"payer_refund": r.AmountFen, "settlement_refund": r.AmountFen, "settlement_total": o.TotalFen,
			"discount_refund": 0, "currency": "CNY"},
	}
	if !r.SuccessAt.IsZero() {
		m["success_time"] = rfc3339(r.SuccessAt)
	}
	return m
}

func (s *Server) refund(_ *http.Request, body []byte) (int, any) {
	var req struct {
		TransactionID string `json:"transaction_id"`
		OutTradeNo    string `json:"out_trade_no"`
		OutRefundNo   string `json:"out_refund_no"`
		Reason        string `json:"reason"`
		NotifyURL     string `json:"notify_url"`
		Amount        struct {
			Refund   int64  `json:"refund"`
			Total    int64  `json:"total"`
			Currency string `json:"currency"`
		} `json:"amount"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return bad("PARAM_ERROR", "body is not JSON: "+err.Error())
	}
	if req.OutRefundNo == "" || req.Amount.Refund <= 0 || req.Amount.Currency != "CNY" {
		return bad("PARAM_ERROR", "out_refund_no, amount.refund and amount.currency CNY are required")
	}
	id := req.OutTradeNo
	if req.TransactionID != "" { // transaction_id wins when both are given
		id = s.byTxn[req.TransactionID]
	}
	o, ok := s.orders[id]
	if !ok {
		return http.StatusNotFound, apiErr{"RESOURCE_NOT_EXISTS", "订单不存在"}
	}
	// The refund number is looked at first: "同一退款单号多次请求只退一笔".
	if r, ok := s.refunds[req.OutRefundNo]; ok {
		if r.OutTradeNo != o.OutTradeNo || r.AmountFen != req.Amount.Refund {
			return bad("INVALID_REQUEST", "退款单号重复，请求参数与原请求不一致")
		}
		return http.StatusOK, s.refundJSON(r)
	}
	switch {
	case o.TradeState != StateSuccess && o.TradeState != StateRefund:
		return bad("INVALID_REQUEST", "订单状态不正确，不能退款")
	case req.Amount.Total != o.TotalFen:
		return bad("PARAM_ERROR", "订单金额与原订单不一致")
	case o.RefundedFen+req.Amount.Refund > o.TotalFen:
		return bad("INVALID_REQUEST", "申请退款金额超过订单可退金额")
	}
	now := s.opts.Now()
	s.seq++
	r := &Refund{
		OutRefundNo:   req.OutRefundNo,
		RefundID:      "50" + now.Format("20060102") + fmt.Sprintf("%019d", s.seq),
		OutTradeNo:    o.OutTradeNo,
		TransactionID: o.TransactionID,
		Status:        RefundProcessing,
		Reason:        req.Reason,
		NotifyURL:     req.NotifyURL,
		AmountFen:     req.Amount.Refund,
		TotalFen:      req.Amount.Total,
		CreatedAt:     now,
	}
	s.refunds[r.OutRefundNo] = r
	o.refundNos = append(o.refundNos, r.OutRefundNo)
	o.RefundedFen += r.AmountFen
	o.TradeState = StateRefund
	if !s.opts.RefundsPending {
		r.Status = RefundSuccess
		r.SuccessAt = now
		_, _ = s.notifyRefundLocked(r)
	}
	return http.StatusOK, s.refundJSON(r)
}

func (s *Server) queryRefund(r *http.Request, _ []byte) (int, any) {
	ref, ok := s.refunds[r.PathValue("no")]
	if !ok {
		return http.StatusNotFound, apiErr{"RESOURCE_NOT_EXISTS", "退款单不存在"}
	}
	return http.StatusOK, s.refundJSON(ref)
}
