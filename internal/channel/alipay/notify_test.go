package alipay_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
)

var cst = time.FixedZone("CST", 8*3600)

// officialSample is the raw notify of the Alipay documentation (§1.1 of the
// reference), fields in the documented order; the elided values are filled
// in with values of the documented shape.
var officialSample = [][2]string{
	{"total_amount", "2.00"},
	{"buyer_id", "2088102116773037"},
	{"body", "大乐透2.1"},
	{"trade_no", "2016071921001003030200089909"},
	{"refund_fee", "0.00"},
	{"notify_time", "2016-07-19 14:10:49"},
	{"subject", "大乐透2.1"},
	{"sign_type", "RSA2"},
	{"charset", "utf-8"},
	{"notify_type", "trade_status_sync"},
	{"out_trade_no", "0719141034-6418"},
	{"gmt_close", "2016-07-19 14:10:46"},
	{"gmt_payment", "2016-07-19 14:10:47"},
	{"trade_status", "TRADE_SUCCESS"},
	{"version", "1.0"},
	{"sign", ""}, // filled at test time
	{"gmt_create", "2016-07-19 14:10:44"},
	{"app_id", "2015102700040153"},
	{"seller_id", "2088102119685838"},
	{"notify_id", "4a91b7a78a503640467525113fb7d8bg8e"},
}

// The text Alipay signs for the sample, written out by hand: sorted keys,
// sign and sign_type left out, raw (decoded) values.
const officialSampleSignContent = "app_id=2015102700040153&body=大乐透2.1&buyer_id=2088102116773037&charset=utf-8" +
	"&gmt_close=2016-07-19 14:10:46&gmt_create=2016-07-19 14:10:44&gmt_payment=2016-07-19 14:10:47" +
	"&notify_id=4a91b7a78a503640467525113fb7d8bg8e&notify_time=2016-07-19 14:10:49&notify_type=trade_status_sync" +
	"&out_trade_no=0719141034-6418&refund_fee=0.00&seller_id=2088102119685838&subject=大乐透2.1" +
	"&total_amount=2.00&trade_no=2016071921001003030200089909&trade_status=TRADE_SUCCESS&version=1.0"

func rawSign(t testing.TB, key *rsa.PrivateKey, content string) string {
	sum := sha256.Sum256([]byte(content))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func encodeOrdered(fields [][2]string) []byte {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = url.QueryEscape(f[0]) + "=" + url.QueryEscape(f[1])
	}
	return []byte(strings.Join(parts, "&"))
}

func TestParseWebhookOfficialSample(t *testing.T) {
	key := strangerKey(t) // plays Alipay's key in this test
	ch, err := alipay.New(alipay.Config{
		AppID:           "2015102700040153",
		PrivateKey:      key,
		AlipayPublicKey: &key.PublicKey,
		BaseURL:         alipay.ProductionGateway,
		NotifyURL:       "https://diamondd.example/v1/webhooks/alipay",
	})
	if err != nil {
		t.Fatal(err)
	}
	fields := append([][2]string(nil), officialSample...)
	for i := range fields {
		if fields[i][0] == "sign" {
			fields[i][1] = rawSign(t, key, officialSampleSignContent)
		}
	}
	evs, err := ch.ParseWebhook(context.Background(), http.Header{}, encodeOrdered(fields))
	if err != nil {
		t.Fatalf("ParseWebhook: %v", err)
	}
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %+v", len(evs), evs)
	}
	ev := evs[0]
	// refund_fee=0.00 on a payment notify must not make it a refund.
	if ev.Type != channel.EventPaymentSucceeded {
		t.Errorf("Type = %q", ev.Type)
	}
	if ev.Key != "4a91b7a78a503640467525113fb7d8bg8e" {
		t.Errorf("Key = %q", ev.Key)
	}
	if ev.OrderID != "0719141034-6418" {
		t.Errorf("OrderID = %q", ev.OrderID)
	}
	if ev.TradeNo != "2016071921001003030200089909" {
		t.Errorf("TradeNo = %q", ev.TradeNo)
	}
	if ev.AmountFen != 200 {
		t.Errorf("AmountFen = %d", ev.AmountFen)
	}
	if want := time.Date(2016, 7, 19, 14, 10, 47, 0, cst); !ev.At.Equal(want) {
		t.Errorf("At = %v, want %v", ev.At, want)
	}
	if ev.RefundID != "" || ev.Reason != "" {
		t.Errorf("unexpected refund fields: %+v", ev)
	}

	// Any change to a signed byte is caught.
	for i := range fields {
		if fields[i][0] == "total_amount" {
			fields[i][1] = "2000.00"
		}
	}
	if _, err := ch.ParseWebhook(context.Background(), http.Header{}, encodeOrdered(fields)); !errors.Is(err, channel.ErrBadSignature) {
		t.Fatalf("tampered sample: err = %v, want ErrBadSignature", err)
	}
}

