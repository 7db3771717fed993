// Package config reads diamondd's configuration from the environment and
// validates it, so that a bad or missing value stops the process at start
// with a message naming the variable.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Config is every setting of the service.
type Config struct {
	DatabaseURL string        `env:"DATABASE_URL"`
	DBMaxConns  int32         `env:"DB_MAX_CONNS" envDefault:"32"`
	RedisURL    string        `env:"REDIS_URL"`
	HTTPAddr    string        `env:"HTTP_ADDR" envDefault:":8080"`
	LogLevel    string        `env:"LOG_LEVEL" envDefault:"info"`
	ShutdownTTL time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
	// PprofAddr, when set, serves net/http/pprof on its own loopback
	// listener (never on the API's port).
	PprofAddr string `env:"PPROF_ADDR"`

	JWTSecret        string `env:"JWT_SECRET"`
	JWTPublicKeyFile string `env:"JWT_PUBLIC_KEY_FILE"`
	JWTJWKSFile      string `env:"JWT_JWKS_FILE"`
	JWTIssuer        string `env:"JWT_ISSUER"`
	JWTAudience      string `env:"JWT_AUDIENCE"`

	IdempotencyTTL time.Duration `env:"IDEMPOTENCY_TTL" envDefault:"168h"`

	// Channels: which are offered, and which are switched off for maintenance.
	Channels             []string `env:"CHANNELS" envSeparator:","`
	ChannelsMaintenance  []string `env:"CHANNELS_MAINTENANCE" envSeparator:","`
	SandboxWebhookSecret string   `env:"SANDBOX_WEBHOOK_SECRET"`
	SandboxAutoSettle    bool     `env:"SANDBOX_AUTO_SETTLE"`
	MonthlyPayMaxFen     int64    `env:"MONTHLY_PAY_MAX_FEN" envDefault:"200000"`
	// PublicBaseURL is where channels reach our webhooks; each channel's
	// notify URL defaults to PUBLIC_BASE_URL/v1/webhooks/{channel}.
	PublicBaseURL  string        `env:"PUBLIC_BASE_URL"`
	ChannelTimeout time.Duration `env:"CHANNEL_TIMEOUT" envDefault:"10s"`

	AlipayAppID          string `env:"ALIPAY_APP_ID"`
	AlipayPrivateKeyFile string `env:"ALIPAY_PRIVATE_KEY_FILE"`
	AlipayPublicKeyFile  string `env:"ALIPAY_PUBLIC_KEY_FILE"`
	AlipayBaseURL        string `env:"ALIPAY_BASE_URL"`
	AlipayNotifyURL      string `env:"ALIPAY_NOTIFY_URL"`
	AlipaySellerID       string `env:"ALIPAY_SELLER_ID"`

	WechatpayMchID          string `env:"WECHATPAY_MCH_ID"`
	WechatpayAppID          string `env:"WECHATPAY_APP_ID"`
	WechatpayPrivateKeyFile string `env:"WECHATPAY_PRIVATE_KEY_FILE"`
	WechatpayCertSerial     string `env:"WECHATPAY_CERT_SERIAL"`
	WechatpayAPIv3Key       string `env:"WECHATPAY_APIV3_KEY"`
	WechatpayPlatformKeys   string `env:"WECHATPAY_PLATFORM_KEYS"`
	WechatpayBaseURL        string `env:"WECHATPAY_BASE_URL"`
	WechatpayNotifyURL      string `env:"WECHATPAY_NOTIFY_URL"`

	// Pricing.
	DiamondsPerYuan int64  `env:"DIAMONDS_PER_YUAN" envDefault:"10"`
	RechargeMinFen  int64  `env:"RECHARGE_MIN_FEN" envDefault:"100"`
	RechargeMaxFen  int64  `env:"RECHARGE_MAX_FEN" envDefault:"5000000"`
	Packages        string `env:"PACKAGES"` // id:diamonds:amount_fen[:label],... (default: the five standard packages)

	OrderTTL          time.Duration `env:"ORDER_TTL" envDefault:"15m"`
	PendingQueryAfter time.Duration `env:"PENDING_QUERY_AFTER" envDefault:"2m"`
	WorkerInterval    time.Duration `env:"WORKER_INTERVAL" envDefault:"5s"`

	// Refunds.
	FastRefundWindow   time.Duration `env:"FAST_REFUND_WINDOW" envDefault:"24h"`
	ReviewThresholdFen int64         `env:"REVIEW_THRESHOLD_FEN" envDefault:"100000"`
	RefundSLA          time.Duration `env:"REFUND_SLA" envDefault:"72h"`
	RefundPollInterval time.Duration `env:"REFUND_POLL_INTERVAL" envDefault:"1m"`

	// Rate limits per user (0 switches one off).
	RateLimitRechargePerMin int `env:"RATE_LIMIT_RECHARGE_PER_MIN" envDefault:"20"`
	RateLimitRefundPerMin   int `env:"RATE_LIMIT_REFUND_PER_MIN" envDefault:"5"`

	// Accidental-recharge rules.
	RiskDuplicateWindow     time.Duration `env:"RISK_DUPLICATE_WINDOW" envDefault:"10m"`
	RiskBurstWindow         time.Duration `env:"RISK_BURST_WINDOW" envDefault:"10m"`
	RiskBurstCount          int           `env:"RISK_BURST_COUNT" envDefault:"3"`
	RiskUnusualMultiple     int64         `env:"RISK_UNUSUAL_MULTIPLE" envDefault:"10"`
	RiskUnusualMinFen       int64         `env:"RISK_UNUSUAL_MIN_FEN" envDefault:"50000"`
	RiskFirstRechargeMinFen int64         `env:"RISK_FIRST_RECHARGE_MIN_FEN" envDefault:"100000"`
}

