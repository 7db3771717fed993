package wechatpay_test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/wechatpay"
	"github.com/diamondd/diamondd/internal/channel/wechatpay/wechatpaytest"
)

const (
	docSerial   = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	docAPIv3Key = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
)

// The decrypted transaction of the payment-notification example in WeChat
// Pay's documentation (chapter3_2_5), as published.
const docTransaction = `{
    "transaction_id":"1217752501201407033233368018",
    "amount":{"payer_total":100,"total":100,"currency":"CNY","payer_currency":"CNY"},
    "mchid":"1230000109",
    "trade_state":"SUCCESS",
    "bank_type":"CMC",
    "promotion_detail":[{"amount":100,"wechatpay_contribute":0,"coupon_id":"109519","scope":"GLOBAL","merchant_contribute":0,"name":"单品惠-6","other_contribute":0,"currency":"CNY","stock_id":"931386","goods_detail":[{"goods_remark":"商品备注信息","quantity":1,"discount_amount":1,"goods_id":"M1006","unit_price":100},{"goods_remark":"商品备注信息","quantity":1,"discount_amount":1,"goods_id":"M1006","unit_price":100}]}],
    "success_time":"2018-06-08T10:34:56+08:00",
    "payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "out_trade_no":"1217752501201407033233368018",
    "appid":"wxd678efh567hg6787",
    "trade_state_desc":"支付成功",
    "trade_type":"MICROPAY",
    "attach":"自定义数据",
    "scene_info":{"device_id":"013467007045764"}
}`

// The decrypted refund of the refund-notification example (chapter3_1_11).
const docRefund = `{
    "mchid": "1900000100",
    "transaction_id": "1008450740201411110005820873",
    "out_trade_no": "20150806125346",
    "refund_id": "50200207182018070300011301001",
    "out_refund_no": "7752501201407033233368018",
    "refund_status": "SUCCESS",
    "success_time": "2018-06-08T10:34:56+08:00",
    "user_received_account": "招商银行信用卡0403",
    "amount" : {"total": 999, "refund": 999, "payer_total": 999, "payer_refund": 999}
}`

// docEnvelope is the documented envelope with the ciphertext made now.
func docEnvelope(t *testing.T, id, eventType, summary, originalType, nonce, plaintext string) []byte {
	ct := seal(t, docAPIv3Key, nonce, originalType, []byte(plaintext))
	return []byte(`{
    "id": "` + id + `",
    "create_time": "2015-05-20T13:29:35+08:00",
    "resource_type": "encrypt-resource",
    "event_type": "` + eventType + `",
    "summary": "` + summary + `",
    "resource": {
        "original_type": "` + originalType + `",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": "` + ct + `",
        "associated_data": "` + originalType + `",
        "nonce": "` + nonce + `"
    }
}`)
}

