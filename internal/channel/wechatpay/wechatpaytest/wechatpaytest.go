// Package wechatpaytest is a fake WeChat Pay (API v3) on loopback for tests
// and load tools: the APP prepay, order query, close, refund and refund
// query endpoints, which check the merchant's request signature and sign
// every answer with the fake's platform key, and a notifier that encrypts
// resources with the APIv3 key, signs the Wechatpay-* headers at every
// attempt and pushes notifications until acknowledged the way WeChat Pay
// judges an acknowledgement (HTTP 200 or 204, whatever the body), on a
// compressed retry schedule.
//
// Typical use:
//
//	fake := wechatpaytest.New(t, wechatpaytest.Options{})
//	cfg := fake.Config()
//	cfg.NotifyURL = webhookURL
//	ch, _ := wechatpay.New(cfg)
//	p, _ := ch.CreatePayment(ctx, order)  // the fake now holds a NOTPAY order
//	n, _ := fake.Pay(order.ID)            // the payer pays: TRANSACTION.SUCCESS is pushed
//	fake.WaitIdle(ctx)                    // all notifications acknowledged or given up
//
// The fake implements the protocol independently of package wechatpay (it
// only borrows its Config type), so a signing mistake in the adapter fails
// the tests instead of being mirrored. RSA-2048 keys are generated once per
// process; the APIv3 key is random per fake unless given.
package wechatpaytest

import (
	"context"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
	"github.com/diamondd/diamondd/internal/channel/wechatpay"
)

// Trade states and refund statuses, as WeChat Pay names them.
const (
	StateNotPay  = "NOTPAY"
	StateSuccess = "SUCCESS"
	StateRefund  = "REFUND" // paid, then (partly) refunded
	StateClosed  = "CLOSED"

	RefundProcessing = "PROCESSING"
	RefundSuccess    = "SUCCESS"
	RefundClosed     = "CLOSED"
	RefundAbnormal   = "ABNORMAL"
)

// Operations of the API surface (for Fault.Op and Calls).
const (
	OpPrepay      = "prepay"       // POST /v3/pay/transactions/app
	OpQuery       = "query"        // GET /v3/pay/transactions/out-trade-no/{id}
	OpClose       = "close"        // POST /v3/pay/transactions/out-trade-no/{id}/close
	OpRefund      = "refund"       // POST /v3/refund/domestic/refunds
	OpQueryRefund = "query_refund" // GET /v3/refund/domestic/refunds/{out_refund_no}
)

// Defaults for Options.
const (
	DefaultMchID          = "1900000109"
	DefaultAppID          = "wxd678efh567hg6787"
	DefaultPlatformSerial = "PUB_KEY_ID_0119000001092026TEST"
	DefaultMerchantSerial = "3775B6A45ACD588826D15E583A95F5DD00000001"
)

// DefaultRetrySchedule is WeChat Pay's real schedule (15s, 15s, 30s, 3m,
// 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h: sixteen attempts in
// 24h4m) compressed so a minute lasts a millisecond: about 1.5 s in all.
func DefaultRetrySchedule() []time.Duration {
	return channeltest.Compress(15*time.Second, 15*time.Second, 30*time.Second, 3*time.Minute,
		10*time.Minute, 20*time.Minute, 30*time.Minute, 30*time.Minute, 30*time.Minute,
		60*time.Minute, 3*time.Hour, 3*time.Hour, 3*time.Hour, 6*time.Hour, 6*time.Hour)
}

