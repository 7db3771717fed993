// Package wechatpay is the WeChat Pay API v3 channel adapter, written on the
// standard library from the protocol notes in reference/payment-channels.md §2.
//
// Requests are signed with our merchant key (WECHATPAY2-SHA256-RSA2048);
// every answer and every notification is verified with the WeChat Pay
// platform key named by its Wechatpay-Serial header, within five minutes of
// our clock, before anything in it is believed. Notification resources are
// decrypted with the APIv3 key (AES-256-GCM). A network error, a timeout, a
// 5xx or an unverifiable answer is an error (outcome unknown), never a
// failure.
package wechatpay

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
)

// Name is the channel's identifier.
const Name = "wechatpay"

const (
	// ProductionBaseURL is the API v3 host (backup: https://api2.mch.weixin.qq.com).
	ProductionBaseURL = "https://api.mch.weixin.qq.com"
	// DefaultTimeout bounds every API call unless Config.Timeout says otherwise.
	DefaultTimeout = 10 * time.Second
	// MaxClockSkew is how far a signed timestamp may be from our clock, either
	// way (the official SDK's five minutes).
	MaxClockSkew = 5 * time.Minute
)

// WeChat writes times as RFC 3339 in Beijing time; a fixed zone avoids
// depending on the tz database.
var beijing = time.FixedZone("CST", 8*60*60)