func docChannel(t *testing.T, mchID string) *wechatpay.Channel {
	key := strangerKey() // plays both our key and the platform key here
	ch, err := wechatpay.New(wechatpay.Config{
		MchID: mchID, AppID: "wxd678efh567hg6787", PrivateKey: key, CertSerial: "MERCHANT",
		APIv3Key: docAPIv3Key, PlatformKeys: map[string]*rsa.PublicKey{docSerial: &key.PublicKey},
		BaseURL: wechatpay.ProductionBaseURL, NotifyURL: "https://diamondd.example/v1/webhooks/wechatpay",
	})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestParseWebhookOfficialPayment(t *testing.T) {
	ch := docChannel(t, "1230000109")
	body := docEnvelope(t, "EV-2018022511223320873", "TRANSACTION.SUCCESS", "支付成功", "transaction", "fdasflkja484", docTransaction)
	h := signHeaders(t, strangerKey(), docSerial, time.Now(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", body)
	evs, err := ch.ParseWebhook(context.Background(), h, body)
	if err != nil {
		t.Fatalf("ParseWebhook: %v", err)
	}
	if len(evs) != 1 {
		t.Fatalf("events = %+v", evs)
	}
	ev := evs[0]
	if ev.Key != "EV-2018022511223320873" {
		t.Errorf("Key = %q", ev.Key)
	}
	if ev.Type != channel.EventPaymentSucceeded {
		t.Errorf("Type = %q", ev.Type)
	}
	if ev.OrderID != "1217752501201407033233368018" {
		t.Errorf("OrderID = %q", ev.OrderID)
	}
	if ev.TradeNo != "1217752501201407033233368018" {
		t.Errorf("TradeNo = %q", ev.TradeNo)
	}
	if ev.AmountFen != 100 {
		t.Errorf("AmountFen = %d", ev.AmountFen)
	}
	if want := time.Date(2018, 6, 8, 10, 34, 56, 0, time.FixedZone("", 8*3600)); !ev.At.Equal(want) {
		t.Errorf("At = %v", ev.At)
	}
	if ev.RefundID != "" || ev.Reason != "" {
		t.Errorf("unexpected fields: %+v", ev)
	}

	// The same notification for another merchant is not ours.
	other := docChannel(t, "1900000100")
	if _, err := other.ParseWebhook(context.Background(), h, body); !errors.Is(err, channel.ErrMalformed) {
		t.Errorf("other merchant: %v, want ErrMalformed", err)
	}
}

func TestParseWebhookOfficialRefund(t *testing.T) {
	ch := docChannel(t, "1900000100")
	body := docEnvelope(t, "EV-2018022511223320874", "REFUND.SUCCESS", "退款成功", "refund", "fdasfwqewlkj", docRefund)
	h := signHeaders(t, strangerKey(), docSerial, time.Now(), "NONCE2", body)
	evs, err := ch.ParseWebhook(context.Background(), h, body)
	if err != nil {
		t.Fatalf("ParseWebhook: %v", err)
	}
	want := channel.Event{Key: "EV-2018022511223320874", Type: channel.EventRefundSucceeded, OrderID: "20150806125346",
		TradeNo: "1008450740201411110005820873", RefundID: "7752501201407033233368018", AmountFen: 999}
	if len(evs) != 1 {
		t.Fatalf("events = %+v", evs)
	}
	got := evs[0]
	if !got.At.Equal(time.Date(2018, 6, 8, 2, 34, 56, 0, time.UTC)) {
		t.Errorf("At = %v", got.At)
	}
	got.At = time.Time{}
	if got != want {
		t.Errorf("event = %+v\nwant    %+v", got, want)
	}
}

// transaction builds a decrypted transaction for the fake's merchant.
func transaction(fake *wechatpaytest.Server, mod func(m map[string]any)) []byte {
	m := map[string]any{
		"appid": fake.AppID(), "mchid": fake.MchID(), "out_trade_no": "order-1", "transaction_id": "4200000001",
		"trade_type": "APP", "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "success_time": "2026-03-01T12:00:01+08:00",
		"amount": map[string]any{"total": 600, "payer_total": 600, "currency": "CNY", "payer_currency": "CNY"},
	}
	if mod != nil {
		mod(m)
	}
	b, _ := json.Marshal(m)
	return b
}

func refundRes(fake *wechatpaytest.Server, status string, mod func(m map[string]any)) []byte {
	m := map[string]any{
		"mchid": fake.MchID(), "out_trade_no": "order-1", "transaction_id": "4200000001", "out_refund_no": "refund-1",
		"refund_id": "5000001", "refund_status": status, "success_time": "2026-03-02T10:00:00+08:00",
		"amount": map[string]any{"total": 600, "refund": 200, "payer_total": 600, "payer_refund": 200},
	}
	if mod != nil {
		mod(m)
	}
	b, _ := json.Marshal(m)
	return b
}

func TestParseWebhookEvents(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	f := e.fake
	paidAt := time.Date(2026, 3, 1, 4, 0, 1, 0, time.UTC)
	tests := []struct {
		name string
		n    wechatpaytest.Notification
		want []channel.Event
	}{
		{"paid", f.NewNotification("TRANSACTION.SUCCESS", "支付成功", "transaction", transaction(f, nil)),
			[]channel.Event{{Type: channel.EventPaymentSucceeded, OrderID: "order-1", TradeNo: "4200000001", AmountFen: 600, At: paidAt}}},
		{"paid then refunding", f.NewNotification("TRANSACTION.SUCCESS", "", "transaction", transaction(f, func(m map[string]any) { m["trade_state"] = "REFUND" })),
			[]channel.Event{{Type: channel.EventPaymentRefunded, OrderID: "order-1", TradeNo: "4200000001", AmountFen: 600, At: paidAt}}},
		{"closed", f.NewNotification("TRANSACTION.CLOSED", "", "transaction", transaction(f, func(m map[string]any) {
			m["trade_state"] = "CLOSED"
			delete(m, "transaction_id")
		})), []channel.Event{{Type: channel.EventPaymentClosed, OrderID: "order-1"}}},
		{"pay error", f.NewNotification("TRANSACTION.PAYERROR", "", "transaction", transaction(f, func(m map[string]any) {
			m["trade_state"], m["trade_state_desc"] = "PAYERROR", "银行卡余额不足"
		})), []channel.Event{{Type: channel.EventPaymentFailed, OrderID: "order-1", TradeNo: "4200000001", Reason: "银行卡余额不足"}}},
		{"not paid", f.NewNotification("TRANSACTION.NOTPAY", "", "transaction", transaction(f, func(m map[string]any) { m["trade_state"] = "NOTPAY" })), nil},
		{"refund success", f.NewNotification("REFUND.SUCCESS", "退款成功", "refund", refundRes(f, "SUCCESS", nil)),
			[]channel.Event{{Type: channel.EventRefundSucceeded, OrderID: "order-1", TradeNo: "4200000001", RefundID: "refund-1",
				AmountFen: 200, At: time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)}}},
		{"refund closed", f.NewNotification("REFUND.CLOSED", "退款关闭", "refund", refundRes(f, "CLOSED", func(m map[string]any) { delete(m, "success_time") })),
			[]channel.Event{{Type: channel.EventRefundFailed, OrderID: "order-1", TradeNo: "4200000001", RefundID: "refund-1", Reason: "refund closed by WeChat Pay"}}},
		{"refund abnormal is not final", f.NewNotification("REFUND.ABNORMAL", "退款异常", "refund", refundRes(f, "ABNORMAL", nil)), nil},
		{"unknown event type", f.NewNotification("PROFITSHARING.SUCCESS", "", "profitsharing", []byte(`{}`)), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := e.ch.ParseWebhook(context.Background(), f.SignHeaders(tc.n.Body, time.Time{}), tc.n.Body)
			if err != nil {
				t.Fatalf("ParseWebhook: %v", err)
			}
			if len(evs) != len(tc.want) {
				t.Fatalf("events = %+v, want %+v", evs, tc.want)
			}
			for i := range evs {
				want := tc.want[i]
				want.Key = tc.n.ID
				if !want.At.IsZero() && !evs[i].At.Equal(want.At) {
					t.Errorf("At = %v, want %v", evs[i].At, want.At)
				}
				if evs[i].At.IsZero() {
					t.Errorf("At is zero")
				}
				evs[i].At, want.At = time.Time{}, time.Time{}
				if evs[i] != want {
					t.Errorf("event = %+v\nwant    %+v", evs[i], want)
				}
			}
		})
	}
}

func TestParseWebhookMalformed(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	f := e.fake
	tx := func(mod func(m map[string]any)) wechatpaytest.Notification {
		return f.NewNotification("TRANSACTION.SUCCESS", "支付成功", "transaction", transaction(f, mod))
	}
	good := tx(nil)
	var env map[string]any
	if err := json.Unmarshal(good.Body, &env); err != nil {
		t.Fatal(err)
	}
	rewrite := func(mod func(env, res map[string]any)) []byte {
		c := map[string]any{}
		b, _ := json.Marshal(env)
		_ = json.Unmarshal(b, &c)
		mod(c, c["resource"].(map[string]any))
		out, _ := json.Marshal(c)
		return out
	}
	tests := map[string][]byte{
		"other merchant":          tx(func(m map[string]any) { m["mchid"] = "1900000001" }).Body,
		"other app":               tx(func(m map[string]any) { m["appid"] = "wx0000000000000000" }).Body,
		"no amount":               tx(func(m map[string]any) { delete(m, "amount") }).Body,
		"fractional amount":       tx(func(m map[string]any) { m["amount"] = map[string]any{"total": 6.5, "currency": "CNY"} }).Body,
		"string amount":           tx(func(m map[string]any) { m["amount"] = map[string]any{"total": "600", "currency": "CNY"} }).Body,
		"zero amount":             tx(func(m map[string]any) { m["amount"] = map[string]any{"total": 0, "currency": "CNY"} }).Body,
		"negative amount":         tx(func(m map[string]any) { m["amount"] = map[string]any{"total": -600, "currency": "CNY"} }).Body,
		"foreign currency":        tx(func(m map[string]any) { m["amount"] = map[string]any{"total": 600, "currency": "USD"} }).Body,
		"no out_trade_no":         tx(func(m map[string]any) { delete(m, "out_trade_no") }).Body,
		"no transaction_id":       tx(func(m map[string]any) { delete(m, "transaction_id") }).Body,
		"unknown trade_state":     tx(func(m map[string]any) { m["trade_state"] = "PAID" }).Body,
		"refund status disagrees": f.NewNotification("REFUND.SUCCESS", "", "refund", refundRes(f, "CLOSED", nil)).Body,
		"refund other merchant":   f.NewNotification("REFUND.SUCCESS", "", "refund", refundRes(f, "SUCCESS", func(m map[string]any) { m["mchid"] = "1" })).Body,
		"refund without amount":   f.NewNotification("REFUND.SUCCESS", "", "refund", refundRes(f, "SUCCESS", func(m map[string]any) { delete(m, "amount") })).Body,
		"refund without number":   f.NewNotification("REFUND.SUCCESS", "", "refund", refundRes(f, "SUCCESS", func(m map[string]any) { delete(m, "out_refund_no") })).Body,
		"resource type mismatch":  f.NewNotification("REFUND.SUCCESS", "", "transaction", refundRes(f, "SUCCESS", nil)).Body,
		"not json":                []byte("id=EV-1&event_type=TRANSACTION.SUCCESS"),
		"trailing data":           append(append([]byte(nil), good.Body...), []byte(`{"id":"x"}`)...),
		"no id":                   rewrite(func(env, _ map[string]any) { delete(env, "id") }),
		"no resource":             rewrite(func(env, _ map[string]any) { delete(env, "resource") }),
		"other algorithm":         rewrite(func(_, res map[string]any) { res["algorithm"] = "AEAD_AES_128_GCM" }),
		"altered ciphertext": rewrite(func(_, res map[string]any) {
			ct := []byte(res["ciphertext"].(string))
			ct[5] ^= 1
			res["ciphertext"] = string(ct)
		}),
		"altered associated data": rewrite(func(_, res map[string]any) { res["associated_data"] = "refund" }),
		"short nonce":             rewrite(func(_, res map[string]any) { res["nonce"] = "abc" }),
		"ciphertext not base64":   rewrite(func(_, res map[string]any) { res["ciphertext"] = "%%%" }),
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			// Signed correctly: the failure must come from the content.
			evs, err := e.ch.ParseWebhook(context.Background(), f.SignHeaders(body, time.Time{}), body)
			if !errors.Is(err, channel.ErrMalformed) {
				t.Fatalf("err = %v (events %+v), want ErrMalformed", err, evs)
			}
			if r := e.ch.WebhookResponse(err); r.Status != http.StatusInternalServerError {
				t.Errorf("response status %d", r.Status)
			}
		})
	}
	// A fake with another APIv3 key encrypts what we cannot open.
	other := wechatpaytest.New(t, wechatpaytest.Options{APIv3Key: strings.Repeat("k", 32)})
	n := other.NewNotification("TRANSACTION.SUCCESS", "", "transaction", transaction(f, nil))
	if _, err := e.ch.ParseWebhook(context.Background(), other.SignHeaders(n.Body, time.Time{}), n.Body); !errors.Is(err, channel.ErrMalformed) {
		t.Errorf("wrong APIv3 key: %v", err)
	}
}

