// Package alipay is the Alipay channel adapter (open platform, alipay.trade.*,
// RSA2 key mode), written on the standard library from the protocol notes in
// reference/payment-channels.md §1.
//
// The app pays with alipay.trade.app.pay: CreatePayment only signs an order
// string, the app hands it to the Alipay SDK, and Alipay reports the outcome
// with a form-encoded notification. Every gateway answer is signed by Alipay
// and verified before it is believed; an answer that cannot be verified, a
// network error or a timeout is an error (outcome unknown), never a failure.
package alipay

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/money"
)

// Name is the channel's identifier.
const Name = "alipay"

const (
	// ProductionGateway is Alipay's production gateway.
	ProductionGateway = "https://openapi.alipay.com/gateway.do"
	// SandboxGateway is the open-platform sandbox gateway.
	SandboxGateway = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
	// DefaultTimeout bounds every gateway call unless Config.Timeout says otherwise.
	DefaultTimeout = 10 * time.Second
)

// Alipay writes and expects times as "yyyy-MM-dd HH:mm:ss" in Beijing time.
// A fixed zone avoids depending on the tz database being installed.
var beijing = time.FixedZone("CST", 8*60*60)

const timeLayout = "2006-01-02 15:04:05"

// Config is what the adapter needs. Use LoadConfig to build it from the
// environment.
type Config struct {
	AppID string // our Alipay app id
	// SellerID is our merchant's partner id (2088 and 12 digits). When set, a
	// notification must name it as seller_id; app_id is always checked.
	SellerID        string
	PrivateKey      *rsa.PrivateKey // our app private key (RSA2 signs requests and order strings)
	AlipayPublicKey *rsa.PublicKey  // Alipay's public key (verifies notifications and responses)
	BaseURL         string          // gateway URL, e.g. ProductionGateway
	NotifyURL       string          // where Alipay posts notifications (our /v1/webhooks/alipay)
	// HTTPClient makes gateway calls; nil means a client with a DefaultTimeout timeout.
	HTTPClient *http.Client
	// Timeout bounds each gateway call (on top of any HTTPClient timeout); 0 means DefaultTimeout.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Channel is the Alipay adapter. It is safe for concurrent use.
type Channel struct {
	appID     string
	sellerID  string
	key       *rsa.PrivateKey
	alipayKey *rsa.PublicKey
	gateway   string
	notifyURL string
	client    *http.Client
	timeout   time.Duration
	now       func() time.Time
}

var _ channel.Channel = (*Channel)(nil)

// New validates cfg and builds the adapter.
func New(cfg Config) (*Channel, error) {
	var missing []string
	if cfg.AppID == "" {
		missing = append(missing, "AppID")
	}
	if cfg.PrivateKey == nil {
		missing = append(missing, "PrivateKey")
	}
	if cfg.AlipayPublicKey == nil {
		missing = append(missing, "AlipayPublicKey")
	}
	if cfg.BaseURL == "" {
		missing = append(missing, "BaseURL")
	}
	if cfg.NotifyURL == "" {
		missing = append(missing, "NotifyURL")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("alipay: config: missing %s", strings.Join(missing, ", "))
	}
	if err := checkURL(cfg.BaseURL); err != nil {
		return nil, fmt.Errorf("alipay: config: BaseURL: %w", err)
	}
	if err := checkURL(cfg.NotifyURL); err != nil {
		return nil, fmt.Errorf("alipay: config: NotifyURL: %w", err)
	}
	// RSA2 is defined on 2048-bit keys; a shorter key is a configuration mistake.
	if cfg.PrivateKey.N.BitLen() < 2048 {
		return nil, fmt.Errorf("alipay: config: PrivateKey is %d bits, RSA2 needs at least 2048", cfg.PrivateKey.N.BitLen())
	}
	if cfg.AlipayPublicKey.N.BitLen() < 2048 {
		return nil, fmt.Errorf("alipay: config: AlipayPublicKey is %d bits, RSA2 needs at least 2048", cfg.AlipayPublicKey.N.BitLen())
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("alipay: config: Timeout is negative")
	}
	if cfg.SellerID != "" && !isPartnerID(cfg.SellerID) {
		return nil, fmt.Errorf("alipay: config: SellerID %q is not 2088 followed by 12 digits", clip(cfg.SellerID))
	}
	c := &Channel{
		appID:     cfg.AppID,
		sellerID:  cfg.SellerID,
		key:       cfg.PrivateKey,
		alipayKey: cfg.AlipayPublicKey,
		gateway:   cfg.BaseURL,
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

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// Name returns "alipay".
func (c *Channel) Name() string { return Name }

// PreparesOffline: the app-pay order string is signed locally; Alipay hears
// of the trade only when the app submits it.
func (c *Channel) PreparesOffline() {}

// appPayBiz is the biz_content of alipay.trade.app.pay.
type appPayBiz struct {
	OutTradeNo  string `json:"out_trade_no"`
	TotalAmount string `json:"total_amount"`
	Subject     string `json:"subject"`
	ProductCode string `json:"product_code"`
	TimeExpire  string `json:"time_expire,omitempty"`
}

// CreatePayment signs an alipay.trade.app.pay order string for the app SDK.
// It makes no network call: Alipay learns about the trade when the app
// submits the string.
func (c *Channel) CreatePayment(ctx context.Context, o channel.Order) (channel.Payment, error) {
	if o.ID == "" {
		return channel.Payment{}, errors.New("alipay: create payment: order id is empty")
	}
	if o.AmountFen <= 0 {
		return channel.Payment{}, fmt.Errorf("alipay: create payment %s: amount %d fen is not positive", o.ID, o.AmountFen)
	}
	subject := o.Subject
	if subject == "" {
		// Alipay requires a subject; it is what the payer sees in the cashier.
		subject = fmt.Sprintf("%d diamonds", o.Diamonds)
	}
	biz := appPayBiz{
		OutTradeNo:  o.ID,
		TotalAmount: money.FormatFen(o.AmountFen),
		Subject:     subject,
		ProductCode: "QUICK_MSECURITY_PAY",
	}
	// time_expire makes Alipay refuse payment after our order expired, which
	// keeps late payments (and the refunds they cause) rare.
	if !o.ExpiresAt.IsZero() {
		biz.TimeExpire = o.ExpiresAt.In(beijing).Format(timeLayout)
	}
	params, err := c.requestParams("alipay.trade.app.pay", biz)
	if err != nil {
		return channel.Payment{}, fmt.Errorf("alipay: create payment %s: %w", o.ID, err)
	}
	return channel.Payment{Pay: map[string]any{
		"type":         "alipay_app",
		"order_string": params.Encode(),
	}}, nil
}

// requestParams builds and signs the public request parameters of method.
func (c *Channel) requestParams(method string, biz any) (url.Values, error) {
	bizJSON, err := json.Marshal(biz)
	if err != nil {
		return nil, fmt.Errorf("encode biz_content: %w", err)
	}
	p := url.Values{}
	p.Set("app_id", c.appID)
	p.Set("method", method)
	p.Set("format", "JSON")
	p.Set("charset", "utf-8")
	p.Set("sign_type", "RSA2")
	p.Set("timestamp", c.now().In(beijing).Format(timeLayout))
	p.Set("version", "1.0")
	if method == "alipay.trade.app.pay" {
		p.Set("notify_url", c.notifyURL)
	}
	p.Set("biz_content", string(bizJSON))
	sig, err := sign(c.key, signContent(p, "sign"))
	if err != nil {
		return nil, err
	}
	p.Set("sign", sig)
	return p, nil
}