// Config is what the adapter needs. Use LoadConfig to build it from the
// environment.
type Config struct {
	MchID      string          // our merchant id
	AppID      string          // the app's WeChat app id
	PrivateKey *rsa.PrivateKey // our merchant API private key
	CertSerial string          // serial of our merchant API certificate
	APIv3Key   string          // 32-byte APIv3 key (decrypts notifications)
	// PlatformKeys are WeChat Pay's keys by serial (platform certificate
	// serials, in either case, and/or PUB_KEY_ID_…); several during a
	// rotation.
	PlatformKeys map[string]*rsa.PublicKey
	BaseURL      string // ProductionBaseURL, or a fake's URL
	NotifyURL    string // where WeChat Pay posts notifications (our /v1/webhooks/wechatpay)
	// HTTPClient makes API calls; nil means a client with a DefaultTimeout timeout.
	HTTPClient *http.Client
	// Timeout bounds each API call (on top of any HTTPClient timeout); 0 means DefaultTimeout.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Channel is the WeChat Pay adapter. It is safe for concurrent use.
type Channel struct {
	mchID     string
	appID     string
	key       *rsa.PrivateKey
	serial    string
	apiV3Key  []byte
	platform  map[string]*rsa.PublicKey
	baseURL   string
	notifyURL string
	client    *http.Client
	timeout   time.Duration
	now       func() time.Time
}

var _ channel.Channel = (*Channel)(nil)

// New validates cfg and builds the adapter.
func New(cfg Config) (*Channel, error) {
	var missing []string
	for _, f := range []struct {
		name  string
		empty bool
	}{
		{"MchID", cfg.MchID == ""},
		{"AppID", cfg.AppID == ""},
		{"PrivateKey", cfg.PrivateKey == nil},
		{"CertSerial", cfg.CertSerial == ""},
		{"APIv3Key", cfg.APIv3Key == ""},
		{"PlatformKeys", len(cfg.PlatformKeys) == 0},
		{"BaseURL", cfg.BaseURL == ""},
		{"NotifyURL", cfg.NotifyURL == ""},
	} {
		if f.empty {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("wechatpay: config: missing %s", strings.Join(missing, ", "))
	}
	if len(cfg.APIv3Key) != 32 {
		return nil, fmt.Errorf("wechatpay: config: APIv3Key is %d bytes, want 32", len(cfg.APIv3Key))
	}
	if cfg.PrivateKey.N.BitLen() < 2048 {
		return nil, fmt.Errorf("wechatpay: config: PrivateKey is %d bits, want 2048", cfg.PrivateKey.N.BitLen())
	}
	platform := make(map[string]*rsa.PublicKey, len(cfg.PlatformKeys))
	for serial, k := range cfg.PlatformKeys {
		if serial == "" || k == nil {
			return nil, errors.New("wechatpay: config: PlatformKeys has an empty serial or a nil key")
		}
		if _, dup := platform[platformSerial(serial)]; dup {
			return nil, fmt.Errorf("wechatpay: config: PlatformKeys names serial %s twice", serial)
		}
		platform[platformSerial(serial)] = k
	}
	for name, s := range map[string]string{"BaseURL": cfg.BaseURL, "NotifyURL": cfg.NotifyURL} {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("wechatpay: config: %s %q is not an absolute http(s) URL", name, s)
		}
	}
	// WeChat refuses notify URLs with a query string.
	if u, _ := url.Parse(cfg.NotifyURL); u.RawQuery != "" {
		return nil, errors.New("wechatpay: config: NotifyURL must not have a query string")
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("wechatpay: config: Timeout is negative")
	}
	c := &Channel{
		mchID:     cfg.MchID,
		appID:     cfg.AppID,
		key:       cfg.PrivateKey,
		serial:    cfg.CertSerial,
		apiV3Key:  []byte(cfg.APIv3Key),
		platform:  platform,
		baseURL:   strings.TrimRight(cfg.BaseURL, "/"),
		notifyURL: cfg.NotifyURL,
		client:    cfg.HTTPClient,
		timeout:   cfg.Timeout,
		now:       cfg.Now,
	}
	if c.client == nil {
		c.client = &http.Client{Timeout: DefaultTimeout}
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Name returns "wechatpay".
func (c *Channel) Name() string { return Name }

type amount struct {
	Total    int64  `json:"total"`
	Currency string `json:"currency"`
}

type appPrepay struct {
	AppID       string `json:"appid"`
	MchID       string `json:"mchid"`
	Description string `json:"description"`
	OutTradeNo  string `json:"out_trade_no"`
	TimeExpire  string `json:"time_expire,omitempty"`
	NotifyURL   string `json:"notify_url"`
	Amount      amount `json:"amount"`
}

// CreatePayment places an APP order (POST /v3/pay/transactions/app) and
// returns what the app SDK's PayReq needs, signed with our key per the APP
// invoke rules. WeChat answers the same prepay_id when the same order is
// placed again, so a retry is safe.
func (c *Channel) CreatePayment(ctx context.Context, o channel.Order) (channel.Payment, error) {
	if o.ID == "" {
		return channel.Payment{}, errors.New("wechatpay: create payment: order id is empty")
	}
	if o.AmountFen <= 0 {
		return channel.Payment{}, fmt.Errorf("wechatpay: create payment %s: amount %d fen is not positive", o.ID, o.AmountFen)
	}
	desc := o.Subject
	if desc == "" {
		desc = fmt.Sprintf("%d diamonds", o.Diamonds)
	}
	req := appPrepay{
		AppID:       c.appID,
		MchID:       c.mchID,
		Description: desc,
		OutTradeNo:  o.ID,
		NotifyURL:   c.notifyURL,
		Amount:      amount{Total: o.AmountFen, Currency: "CNY"},
	}
	// time_expire stops WeChat taking money for an order we already expired.
	if !o.ExpiresAt.IsZero() {
		req.TimeExpire = o.ExpiresAt.In(beijing).Format(time.RFC3339)
	}
	var out struct {
		PrepayID string `json:"prepay_id"`
	}
	res, err := c.do(ctx, http.MethodPost, "/v3/pay/transactions/app", req)
	if err != nil {
		return channel.Payment{}, fmt.Errorf("wechatpay: create payment %s: %w", o.ID, err)
	}
	if res.status != http.StatusOK {
		return channel.Payment{}, fmt.Errorf("wechatpay: create payment %s: %s", o.ID, res.apiError())
	}
	if err := res.decode(&out); err != nil || out.PrepayID == "" {
		return channel.Payment{}, fmt.Errorf("wechatpay: create payment %s: no prepay_id in answer (%v)", o.ID, err)
	}
	nonce, err := newNonce()
	if err != nil {
		return channel.Payment{}, fmt.Errorf("wechatpay: create payment %s: %w", o.ID, err)
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	sig, err := c.sign(c.appID + "\n" + ts + "\n" + nonce + "\n" + out.PrepayID + "\n")
	if err != nil {
		return channel.Payment{}, fmt.Errorf("wechatpay: create payment %s: %w", o.ID, err)
	}
	return channel.Payment{Pay: map[string]any{
		"type":      "wechatpay_app",
		"appid":     c.appID,
		"partnerid": c.mchID,
		"prepayid":  out.PrepayID,
		"package":   "Sign=WXPay",
		"noncestr":  nonce,
		"timestamp": ts,
		"sign":      sig,
	}}, nil
}
