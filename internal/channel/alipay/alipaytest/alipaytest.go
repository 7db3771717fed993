// Package alipaytest is a fake Alipay on loopback for tests and load tools:
// an open-platform gateway (alipay.trade.query, .close, .refund,
// .fastpay.refund.query) and a notifier that signs notifications with the
// fake's own Alipay key and pushes them to the notify_url until they are
// acknowledged the way Alipay judges an acknowledgement (the body is exactly
// "success"), on a compressed retry schedule.
//
// Typical use:
//
//	fake := alipaytest.New(t, alipaytest.Options{})
//	cfg := fake.Config()
//	cfg.NotifyURL = webhookURL
//	ch, _ := alipay.New(cfg)
//	pay, _ := ch.CreatePayment(ctx, order)
//	n, _ := fake.PayOrderString(pay.Pay["order_string"].(string)) // what the Alipay app does
//	fake.WaitIdle(ctx)                                              // all notifications acknowledged or given up
//
// The fake implements the protocol independently of package alipay (it only
// borrows its Config type), so a signing mistake in the adapter fails the
// tests instead of being mirrored. Keys are RSA-2048, generated once per
// process. time_expire is recorded but not enforced, so tests can simulate
// late payments.
package alipaytest

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/channeltest"
	"github.com/diamondd/diamondd/internal/money"
)

// Trade statuses, as Alipay names them.
const (
	StatusWaitBuyerPay  = "WAIT_BUYER_PAY"
	StatusTradeSuccess  = "TRADE_SUCCESS"
	StatusTradeFinished = "TRADE_FINISHED"
	StatusTradeClosed   = "TRADE_CLOSED"
)

// Gateway methods the fake answers (for Fault.Method and Calls).
const (
	MethodQuery       = "alipay.trade.query"
	MethodClose       = "alipay.trade.close"
	MethodRefund      = "alipay.trade.refund"
	MethodRefundQuery = "alipay.trade.fastpay.refund.query"
)

// DefaultAppID is the app id the fake accepts when Options.AppID is empty.
const DefaultAppID = "2021000000000001"

// DefaultRetrySchedule is Alipay's real schedule (2m, 10m, 10m, 1h, 2h, 6h,
// 15h: eight attempts in about 25 h) compressed so a minute lasts a
// millisecond: the whole schedule takes about 1.5 s.
func DefaultRetrySchedule() []time.Duration {
	return channeltest.Compress(2*time.Minute, 10*time.Minute, 10*time.Minute,
		time.Hour, 2*time.Hour, 6*time.Hour, 15*time.Hour)
}

// Options configure a fake. The zero value is ready to use.
type Options struct {
	AppID    string // accepted app id; default DefaultAppID
	SellerID string // seller_id in notifications; default "2088000000000001"
	// NotifyURL, when set, receives every notification instead of the
	// notify_url of the order string.
	NotifyURL string
	// RetrySchedule is the wait before each redelivery; attempts are
	// len(RetrySchedule)+1. Nil means DefaultRetrySchedule(); an empty
	// non-nil slice means a single attempt.
	RetrySchedule []time.Duration
	// NotifyTimeout bounds one delivery attempt; default 2 s.
	NotifyTimeout time.Duration
	// Now is the fake's clock; default time.Now.
	Now func() time.Time
	// AppKey (ours, as the adapter holds it) and AlipayKey replace the
	// process-wide generated keys.
	AppKey, AlipayKey *rsa.PrivateKey
}

// Trade is a snapshot of one trade at the fake.
type Trade struct {
	OutTradeNo  string
	TradeNo     string
	Status      string
	TotalFen    int64
	RefundedFen int64
	Subject     string
	NotifyURL   string
	TimeExpire  string
	CreatedAt   time.Time
	PaidAt      time.Time
	ClosedAt    time.Time
	Refunds     []Refund // in the order they were applied
}

// Refund is one refund the fake applied (one per out_request_no).
type Refund struct {
	OutRequestNo string
	AmountFen    int64
	At           time.Time
}

// Notification is one notification the fake sends (and resends).
type Notification struct {
	ID      string     // notify_id, the same on every redelivery
	OrderID string     // out_trade_no
	URL     string     // where it is delivered
	Params  url.Values // the signed fields, sign included
	Body    []byte     // the exact form body that is POSTed
}

// Delivery is one attempt to deliver a notification; Acked means the body
// was exactly "success".
type Delivery = channeltest.Delivery

