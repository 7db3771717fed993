package alipaytest

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
	"github.com/diamondd/diamondd/internal/money"
)

// node is a gateway response node; json.Marshal sorts the keys.
type node map[string]string

func success() node { return node{"code": "10000", "msg": "Success"} }

func bizError(subCode, subMsg string) node {
	return node{"code": "40004", "msg": "Business Failed", "sub_code": subCode, "sub_msg": subMsg}
}

func argError(subCode, subMsg string) node {
	return node{"code": "40002", "msg": "Invalid Arguments", "sub_code": subCode, "sub_msg": subMsg}
}

func (s *Server) handleGateway(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	p := r.Form
	method := p.Get("method")
	respKey := strings.ReplaceAll(method, ".", "_") + "_response"

	fault := s.calls.Take(method)
	if err := s.verifyRequest(p); err != nil {
		s.writeSigned(w, respKey, argError("isv.invalid-signature", err.Error()), false)
		return
	}
	if fault != nil && fault.BeforeApply {
		if !s.sleep(r, fault.Delay) {
			return
		}
		status := fault.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, "<html>fault injected before apply</html>", status)
		return
	}

	var biz struct {
		OutTradeNo   string `json:"out_trade_no"`
		TradeNo      string `json:"trade_no"`
		RefundAmount string `json:"refund_amount"`
		OutRequestNo string `json:"out_request_no"`
	}
	var resp node
	if err := json.Unmarshal([]byte(p.Get("biz_content")), &biz); err != nil {
		resp = argError("isv.invalid-parameter", "biz_content is not JSON")
	} else {
		s.mu.Lock()
		t := s.trades[biz.OutTradeNo]
		if biz.TradeNo != "" { // trade_no wins when both are given
			t = s.trades[s.byTradeNo[biz.TradeNo]]
		}
		switch method {
		case MethodQuery:
			resp = s.query(t)
		case MethodClose:
			resp = s.close(t)
		case MethodRefund:
			resp = s.refund(t, biz.RefundAmount, biz.OutRequestNo)
		case MethodRefundQuery:
			resp = s.refundQuery(t, biz.OutRequestNo)
		default:
			respKey = "error_response"
			resp = argError("isv.invalid-method", "unknown method "+method)
		}
		s.mu.Unlock()
	}

	if fault != nil {
		for _, f := range fault.Omit {
			delete(resp, f)
		}
		if !s.sleep(r, fault.Delay) {
			return
		}
		if fault.Status != 0 {
			http.Error(w, "<html>fault injected</html>", fault.Status)
			return
		}
	}
	s.writeSigned(w, respKey, resp, fault != nil && fault.BadSignature)
}

// sleep waits d unless the client goes away or the fake closes first.
func (s *Server) sleep(r *http.Request, d time.Duration) bool {
	return channeltest.Sleep(r.Context(), d, s.notifier.Closed())
}

// writeSigned answers {"<key>":<node>,"sign":"…"} with the signature over
// the node's exact bytes, as Alipay does.
func (s *Server) writeSigned(w http.ResponseWriter, key string, n node, badSignature bool) {
	raw, err := json.Marshal(n)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	signed := raw
	if badSignature {
		signed = append(append([]byte(nil), raw...), ' ')
	}
	keyJSON, _ := json.Marshal(key)
	sigJSON, _ := json.Marshal(channeltest.SignSHA256(s.alipayKey, signed))
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	out := make([]byte, 0, len(raw)+400)
	out = append(out, '{')
	out = append(out, keyJSON...)
	out = append(out, ':')
	out = append(out, raw...)
	out = append(out, `,"sign":`...)
	out = append(out, sigJSON...)
	out = append(out, '}')
	_, _ = w.Write(out)
}

func notExist() node { return bizError("ACQ.TRADE_NOT_EXIST", "交易不存在") }

func (s *Server) query(t *trade) node {
	if t == nil {
		return notExist()
	}
	n := success()
	n["trade_no"] = t.TradeNo
	n["out_trade_no"] = t.OutTradeNo
	n["buyer_logon_id"] = "159****5620"
	n["trade_status"] = t.Status
	n["total_amount"] = money.FormatFen(t.TotalFen)
	if !t.PaidAt.IsZero() {
		n["buyer_pay_amount"] = money.FormatFen(t.TotalFen)
		n["send_pay_date"] = t.PaidAt.In(beijing).Format(timeLayout)
	}
	return n
}

func (s *Server) close(t *trade) node {
	if t == nil {
		return notExist()
	}
	if t.Status != StatusWaitBuyerPay {
		return bizError("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
	}
	t.Status = StatusTradeClosed
	t.ClosedAt = s.opts.Now()
	s.notifyLocked(t, nil)
	n := success()
	n["trade_no"] = t.TradeNo
	n["out_trade_no"] = t.OutTradeNo
	return n
}

func (s *Server) refund(t *trade, amount, requestNo string) node {
	if t == nil {
		return notExist()
	}
	fen, err := money.ParseYuan(amount)
	if err != nil || fen <= 0 {
		return argError("isv.invalid-parameter", "refund_amount "+amount)
	}
	if requestNo == "" {
		requestNo = t.OutTradeNo // Alipay's default for a refund without a number
	}
	answer := func(fundChange string, thisRefund int64) node {
		n := success()
		n["trade_no"] = t.TradeNo
		n["out_trade_no"] = t.OutTradeNo
		n["buyer_logon_id"] = "159****5620"
		n["fund_change"] = fundChange
		n["refund_fee"] = money.FormatFen(t.RefundedFen)
		n["send_back_fee"] = money.FormatFen(thisRefund)
		n["gmt_refund_pay"] = s.opts.Now().In(beijing).Format(timeLayout)
		return n
	}
	// The refund number is checked before the trade's state: a retried full
	// refund finds the trade closed by itself and must still answer success.
	if r, ok := t.refunds[requestNo]; ok {
		if r.AmountFen != fen {
			return bizError("ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致")
		}
		return answer("N", 0)
	}
	if t.Status != StatusTradeSuccess {
		return bizError("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
	}
	if t.RefundedFen+fen > t.TotalFen {
		return bizError("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
	}
	r := &Refund{OutRequestNo: requestNo, AmountFen: fen, At: s.opts.Now()}
	t.refunds[requestNo] = r
	t.Refunds = append(t.Refunds, *r)
	t.RefundedFen += fen
	if t.RefundedFen == t.TotalFen {
		t.Status = StatusTradeClosed
		t.ClosedAt = r.At
	}
	s.notifyLocked(t, r)
	return answer("Y", fen)
}

func (s *Server) refundQuery(t *trade, requestNo string) node {
	if t == nil {
		return notExist()
	}
	n := success()
	n["trade_no"] = t.TradeNo
	n["out_trade_no"] = t.OutTradeNo
	r, ok := t.refunds[requestNo]
	if !ok {
		return n // Alipay answers success without refund fields
	}
	n["out_request_no"] = r.OutRequestNo
	n["total_amount"] = money.FormatFen(t.TotalFen)
	n["refund_amount"] = money.FormatFen(r.AmountFen)
	n["refund_status"] = "REFUND_SUCCESS"
	n["gmt_refund_pay"] = r.At.In(beijing).Format(timeLayout)
	return n
}