// Env returns a setting by its environment variable name, as configured
// (the channel adapters read their own settings through it).
func (c Config) Env(name string) string {
	t := reflect.TypeFor[Config]()
	v := reflect.ValueOf(c)
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("env"), ",")
		if tag == name && v.Field(i).Kind() == reflect.String {
			return v.Field(i).String()
		}
	}
	return ""
}

// Known channel names.
var knownChannels = map[string]bool{"sandbox": true, "monthly_pay": true, "alipay": true, "wechatpay": true}

// ChannelList is CHANNELS, or by default the sandbox (when its secret is
// set) and the monthly credit line.
func (c Config) ChannelList() []string {
	if len(c.Channels) > 0 {
		return c.Channels
	}
	if c.SandboxWebhookSecret != "" {
		return []string{"sandbox", "monthly_pay"}
	}
	return []string{"monthly_pay"}
}

// Load reads the environment.
func Load() (Config, error) {
	c, err := env.ParseAs[Config]()
	if err != nil {
		return Config{}, explain(err)
	}
	// "sandbox, monthly_pay" means what it says.
	for _, list := range [][]string{c.Channels, c.ChannelsMaintenance} {
		for i := range list {
			list[i] = strings.TrimSpace(list[i])
		}
	}
	return c, c.Validate()
}

// Defaults is the configuration of an empty environment: every default
// applied, nothing required set (tests start from it).
func Defaults() Config {
	c, err := env.ParseAsWithOptions[Config](env.Options{Environment: map[string]string{}})
	if err != nil {
		panic("config defaults: " + err.Error()) // the struct tags are wrong
	}
	return c
}