// baseNotify is a paid-trade notification for the fake's app.
func baseNotify(appID string) url.Values {
	return url.Values{
		"notify_time":  {"2026-03-01 12:00:02"},
		"notify_type":  {"trade_status_sync"},
		"notify_id":    {"n-1"},
		"app_id":       {appID},
		"charset":      {"utf-8"},
		"version":      {"1.0"},
		"trade_no":     {"2026030122001400000000000001"},
		"out_trade_no": {"order-1"},
		"trade_status": {"TRADE_SUCCESS"},
		"total_amount": {"6.00"},
		"gmt_create":   {"2026-03-01 11:59:00"},
		"gmt_payment":  {"2026-03-01 12:00:01"},
		"seller_id":    {"2088000000000001"},
	}
}

func with(p url.Values, kv ...string) url.Values {
	c := url.Values{}
	for k, v := range p {
		c[k] = append([]string(nil), v...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<del>" {
			c.Del(kv[i])
			continue
		}
		c.Set(kv[i], kv[i+1])
	}
	return c
}

func TestParseWebhookEvents(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	base := baseNotify(e.fake.AppID())
	paidAt := time.Date(2026, 3, 1, 12, 0, 1, 0, cst)
	tests := []struct {
		name   string
		fields url.Values
		want   []channel.Event
	}{
		{"paid", base, []channel.Event{{Key: "n-1", Type: channel.EventPaymentSucceeded, OrderID: "order-1",
			TradeNo: "2026030122001400000000000001", AmountFen: 600, At: paidAt}}},
		{"finished", with(base, "trade_status", "TRADE_FINISHED", "total_amount", "6.5"), []channel.Event{{Key: "n-1",
			Type: channel.EventPaymentSucceeded, OrderID: "order-1", TradeNo: "2026030122001400000000000001", AmountFen: 650, At: paidAt}}},
		{"waiting", with(base, "trade_status", "WAIT_BUYER_PAY", "gmt_payment", "<del>"), nil},
		{"timeout close", with(base, "trade_status", "TRADE_CLOSED", "gmt_payment", "<del>", "gmt_close", "2026-03-01 12:15:00"),
			[]channel.Event{{Key: "n-1", Type: channel.EventPaymentClosed, OrderID: "order-1",
				TradeNo: "2026030122001400000000000001", At: time.Date(2026, 3, 1, 12, 15, 0, 0, cst)}}},
		{"partial refund", with(base, "refund_fee", "1.00", "gmt_refund", "2026-03-02 10:00:00.320", "out_biz_no", "refund-1"),
			[]channel.Event{{Key: "n-1", Type: channel.EventRefundSucceeded, OrderID: "order-1", TradeNo: "2026030122001400000000000001",
				RefundID: "refund-1", AmountFen: 100, At: time.Date(2026, 3, 2, 10, 0, 0, 320e6, cst)}}},
		{"full refund", with(base, "trade_status", "TRADE_CLOSED", "refund_fee", "6.00", "gmt_refund", "2026-03-02 10:00:00",
			"gmt_close", "2026-03-02 10:00:00", "out_biz_no", "refund-2"),
			[]channel.Event{{Key: "n-1", Type: channel.EventRefundSucceeded, OrderID: "order-1", TradeNo: "2026030122001400000000000001",
				RefundID: "refund-2", AmountFen: 600, At: time.Date(2026, 3, 2, 10, 0, 0, 0, cst)}}},
		{"closed by a refund that is not named", with(base, "trade_status", "TRADE_CLOSED", "refund_fee", "6.00",
			"gmt_refund", "2026-03-02 10:00:00"), []channel.Event{{Key: "n-1", Type: channel.EventPaymentRefunded, OrderID: "order-1",
			TradeNo: "2026030122001400000000000001", AmountFen: 600, RefundedFen: 600, At: paidAt}}},
		{"paid, with a refund that is not named", with(base, "refund_fee", "1.00", "gmt_refund", "2026-03-02 10:00:00"),
			[]channel.Event{{Key: "n-1", Type: channel.EventPaymentRefunded, OrderID: "order-1",
				TradeNo: "2026030122001400000000000001", AmountFen: 600, RefundedFen: 100, At: paidAt}}},
		{"closed by a refund of no amount", with(base, "trade_status", "TRADE_CLOSED", "gmt_refund", "2026-03-02 10:00:00"), nil},
		{"other notify type", with(base, "notify_type", "some_other_sync"), nil},
		{"empty values are not signed", with(base, "body", "", "passback_params", ""), []channel.Event{{Key: "n-1",
			Type: channel.EventPaymentSucceeded, OrderID: "order-1", TradeNo: "2026030122001400000000000001", AmountFen: 600, At: paidAt}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := e.ch.ParseWebhook(context.Background(), nil, e.fake.SignNotification(tc.fields))
			if err != nil {
				t.Fatalf("ParseWebhook: %v", err)
			}
			if len(evs) != len(tc.want) {
				t.Fatalf("events = %+v, want %+v", evs, tc.want)
			}
			for i := range evs {
				if !evs[i].At.Equal(tc.want[i].At) {
					t.Errorf("At = %v, want %v", evs[i].At, tc.want[i].At)
				}
				evs[i].At, tc.want[i].At = time.Time{}, time.Time{}
				if evs[i] != tc.want[i] {
					t.Errorf("event = %+v, want %+v", evs[i], tc.want[i])
				}
			}
		})
	}
}