// Options configure a fake. The zero value is ready to use.
type Options struct {
	MchID          string // default DefaultMchID
	AppID          string // default DefaultAppID
	APIv3Key       string // 32 bytes; default random
	PlatformSerial string // serial of the platform key; default DefaultPlatformSerial
	MerchantSerial string // serial the merchant must sign with; default DefaultMerchantSerial
	// NotifyURL, when set, receives every notification instead of the
	// notify_url of the order or refund.
	NotifyURL string
	// RetrySchedule is the wait before each redelivery; attempts are
	// len(RetrySchedule)+1. Nil means DefaultRetrySchedule(); an empty
	// non-nil slice means a single attempt.
	RetrySchedule []time.Duration
	// NotifyTimeout bounds one delivery attempt; default 2 s.
	NotifyTimeout time.Duration
	// Now is the fake's clock (signature timestamps, times); default time.Now.
	Now func() time.Time
	// RefundsPending makes refunds answer PROCESSING and stay so until
	// CompleteRefund; by default they succeed at once (and REFUND.SUCCESS is
	// pushed).
	RefundsPending bool
	// MerchantKey (ours, as the adapter holds it) and PlatformKey replace the
	// process-wide generated keys.
	MerchantKey, PlatformKey *rsa.PrivateKey
}

// Order is a snapshot of one order at the fake.
type Order struct {
	OutTradeNo    string
	TransactionID string // set when paid
	PrepayID      string
	TradeState    string
	Description   string
	NotifyURL     string
	TimeExpire    string
	TotalFen      int64
	RefundedFen   int64 // refunds not closed (processing, abnormal or succeeded)
	CreatedAt     time.Time
	PaidAt        time.Time
	Refunds       []Refund // in the order they were created
}

// Refund is a snapshot of one refund (one per out_refund_no).
type Refund struct {
	OutRefundNo   string
	RefundID      string
	OutTradeNo    string
	TransactionID string
	Status        string
	Reason        string
	NotifyURL     string
	AmountFen     int64
	TotalFen      int64
	CreatedAt     time.Time
	SuccessAt     time.Time
}

// Notification is one notification the fake sends (and resends). The body
// is fixed; the signed headers are made at each attempt.
type Notification struct {
	ID        string // the notification id, the same on every redelivery
	EventType string // TRANSACTION.SUCCESS, REFUND.SUCCESS, …
	OrderID   string
	RefundID  string // out_refund_no on refund notifications
	URL       string
	Body      []byte // the JSON envelope that is POSTed
	Resource  []byte // the decrypted resource, for assertions
}

// Delivery is one attempt to deliver a notification; Acked means the
// answer was 200 or 204.
type Delivery = channeltest.Delivery

// Fault is a failure injected into the next call of Op.
type Fault struct {
	Op string
	// BeforeApply makes the call fail before it changes anything. By default
	// the call takes effect and only its answer is spoiled: the refund that
	// "timed out" did happen.
	BeforeApply bool
	// Delay holds the answer back; longer than the adapter's timeout, it is a
	// timeout the adapter sees.
	Delay time.Duration
	// Status, when not 0, replaces the answer with this status and a signed
	// {"code":Code,"message":…} body (Code defaults to SYSTEM_ERROR).
	Status int
	Code   string
	// BadSignature answers with a signature that does not verify.
	BadSignature bool
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	opts        Options
	merchantKey *rsa.PrivateKey
	platformKey *rsa.PrivateKey
	srv         *httptest.Server
	calls       channeltest.Calls[Fault]
	notifier    *channeltest.Notifier

	mu      sync.Mutex
	orders  map[string]*order
	byTxn   map[string]string
	refunds map[string]*Refund
	seq     int64
}

type order struct {
	Order
	refundNos []string
}

// processKeys stands in for Options.MerchantKey and PlatformKey.
var processKeys channeltest.KeyPair