func TestParseWebhookRejectsUnverified(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := setup(t, wechatpaytest.Options{Now: func() time.Time { return now }}, func(c *wechatpay.Config) {
		c.Now = func() time.Time { return now }
	})
	f := e.fake
	n := f.NewNotification("TRANSACTION.SUCCESS", "支付成功", "transaction", transaction(f, nil))
	body := n.Body
	good := f.SignHeaders(body, now)
	mod := func(k, v string) http.Header {
		h := good.Clone()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-3] ^= 0x20

	type tc struct {
		h    http.Header
		body []byte
	}
	tests := map[string]tc{
		"tampered body":          {good, tampered},
		"empty body":             {good, nil},
		"garbage body":           {good, []byte("\x00\xffgarbage")},
		"wrong key":              {signHeaders(t, strangerKey(), f.PlatformSerial(), now, "N1", body), body},
		"stale timestamp":        {f.SignHeaders(body, now.Add(-6*time.Minute)), body},
		"just stale":             {f.SignHeaders(body, now.Add(-5*time.Minute)), body},
		"future timestamp":       {f.SignHeaders(body, now.Add(6*time.Minute)), body},
		"far future":             {f.SignHeaders(body, now.Add(100*365*24*time.Hour)), body},
		"absurd timestamp":       {mod("Wechatpay-Timestamp", "99999999999999999999"), body},
		"negative timestamp":     {mod("Wechatpay-Timestamp", "-9223372036854775808"), body},
		"timestamp not a number": {mod("Wechatpay-Timestamp", "1e9"), body},
		"unknown serial":         {mod("Wechatpay-Serial", "PUB_KEY_ID_UNKNOWN"), body},
		"signtest probe":         {mod("Wechatpay-Signature", "WECHATPAY/SIGNTEST/"+good.Get("Wechatpay-Signature")), body},
		"signature not base64":   {mod("Wechatpay-Signature", "***"), body},
		"other nonce":            {mod("Wechatpay-Nonce", "OTHERNONCE"), body},
		"other signature type":   {mod("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3"), body},
		"no timestamp":           {mod("Wechatpay-Timestamp", ""), body},
		"no nonce":               {mod("Wechatpay-Nonce", ""), body},
		"no signature":           {mod("Wechatpay-Signature", ""), body},
		"no serial":              {mod("Wechatpay-Serial", ""), body},
		"no headers":             {http.Header{}, body},
		"nil headers":            {nil, body},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			evs, err := e.ch.ParseWebhook(context.Background(), c.h, c.body)
			if !errors.Is(err, channel.ErrBadSignature) {
				t.Fatalf("err = %v (events %+v), want ErrBadSignature", err, evs)
			}
			r := e.ch.WebhookResponse(err)
			var fb struct{ Code, Message string }
			if r.Status != http.StatusUnauthorized || json.Unmarshal(r.Body, &fb) != nil || fb.Code != "FAIL" || fb.Message == "" || r.ContentType != "application/json" {
				t.Errorf("response = %d %s %q", r.Status, r.ContentType, r.Body)
			}
		})
	}
	// The untouched notification passes, also near the edges of the window.
	for _, at := range []time.Time{now, now.Add(-4*time.Minute - 59*time.Second), now.Add(4*time.Minute + 59*time.Second)} {
		if _, err := e.ch.ParseWebhook(context.Background(), f.SignHeaders(body, at), body); err != nil {
			t.Errorf("good notification signed at %v: %v", at, err)
		}
	}
}