func TestParseWebhookMalformed(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	base := baseNotify(e.fake.AppID())
	tests := map[string]url.Values{
		"other app":             with(base, "app_id", "2021999999999999"),
		"three decimals":        with(base, "total_amount", "6.001"),
		"negative amount":       with(base, "total_amount", "-6.00"),
		"exponent":              with(base, "total_amount", "6e2"),
		"zero paid":             with(base, "total_amount", "0.00"),
		"no amount":             with(base, "total_amount", "<del>"),
		"no notify_id":          with(base, "notify_id", "<del>"),
		"no out_trade_no":       with(base, "out_trade_no", "<del>"),
		"no trade_status":       with(base, "trade_status", "<del>"),
		"unknown trade_status":  with(base, "trade_status", "TRADE_PAID"),
		"paid without trade_no": with(base, "trade_no", "<del>"),
		"bad refund_fee":        with(base, "refund_fee", "1.0.0", "out_biz_no", "r-1"),
		"refund without fee":    with(base, "out_biz_no", "r-1"),
	}
	for name, fields := range tests {
		t.Run(name, func(t *testing.T) {
			evs, err := e.ch.ParseWebhook(context.Background(), nil, e.fake.SignNotification(fields))
			if !errors.Is(err, channel.ErrMalformed) {
				t.Fatalf("err = %v (events %+v), want ErrMalformed", err, evs)
			}
			if got := e.ch.WebhookResponse(err); got.Status != http.StatusInternalServerError || string(got.Body) == "success" {
				t.Errorf("response = %d %q", got.Status, got.Body)
			}
		})
	}
}

// With our seller id configured, a notification for another seller (an app
// bound to someone else's account) is not ours; without it, app_id decides.
func TestParseWebhookSeller(t *testing.T) {
	e := setup(t, alipaytest.Options{}, func(c *alipay.Config) { c.SellerID = "2088000000000001" })
	base := baseNotify(e.fake.AppID())
	if _, err := e.ch.ParseWebhook(context.Background(), nil, e.fake.SignNotification(base)); err != nil {
		t.Fatalf("our seller: %v", err)
	}
	for name, fields := range map[string]url.Values{
		"other seller": with(base, "seller_id", "2088999999999999"),
		"no seller":    with(base, "seller_id", "<del>"),
	} {
		if evs, err := e.ch.ParseWebhook(context.Background(), nil, e.fake.SignNotification(fields)); !errors.Is(err, channel.ErrMalformed) {
			t.Errorf("%s: err = %v (events %+v), want ErrMalformed", name, err, evs)
		}
	}
	anySeller := setup(t, alipaytest.Options{}, nil)
	if _, err := anySeller.ch.ParseWebhook(context.Background(), nil, anySeller.fake.SignNotification(with(base, "seller_id", "2088999999999999"))); err != nil {
		t.Errorf("no seller configured: %v", err)
	}
	if _, err := alipay.New(func() alipay.Config {
		c := e.fake.Config()
		c.NotifyURL = "https://x.example/n"
		c.SellerID = "12345"
		return c
	}()); err == nil {
		t.Error("New accepted a malformed SellerID")
	}
}