// Validate checks what the types alone do not.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL is required (postgres://user@host:5432/db)"))
	}
	if c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSFile == "" {
		errs = append(errs, errors.New("JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE is required"))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 16 {
		errs = append(errs, errors.New("JWT_SECRET must be at least 16 characters"))
	}
	if c.DBMaxConns < 2 {
		errs = append(errs, errors.New("DB_MAX_CONNS must be at least 2"))
	}
	if c.IdempotencyTTL < 7*24*time.Hour {
		errs = append(errs, errors.New("IDEMPOTENCY_TTL must be at least 168h (keys are kept at least 7 days)"))
	}
	if c.PprofAddr != "" {
		host, _, err := net.SplitHostPort(c.PprofAddr)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			errs = append(errs, fmt.Errorf("PPROF_ADDR %q must be a loopback host:port (profiles are not for the network)", c.PprofAddr))
		}
	}
	seen := map[string]bool{}
	for _, ch := range c.ChannelList() {
		if !knownChannels[ch] {
			errs = append(errs, fmt.Errorf("CHANNELS: unknown channel %q (known: sandbox, monthly_pay, alipay, wechatpay)", ch))
		}
		if seen[ch] {
			errs = append(errs, fmt.Errorf("CHANNELS: %q is listed twice", ch))
		}
		seen[ch] = true
	}
	for _, ch := range c.ChannelsMaintenance {
		if !seen[ch] {
			errs = append(errs, fmt.Errorf("CHANNELS_MAINTENANCE: %q is not in CHANNELS", ch))
		}
	}
	// Where channels send notifications: checked here so that a typo names
	// its variable, not the adapter's field it ends up in.
	for name, u := range map[string]string{"PUBLIC_BASE_URL": c.PublicBaseURL,
		"ALIPAY_NOTIFY_URL": c.AlipayNotifyURL, "WECHATPAY_NOTIFY_URL": c.WechatpayNotifyURL} {
		if p, err := url.Parse(u); u != "" && (err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "") {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute http(s) URL", name, u))
		}
	}
	if seen["sandbox"] && c.SandboxWebhookSecret == "" {
		errs = append(errs, errors.New("SANDBOX_WEBHOOK_SECRET is required when the sandbox channel is in CHANNELS"))
	}
	// It authorises crediting diamonds, as JWT_SECRET authorises roles.
	if c.SandboxWebhookSecret != "" && len(c.SandboxWebhookSecret) < 16 {
		errs = append(errs, errors.New("SANDBOX_WEBHOOK_SECRET must be at least 16 characters"))
	}
	if c.DiamondsPerYuan <= 0 || c.DiamondsPerYuan > 100 {
		errs = append(errs, errors.New("DIAMONDS_PER_YUAN must be between 1 and 100"))
	}
	if c.RechargeMinFen <= 0 || c.RechargeMaxFen < c.RechargeMinFen {
		errs = append(errs, errors.New("RECHARGE_MIN_FEN must be positive and RECHARGE_MAX_FEN at least RECHARGE_MIN_FEN"))
	}
	if c.MonthlyPayMaxFen <= 0 {
		errs = append(errs, errors.New("MONTHLY_PAY_MAX_FEN must be positive"))
	}
	if _, err := c.PackageList(); err != nil {
		errs = append(errs, err)
	}
	positive := map[string]time.Duration{"ORDER_TTL": c.OrderTTL, "PENDING_QUERY_AFTER": c.PendingQueryAfter,
		"WORKER_INTERVAL": c.WorkerInterval, "FAST_REFUND_WINDOW": c.FastRefundWindow, "REFUND_SLA": c.RefundSLA,
		"REFUND_POLL_INTERVAL": c.RefundPollInterval, "SHUTDOWN_TIMEOUT": c.ShutdownTTL, "CHANNEL_TIMEOUT": c.ChannelTimeout}
	for name, d := range positive {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be a positive duration", name))
		}
	}
	if c.ReviewThresholdFen <= 0 {
		errs = append(errs, errors.New("REVIEW_THRESHOLD_FEN must be positive"))
	}
	// 0 switches a risk rule off, or for RISK_UNUSUAL_MIN_FEN drops the
	// rule's minimum (risk.Thresholds); a negative value is a typo.
	if c.RiskDuplicateWindow < 0 || c.RiskBurstWindow < 0 {
		errs = append(errs, errors.New("RISK_DUPLICATE_WINDOW and RISK_BURST_WINDOW must be 0 (off) or positive durations"))
	}
	riskNumbers := map[string]int64{"RISK_BURST_COUNT": int64(c.RiskBurstCount), "RISK_UNUSUAL_MULTIPLE": c.RiskUnusualMultiple,
		"RISK_UNUSUAL_MIN_FEN": c.RiskUnusualMinFen, "RISK_FIRST_RECHARGE_MIN_FEN": c.RiskFirstRechargeMinFen}
	for name, n := range riskNumbers {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s must be 0 (off) or positive", name))
		}
	}
	if c.RateLimitRechargePerMin < 0 || c.RateLimitRefundPerMin < 0 {
		errs = append(errs, errors.New("RATE_LIMIT_RECHARGE_PER_MIN and RATE_LIMIT_REFUND_PER_MIN must be 0 (off) or positive"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, not %q", c.LogLevel))
	}
	return errors.Join(errs...)
}

// Package is one configured offer.
type Package struct {
	ID        string
	Diamonds  int64
	AmountFen int64
	Label     string
}

// PackageList parses PACKAGES ("id:diamonds:amount_fen[:label],..."); empty
// means the defaults, returned as nil.
// maxPackageID is the longest package_id a recharge request may carry.
const maxPackageID = 40

func (c Config) PackageList() ([]Package, error) {
	if strings.TrimSpace(c.Packages) == "" {
		return nil, nil
	}
	var out []Package
	ids := map[string]bool{}
	for _, item := range strings.Split(c.Packages, ",") {
		parts := strings.SplitN(strings.TrimSpace(item), ":", 4)
		if len(parts) < 3 || parts[0] == "" || ids[parts[0]] {
			return nil, fmt.Errorf("PACKAGES: %q is not id:diamonds:amount_fen[:label] with a unique id", item)
		}
		if len(parts[0]) > maxPackageID {
			// A longer id would be listed but never bought: the API
			// refuses a package_id over this length (openapi.yaml).
			return nil, fmt.Errorf("PACKAGES: id %q is longer than %d characters", parts[0], maxPackageID)
		}
		// Each number must be the whole field: a price written in yuan
		// ("648.00") or with trailing text must stop the start, not be read
		// as its leading digits (648 fen for a ¥648 package).
		diamonds, err1 := strconv.ParseInt(strings.TrimSpace(parts[1]), 10, 64)
		amount, err2 := strconv.ParseInt(strings.TrimSpace(parts[2]), 10, 64)
		if err1 != nil || err2 != nil || diamonds <= 0 || amount <= 0 {
			return nil, fmt.Errorf("PACKAGES: %q needs positive whole diamonds and amount_fen (integer fen, 600 = ¥6.00)", item)
		}
		p := Package{ID: parts[0], Diamonds: diamonds, AmountFen: amount}
		p.Label = fmt.Sprintf("%d diamonds", p.Diamonds)
		if len(parts) == 4 && parts[3] != "" {
			p.Label = parts[3]
		}
		ids[p.ID] = true
		out = append(out, p)
	}
	return out, nil
}

// explain rewrites the env library's parse errors, which name Go fields, to
// name the environment variable instead.
func explain(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeFor[Config]()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				out = append(out, fmt.Errorf("%s: invalid %s value: %v", name, pe.Type, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