func TestParseWebhookKeyRotation(t *testing.T) {
	fake := wechatpaytest.New(t, wechatpaytest.Options{})
	cfg := fake.Config()
	cfg.NotifyURL = "https://diamondd.example/v1/webhooks/wechatpay"
	cfg.PlatformKeys["NEW_SERIAL"] = &strangerKey().PublicKey
	ch, err := wechatpay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := fake.NewNotification("TRANSACTION.SUCCESS", "", "transaction", transaction(fake, nil))
	for name, h := range map[string]http.Header{
		"old key": fake.SignHeaders(n.Body, time.Time{}),
		"new key": signHeaders(t, strangerKey(), "NEW_SERIAL", time.Now(), "N", n.Body),
	} {
		if _, err := ch.ParseWebhook(context.Background(), h, n.Body); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A key is only good under its own serial.
	h := signHeaders(t, strangerKey(), fake.PlatformSerial(), time.Now(), "N", n.Body)
	if _, err := ch.ParseWebhook(context.Background(), h, n.Body); !errors.Is(err, channel.ErrBadSignature) {
		t.Errorf("new key under the old serial: %v", err)
	}
	// Changing the caller's map after New changes nothing.
	delete(cfg.PlatformKeys, "NEW_SERIAL")
	if _, err := ch.ParseWebhook(context.Background(), signHeaders(t, strangerKey(), "NEW_SERIAL", time.Now(), "N", n.Body), n.Body); err != nil {
		t.Errorf("config map aliased: %v", err)
	}
}

func TestWebhookResponse(t *testing.T) {
	e := setup(t, wechatpaytest.Options{}, nil)
	if r := e.ch.WebhookResponse(nil); r.Status != http.StatusNoContent || len(r.Body) != 0 || r.ContentType != "" {
		t.Errorf("ack = %+v", r)
	}
	r := e.ch.WebhookResponse(errors.New("database down: secret detail"))
	if r.Status != http.StatusInternalServerError || !strings.Contains(string(r.Body), `"code":"FAIL"`) || strings.Contains(string(r.Body), "secret") {
		t.Errorf("failure = %d %s", r.Status, r.Body)
	}
}

// FuzzWechatNotify feeds arbitrary bodies and headers to ParseWebhook. The
// mode also lets the fuzzer reach what lies behind the checks: 1 signs the
// body correctly, 2 treats the body as a resource plaintext, encrypts it
// into an envelope of the given event and original type, and signs that.
func FuzzWechatNotify(f *testing.F) {
	fake := wechatpaytest.New(f, wechatpaytest.Options{})
	cfg := fake.Config()
	cfg.NotifyURL = "http://127.0.0.1:1/unused"
	ch, err := wechatpay.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	n := fake.NewNotification("TRANSACTION.SUCCESS", "", "transaction", transaction(fake, nil))
	h := fake.SignHeaders(n.Body, time.Time{})
	f.Add(n.Body, h.Get("Wechatpay-Timestamp"), h.Get("Wechatpay-Nonce"), h.Get("Wechatpay-Signature"), h.Get("Wechatpay-Serial"), uint8(0), "", "")
	f.Add(n.Body, "", "", "", "", uint8(1), "", "")
	f.Add(transaction(fake, nil), "", "", "", "", uint8(2), "TRANSACTION.SUCCESS", "transaction")
	f.Add(refundRes(fake, "SUCCESS", nil), "", "", "", "", uint8(2), "REFUND.SUCCESS", "refund")
	f.Add(refundRes(fake, "CLOSED", nil), "", "", "", "", uint8(2), "REFUND.CLOSED", "refund")
	f.Add([]byte(`{"id":"x","event_type":"REFUND.SUCCESS","resource":{}}`), "0", "", "WECHATPAY/SIGNTEST/x", fake.PlatformSerial(), uint8(0), "", "")
	f.Add([]byte{}, "", "", "", "", uint8(0), "", "")
	f.Fuzz(func(t *testing.T, body []byte, ts, nonce, sig, serial string, mode uint8, eventType, originalType string) {
		hdr := http.Header{}
		switch mode % 3 {
		case 0:
			hdr.Set("Wechatpay-Timestamp", ts)
			hdr.Set("Wechatpay-Nonce", nonce)
			hdr.Set("Wechatpay-Signature", sig)
			hdr.Set("Wechatpay-Serial", serial)
		case 1:
			hdr = fake.SignHeaders(body, time.Time{})
		case 2:
			body = fake.NewNotification(eventType, "", originalType, body).Body
			hdr = fake.SignHeaders(body, time.Time{})
		}
		evs, err := ch.ParseWebhook(context.Background(), hdr, body)
		resp := ch.WebhookResponse(err)
		if err != nil {
			if !errors.Is(err, channel.ErrBadSignature) && !errors.Is(err, channel.ErrMalformed) {
				t.Fatalf("error %v wraps neither ErrBadSignature nor ErrMalformed", err)
			}
			if len(evs) != 0 || resp.Status < 400 {
				t.Fatalf("error %v with events %+v, status %d", err, evs, resp.Status)
			}
			return
		}
		for _, ev := range evs {
			if ev.Key == "" || ev.OrderID == "" {
				t.Fatalf("accepted event without key or order: %+v", ev)
			}
			if (ev.Type == channel.EventPaymentSucceeded || ev.Type == channel.EventRefundSucceeded) && ev.AmountFen <= 0 {
				t.Fatalf("money event without a positive amount: %+v", ev)
			}
		}
	})
}