func TestParseWebhookRejectsUnverified(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	base := baseNotify(e.fake.AppID())
	good := e.fake.SignNotification(base)
	goodParams, _ := url.ParseQuery(string(good))

	stranger := strangerKey(t)
	wrongKey := with(base, "sign_type", "RSA2")
	wrongKey.Set("sign", rawSign(t, stranger, mustContent(t, wrongKey)))

	tests := map[string][]byte{
		"empty":            nil,
		"garbage":          []byte("\x00\xff{not a form%zz"),
		"json":             []byte(`{"trade_status":"TRADE_SUCCESS"}`),
		"tampered amount":  []byte(with(goodParams, "total_amount", "600.00").Encode()),
		"tampered status":  []byte(with(goodParams, "trade_status", "TRADE_FINISHED").Encode()),
		"added field":      []byte(with(goodParams, "passback_params", "x").Encode()),
		"removed field":    []byte(with(goodParams, "buyer_id", "<del>", "gmt_create", "<del>").Encode()),
		"no sign":          []byte(with(goodParams, "sign", "<del>").Encode()),
		"sign not base64":  []byte(with(goodParams, "sign", "!!!").Encode()),
		"sign_type RSA":    []byte(with(goodParams, "sign_type", "RSA").Encode()),
		"no sign_type":     []byte(with(goodParams, "sign_type", "<del>").Encode()),
		"wrong key":        []byte(wrongKey.Encode()),
		"repeated field":   append(append([]byte(nil), good...), []byte("&total_amount=600.00")...),
		"semicolon":        []byte(strings.Replace(string(good), "&", ";", 1)),
		"trailing newline": append(append([]byte(nil), good...), '\n'),
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			evs, err := e.ch.ParseWebhook(context.Background(), nil, body)
			if !errors.Is(err, channel.ErrBadSignature) {
				t.Fatalf("err = %v (events %+v), want ErrBadSignature", err, evs)
			}
			if got := e.ch.WebhookResponse(err); got.Status != http.StatusUnauthorized || string(got.Body) != "fail" {
				t.Errorf("response = %d %q", got.Status, got.Body)
			}
		})
	}
	// The untouched notification passes, so the cases above fail for their own reason.
	if _, err := e.ch.ParseWebhook(context.Background(), nil, good); err != nil {
		t.Fatalf("good notification: %v", err)
	}
}

// mustContent is the signed text of p, built here independently.
func mustContent(t *testing.T, p url.Values) string {
	t.Helper()
	var keys []string
	for k, v := range p {
		if k != "sign" && k != "sign_type" && v[0] != "" {
			keys = append(keys, k)
		}
	}
	for i := range keys { // insertion sort keeps the helper dependency-free
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p.Get(k)
	}
	return strings.Join(parts, "&")
}

func TestWebhookResponse(t *testing.T) {
	e := setup(t, alipaytest.Options{}, nil)
	ok := e.ch.WebhookResponse(nil)
	if ok.Status != 200 || string(ok.Body) != "success" || !strings.HasPrefix(ok.ContentType, "text/plain") {
		t.Errorf("ack = %+v", ok)
	}
	if r := e.ch.WebhookResponse(errors.New("db down")); r.Status != 500 || string(r.Body) == "success" {
		t.Errorf("failure = %+v", r)
	}
}

// FuzzAlipayNotify feeds arbitrary bodies to ParseWebhook. With sign set,
// a body that parses as a form is signed first, so the fuzzer also reaches
// everything behind the signature check.
func FuzzAlipayNotify(f *testing.F) {
	fake := alipaytest.New(f, alipaytest.Options{})
	cfg := fake.Config()
	cfg.NotifyURL = "http://127.0.0.1:1/unused"
	ch, err := alipay.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	base := baseNotify(fake.AppID())
	f.Add(fake.SignNotification(base), false)
	f.Add([]byte(base.Encode()), true)
	f.Add([]byte(with(base, "out_biz_no", "r-1", "refund_fee", "1.00").Encode()), true)
	f.Add([]byte(with(base, "trade_status", "TRADE_CLOSED", "refund_fee", "6.00").Encode()), true)
	f.Add([]byte(with(base, "total_amount", "1e9").Encode()), true)
	f.Add([]byte("sign=&sign_type=RSA2"), false)
	f.Add([]byte("a=1&a=2"), true)
	f.Add([]byte("%"), false)
	f.Fuzz(func(t *testing.T, body []byte, sign bool) {
		if sign {
			if p, err := url.ParseQuery(string(body)); err == nil {
				body = fake.SignNotification(p)
			}
		}
		evs, err := ch.ParseWebhook(context.Background(), http.Header{}, body)
		resp := ch.WebhookResponse(err)
		if err != nil {
			if !errors.Is(err, channel.ErrBadSignature) && !errors.Is(err, channel.ErrMalformed) {
				t.Fatalf("error %v wraps neither ErrBadSignature nor ErrMalformed", err)
			}
			if len(evs) != 0 || string(resp.Body) == "success" {
				t.Fatalf("error %v with events %+v, response %q", err, evs, resp.Body)
			}
			return
		}
		if len(evs) > 1 {
			t.Fatalf("more than one event: %+v", evs)
		}
		for _, ev := range evs {
			if ev.Key == "" || ev.OrderID == "" {
				t.Fatalf("accepted event without key or order: %+v", ev)
			}
			if (ev.Type == channel.EventPaymentSucceeded || ev.Type == channel.EventRefundSucceeded) && ev.AmountFen <= 0 {
				t.Fatalf("money event without a positive amount: %+v", ev)
			}
			if ev.Type == channel.EventRefundSucceeded && ev.RefundID == "" {
				t.Fatalf("refund event without refund id: %+v", ev)
			}
		}
	})
}