// Fault is a failure injected into the next gateway call of Method.
type Fault struct {
	Method string
	// BeforeApply makes the call fail before it changes anything. By default
	// the call takes effect and only its answer is spoiled: the refund that
	// "timed out" did happen.
	BeforeApply bool
	// Delay holds the answer back; longer than the adapter's timeout, it is a
	// timeout the adapter sees.
	Delay time.Duration
	// Status, when not 0, replaces the answer with this HTTP status and a
	// non-JSON body.
	Status int
	// BadSignature answers with a signature that does not verify.
	BadSignature bool
	// Omit removes these fields from the answer (then signed as sent), as
	// Alipay's answers differ between versions of its contract.
	Omit []string
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	opts      Options
	appKey    *rsa.PrivateKey
	alipayKey *rsa.PrivateKey
	srv       *httptest.Server
	calls     channeltest.Calls[Fault]
	notifier  *channeltest.Notifier

	mu        sync.Mutex
	trades    map[string]*trade
	byTradeNo map[string]string
	seq       int64
}

type trade struct {
	Trade
	refunds map[string]*Refund
}

// processKeys stands in for Options.AppKey and AlipayKey.
var processKeys channeltest.KeyPair

// New starts a fake for a test and closes it when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("alipaytest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a fake outside a test (a load tool); Close stops it.
func Start(opts Options) (*Server, error) {
	if opts.AppID == "" {
		opts.AppID = DefaultAppID
	}
	if opts.SellerID == "" {
		opts.SellerID = "2088000000000001"
	}
	if opts.RetrySchedule == nil {
		opts.RetrySchedule = DefaultRetrySchedule()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	app, ali, err := processKeys.Or(opts.AppKey, opts.AlipayKey)
	if err != nil {
		return nil, fmt.Errorf("generate keys: %w", err)
	}
	s := &Server{
		opts:      opts,
		appKey:    app,
		alipayKey: ali,
		trades:    map[string]*trade{},
		byTradeNo: map[string]string{},
		notifier: channeltest.NewNotifier(channeltest.NotifierOptions{
			Schedule:    opts.RetrySchedule,
			Timeout:     opts.NotifyTimeout,
			Now:         opts.Now,
			ContentType: "application/x-www-form-urlencoded; charset=utf-8",
			// Alipay looks at the body only: the seven characters "success".
			Acked: func(_ int, body string) bool { return body == "success" },
		}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/gateway.do", s.handleGateway)
	s.srv = httptest.NewServer(mux)
	return s, nil
}

// Close stops the notifier and the server.
func (s *Server) Close() {
	s.notifier.Close()
	s.srv.Close()
}

// URL is the gateway URL (Config.BaseURL).
func (s *Server) URL() string { return s.srv.URL + "/gateway.do" }

// AppID is the app id the fake accepts.
func (s *Server) AppID() string { return s.opts.AppID }

// Config is everything the adapter needs except NotifyURL (and an
// HTTPClient, if the default is not wanted).
func (s *Server) Config() alipay.Config {
	return alipay.Config{
		AppID:           s.opts.AppID,
		PrivateKey:      s.appKey,
		AlipayPublicKey: &s.alipayKey.PublicKey,
		BaseURL:         s.URL(),
	}
}

// AppPrivateKeyPEM is the app private key as PKCS #8 PEM.
func (s *Server) AppPrivateKeyPEM() []byte { return channeltest.PrivateKeyPEM(s.appKey) }

// AlipayPublicKeyPEM is the fake Alipay's public key as PKIX PEM.
func (s *Server) AlipayPublicKeyPEM() []byte { return channeltest.PublicKeyPEM(&s.alipayKey.PublicKey) }

// Env writes the key files into dir and returns the environment the service
// reads (ALIPAY_APP_ID, ALIPAY_PRIVATE_KEY_FILE, ALIPAY_PUBLIC_KEY_FILE,
// ALIPAY_BASE_URL).
func (s *Server) Env(dir string) (map[string]string, error) {
	priv, pub, err := channeltest.WriteKeyFiles(dir, "alipay_app_private_key.pem", s.appKey,
		"alipay_public_key.pem", &s.alipayKey.PublicKey)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		alipay.EnvAppID:      s.opts.AppID,
		alipay.EnvPrivateKey: priv,
		alipay.EnvPublicKey:  pub,
		alipay.EnvBaseURL:    s.URL(),
	}, nil
}

// Trade returns a snapshot of the trade for out_trade_no.
func (s *Server) Trade(orderID string) (Trade, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[orderID]
	if !ok {
		return Trade{}, false
	}
	return t.snapshot(), true
}

func (t *trade) snapshot() Trade {
	c := t.Trade
	c.Refunds = append([]Refund(nil), t.Refunds...)
	return c
}

// Calls counts the gateway calls of method received so far (verified or not).
func (s *Server) Calls(method string) int { return s.calls.Count(method) }

// InjectFault spoils the next call of f.Method. Faults queue up in order.
func (s *Server) InjectFault(f Fault) { s.calls.Inject(f.Method, f) }

// LoseNextNotifications makes the next n notifications never be pushed, as
// if Alipay gave up; they are still returned by the call that caused them
// and can be delivered with Deliver or Redeliver.
func (s *Server) LoseNextNotifications(n int) { s.notifier.LoseNext(n) }

// Deliveries returns every delivery attempt so far, oldest first.
func (s *Server) Deliveries() []Delivery { return s.notifier.Deliveries() }

// WaitIdle blocks until no notification is being pushed (each was
// acknowledged or ran out of attempts), or ctx ends.
func (s *Server) WaitIdle(ctx context.Context) error {
	if err := s.notifier.WaitIdle(ctx); err != nil {
		return fmt.Errorf("alipaytest: %w", err)
	}
	return nil
}

var errNoTrade = errors.New("alipaytest: no such trade")

// Submit is what the Alipay app does with an order string when the payer
// opens the cashier: it checks the app's RSA2 signature and creates the
// trade in WAIT_BUYER_PAY (again for the same out_trade_no and amount: the
// existing trade is returned).
func (s *Server) Submit(orderString string) (Trade, error) {
	p, err := url.ParseQuery(orderString)
	if err != nil {
		return Trade{}, fmt.Errorf("alipaytest: order string: %w", err)
	}
	if err := s.verifyRequest(p); err != nil {
		return Trade{}, fmt.Errorf("alipaytest: order string: %w", err)
	}
	if m := p.Get("method"); m != "alipay.trade.app.pay" {
		return Trade{}, fmt.Errorf("alipaytest: order string method %q", m)
	}
	var biz struct {
		OutTradeNo  string `json:"out_trade_no"`
		TotalAmount string `json:"total_amount"`
		Subject     string `json:"subject"`
		ProductCode string `json:"product_code"`
		TimeExpire  string `json:"time_expire"`
	}
	if err := json.Unmarshal([]byte(p.Get("biz_content")), &biz); err != nil {
		return Trade{}, fmt.Errorf("alipaytest: biz_content: %w", err)
	}
	if biz.OutTradeNo == "" || biz.Subject == "" {
		return Trade{}, errors.New("alipaytest: biz_content needs out_trade_no and subject")
	}
	total, err := money.ParseYuan(biz.TotalAmount)
	if err != nil || total <= 0 {
		return Trade{}, fmt.Errorf("alipaytest: total_amount %q", biz.TotalAmount)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.trades[biz.OutTradeNo]; ok {
		if t.TotalFen != total {
			return Trade{}, fmt.Errorf("alipaytest: trade %s exists with another amount", biz.OutTradeNo)
		}
		return t.snapshot(), nil
	}
	s.seq++
	now := s.opts.Now()
	t := &trade{Trade: Trade{
		OutTradeNo: biz.OutTradeNo,
		TradeNo:    now.Format("20060102") + "2200" + fmt.Sprintf("%016d", s.seq),
		Status:     StatusWaitBuyerPay,
		TotalFen:   total,
		Subject:    biz.Subject,
		NotifyURL:  p.Get("notify_url"),
		TimeExpire: biz.TimeExpire,
		CreatedAt:  now,
	}, refunds: map[string]*Refund{}}
	s.trades[t.OutTradeNo] = t
	s.byTradeNo[t.TradeNo] = t.OutTradeNo
	return t.snapshot(), nil
}

// Pay marks a submitted trade paid and notifies TRADE_SUCCESS.
func (s *Server) Pay(orderID string) (Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[orderID]
	if !ok {
		return Notification{}, fmt.Errorf("%w: %s (Submit the order string first)", errNoTrade, orderID)
	}
	if t.Status != StatusWaitBuyerPay {
		return Notification{}, fmt.Errorf("alipaytest: trade %s is %s, not payable", orderID, t.Status)
	}
	t.Status = StatusTradeSuccess
	t.PaidAt = s.opts.Now()
	return s.notifyLocked(t, nil), nil
}

// PayOrderString is Submit then Pay: the payer opens the cashier and pays.
func (s *Server) PayOrderString(orderString string) (Notification, error) {
	t, err := s.Submit(orderString)
	if err != nil {
		return Notification{}, err
	}
	return s.Pay(t.OutTradeNo)
}

// Expire closes an unpaid trade as Alipay's own timeout does, and notifies
// TRADE_CLOSED.
func (s *Server) Expire(orderID string) (Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[orderID]
	if !ok {
		return Notification{}, fmt.Errorf("%w: %s", errNoTrade, orderID)
	}
	if t.Status != StatusWaitBuyerPay {
		return Notification{}, fmt.Errorf("alipaytest: trade %s is %s, not waiting", orderID, t.Status)
	}
	t.Status = StatusTradeClosed
	t.ClosedAt = s.opts.Now()
	return s.notifyLocked(t, nil), nil
}

// Finish ends the refund window of a paid trade (TRADE_FINISHED) and
// notifies it.
func (s *Server) Finish(orderID string) (Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[orderID]
	if !ok {
		return Notification{}, fmt.Errorf("%w: %s", errNoTrade, orderID)
	}
	if t.Status != StatusTradeSuccess {
		return Notification{}, fmt.Errorf("alipaytest: trade %s is %s, not paid", orderID, t.Status)
	}
	t.Status = StatusTradeFinished
	return s.notifyLocked(t, nil), nil
}