// New starts a fake for a test and closes it when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("wechatpaytest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a fake outside a test (a load tool); Close stops it.
func Start(opts Options) (*Server, error) {
	if opts.MchID == "" {
		opts.MchID = DefaultMchID
	}
	if opts.AppID == "" {
		opts.AppID = DefaultAppID
	}
	if opts.APIv3Key == "" {
		opts.APIv3Key = channeltest.RandomHex(16) // 32 characters
	}
	if len(opts.APIv3Key) != 32 {
		return nil, fmt.Errorf("APIv3Key is %d bytes, want 32", len(opts.APIv3Key))
	}
	if opts.PlatformSerial == "" {
		opts.PlatformSerial = DefaultPlatformSerial
	}
	if opts.MerchantSerial == "" {
		opts.MerchantSerial = DefaultMerchantSerial
	}
	if opts.RetrySchedule == nil {
		opts.RetrySchedule = DefaultRetrySchedule()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	merchant, platform, err := processKeys.Or(opts.MerchantKey, opts.PlatformKey)
	if err != nil {
		return nil, fmt.Errorf("generate keys: %w", err)
	}
	s := &Server{
		opts:        opts,
		merchantKey: merchant,
		platformKey: platform,
		orders:      map[string]*order{},
		byTxn:       map[string]string{},
		refunds:     map[string]*Refund{},
	}
	s.notifier = channeltest.NewNotifier(channeltest.NotifierOptions{
		Schedule:    opts.RetrySchedule,
		Timeout:     opts.NotifyTimeout,
		Now:         opts.Now,
		ContentType: "application/json",
		Header:      func(body []byte) http.Header { return s.SignHeaders(body, time.Time{}) },
		// The status decides: a 200 with {"code":"FAIL"} is still an ack.
		Acked: func(status int, _ string) bool {
			return status == http.StatusOK || status == http.StatusNoContent
		},
	})
	s.srv = httptest.NewServer(s.handler())
	return s, nil
}

// Close stops the notifier and the server.
func (s *Server) Close() {
	s.notifier.Close()
	s.srv.Close()
}

// URL is the API base URL (Config.BaseURL).
func (s *Server) URL() string { return s.srv.URL }

// MchID, AppID, APIv3Key and PlatformSerial are what the fake expects.
func (s *Server) MchID() string          { return s.opts.MchID }
func (s *Server) AppID() string          { return s.opts.AppID }
func (s *Server) APIv3Key() string       { return s.opts.APIv3Key }
func (s *Server) PlatformSerial() string { return s.opts.PlatformSerial }

// Config is everything the adapter needs except NotifyURL (and an
// HTTPClient, if the default is not wanted).
func (s *Server) Config() wechatpay.Config {
	return wechatpay.Config{
		MchID:        s.opts.MchID,
		AppID:        s.opts.AppID,
		PrivateKey:   s.merchantKey,
		CertSerial:   s.opts.MerchantSerial,
		APIv3Key:     s.opts.APIv3Key,
		PlatformKeys: map[string]*rsa.PublicKey{s.opts.PlatformSerial: &s.platformKey.PublicKey},
		BaseURL:      s.URL(),
	}
}

// MerchantKeyPEM is the merchant private key as PKCS #8 PEM (apiclient_key.pem).
func (s *Server) MerchantKeyPEM() []byte { return channeltest.PrivateKeyPEM(s.merchantKey) }

// PlatformPublicKeyPEM is the platform public key as PKIX PEM (the "WeChat
// Pay public key" mode; its serial is PlatformSerial).
func (s *Server) PlatformPublicKeyPEM() []byte {
	return channeltest.PublicKeyPEM(&s.platformKey.PublicKey)
}

// Env writes the key files into dir and returns the environment the service
// reads (WECHATPAY_MCH_ID, _APP_ID, _PRIVATE_KEY_FILE, _CERT_SERIAL,
// _APIV3_KEY, _PLATFORM_KEYS, _BASE_URL).
func (s *Server) Env(dir string) (map[string]string, error) {
	priv, pub, err := channeltest.WriteKeyFiles(dir, "wechatpay_apiclient_key.pem", s.merchantKey,
		"wechatpay_platform_public_key.pem", &s.platformKey.PublicKey)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		wechatpay.EnvMchID:        s.opts.MchID,
		wechatpay.EnvAppID:        s.opts.AppID,
		wechatpay.EnvPrivateKey:   priv,
		wechatpay.EnvCertSerial:   s.opts.MerchantSerial,
		wechatpay.EnvAPIv3Key:     s.opts.APIv3Key,
		wechatpay.EnvPlatformKeys: s.opts.PlatformSerial + "=" + pub,
		wechatpay.EnvBaseURL:      s.URL(),
	}, nil
}

// Order returns a snapshot of the order for out_trade_no.
func (s *Server) Order(orderID string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[orderID]
	if !ok {
		return Order{}, false
	}
	return s.snapshotLocked(o), true
}

func (s *Server) snapshotLocked(o *order) Order {
	c := o.Order
	c.Refunds = nil
	for _, no := range o.refundNos {
		c.Refunds = append(c.Refunds, *s.refunds[no])
	}
	return c
}

// Refund returns a snapshot of the refund for out_refund_no.
func (s *Server) Refund(outRefundNo string) (Refund, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok {
		return Refund{}, false
	}
	return *r, true
}

// Calls counts the calls of op received so far (verified or not).
func (s *Server) Calls(op string) int { return s.calls.Count(op) }

// InjectFault spoils the next call of f.Op. Faults queue up in order.
func (s *Server) InjectFault(f Fault) { s.calls.Inject(f.Op, f) }

// LoseNextNotifications makes the next n notifications never be pushed;
// they are still returned by the call that caused them and can be
// delivered with Deliver or Redeliver.
func (s *Server) LoseNextNotifications(n int) { s.notifier.LoseNext(n) }

// Deliveries returns every delivery attempt so far, oldest first.
func (s *Server) Deliveries() []Delivery { return s.notifier.Deliveries() }

// WaitIdle blocks until no notification is being pushed (each was
// acknowledged or ran out of attempts), or ctx ends.
func (s *Server) WaitIdle(ctx context.Context) error {
	if err := s.notifier.WaitIdle(ctx); err != nil {
		return fmt.Errorf("wechatpaytest: %w", err)
	}
	return nil
}

// Pay is the payer paying an order placed through the prepay endpoint: it
// becomes SUCCESS with a transaction id, and TRANSACTION.SUCCESS is pushed.
func (s *Server) Pay(orderID string) (Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[orderID]
	if !ok {
		return Notification{}, fmt.Errorf("wechatpaytest: no order %s (create the payment first)", orderID)
	}
	if o.TradeState != StateNotPay {
		return Notification{}, fmt.Errorf("wechatpaytest: order %s is %s, not payable", orderID, o.TradeState)
	}
	now := s.opts.Now()
	s.seq++
	o.TradeState = StateSuccess
	o.PaidAt = now
	o.TransactionID = "42000" + now.Format("20060102") + fmt.Sprintf("%015d", s.seq)
	s.byTxn[o.TransactionID] = o.OutTradeNo
	return s.notifyLocked("TRANSACTION.SUCCESS", "支付成功", "transaction", s.transactionJSON(o), o.OutTradeNo, "", o.NotifyURL)
}

// Expire closes an unpaid order as WeChat Pay does when time_expire passes
// (WeChat sends no notification for it).
func (s *Server) Expire(orderID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[orderID]
	if !ok {
		return fmt.Errorf("wechatpaytest: no order %s", orderID)
	}
	if o.TradeState != StateNotPay {
		return fmt.Errorf("wechatpaytest: order %s is %s, not waiting", orderID, o.TradeState)
	}
	o.TradeState = StateClosed
	return nil
}

// CompleteRefund moves a PROCESSING (or ABNORMAL) refund to status
// (SUCCESS, CLOSED or ABNORMAL) and pushes REFUND.<status>. A closed refund
// gives its amount back to the order's refundable amount.
func (s *Server) CompleteRefund(outRefundNo, status string) (Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok {
		return Notification{}, fmt.Errorf("wechatpaytest: no refund %s", outRefundNo)
	}
	if r.Status != RefundProcessing && r.Status != RefundAbnormal {
		return Notification{}, fmt.Errorf("wechatpaytest: refund %s is already %s", outRefundNo, r.Status)
	}
	switch status {
	case RefundSuccess:
		r.SuccessAt = s.opts.Now()
	case RefundClosed:
		s.orders[r.OutTradeNo].RefundedFen -= r.AmountFen
	case RefundAbnormal:
	default:
		return Notification{}, fmt.Errorf("wechatpaytest: refund status %q", status)
	}
	r.Status = status
	return s.notifyRefundLocked(r)
}

func upperHex(n int) string { return strings.ToUpper(channeltest.RandomHex(n)) }
