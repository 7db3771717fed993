// Package app wires diamondd together from its configuration: the services,
// the HTTP server and the background loops. main uses it to run the service,
// and the end-to-end tests use it to build exactly what main runs.
package app

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/redis/go-redis/v9"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/monthlypay"
	"github.com/diamondd/diamondd/internal/channel/sandbox"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/httpapi"
	"github.com/diamondd/diamondd/internal/idempotency"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/redisx"
	"github.com/diamondd/diamondd/internal/recharge"
	"github.com/diamondd/diamondd/internal/refund"
	"github.com/diamondd/diamondd/internal/risk"
	"github.com/diamondd/diamondd/internal/spend"
	"github.com/diamondd/diamondd/internal/worker"
)

// Options are what the environment does not say: the pool, and the seams
// tests replace.
type Options struct {
	Pool              *pgxpool.Pool
	Log               *slog.Logger
	Now               func() time.Time
	NewID             func() uuid.UUID
	ValidateResponses bool
	// Channels replaces configured channels by name (tests: fakes).
	Channels map[string]channel.Channel
}

// App is a wired service.
type App struct {
	Echo      *echo.Echo
	Registry  *prometheus.Registry
	Ledger    *ledger.Ledger
	Recharges *recharge.Service
	Refunds   *refund.Service
	Channels  *channel.Registry
	Limiter   *redisx.Limiter
	Loops     []worker.Loop
	redis     redis.UniversalClient
}

// New builds the service from a validated configuration.
func New(ctx context.Context, cfg config.Config, o Options) (*App, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// PostgreSQL keeps microseconds: a time the API answers at creation must
	// read back the same.
	clock := o.Now
	o.Now = func() time.Time { return postgres.Stamp(clock().UTC()) }
	if o.NewID == nil {
		o.NewID = func() uuid.UUID { return uuid.Must(uuid.NewV7()) }
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		postgres.NewPoolCollector(o.Pool))

	verifier, err := newVerifier(cfg, o.Now)
	if err != nil {
		return nil, err
	}
	led := ledger.New(reg, o.NewID)
	chs, err := newChannels(cfg, o)
	if err != nil {
		return nil, err
	}
	rcfg, err := rechargeConfig(cfg)
	if err != nil {
		return nil, err
	}
	recharges := recharge.New(rcfg, o.Pool, led, chs, o.Now, o.NewID, o.Log)
	refunds := refund.New(refund.Config{
		FastWindow: cfg.FastRefundWindow, ReviewThresholdFen: cfg.ReviewThresholdFen, SLA: cfg.RefundSLA,
		MaxResubmissions: 2, PollInterval: cfg.RefundPollInterval,
	}, o.Pool, led, recharges, chs, o.Now, o.NewID, o.Log)
	recharges.SetRefunder(refunds)

	var rdb redis.UniversalClient
	if cfg.RedisURL != "" {
		if rdb, err = redisx.NewClient(cfg.RedisURL); err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
	}
	limiter := redisx.NewLimiter(rdb, o.Log, reg, o.Now)
	ready := func(ctx context.Context) map[string]string {
		switch {
		case rdb == nil:
			return map[string]string{"redis": "not configured (rate limits per process)"}
		case limiter.Ping(ctx) != nil:
			return map[string]string{"redis": "unreachable (rate limits per process)"}
		}
		return map[string]string{"redis": "ok"}
	}

	e, err := httpapi.New(httpapi.Deps{
		Pool:              o.Pool,
		Ledger:            led,
		Spends:            spend.New(led, o.NewID, o.Now),
		Recharges:         recharges,
		Refunds:           refunds,
		Channels:          chs,
		Limiter:           limiter,
		Limits:            httpapi.Limits{RechargePerMin: cfg.RateLimitRechargePerMin, RefundPerMin: cfg.RateLimitRefundPerMin},
		Ready:             ready,
		Verifier:          verifier,
		Log:               o.Log,
		Registry:          reg,
		Now:               o.Now,
		ValidateResponses: o.ValidateResponses,
	})
	if err != nil {
		return nil, err
	}
	loops := []worker.Loop{{
		Name: "idempotency-gc", Interval: time.Hour, Log: o.Log,
		Step: func(ctx context.Context) (int, bool, error) {
			n, err := idempotency.Cleanup(ctx, o.Pool, cfg.IdempotencyTTL, 1000)
			return int(n), false, err
		},
	}, {
		Name: "pending-orders", Interval: cfg.WorkerInterval, Log: o.Log,
		Step: func(ctx context.Context) (int, bool, error) { return recharges.ProcessPending(ctx, 50) },
	}, {
		Name: "refunds", Interval: cfg.WorkerInterval, Log: o.Log,
		Step: func(ctx context.Context) (int, bool, error) { return refunds.ProcessDue(ctx, 50) },
	}}
	panics := worker.NewPanicCounter(reg)
	for i := range loops {
		loops[i].Panics = panics.WithLabelValues(loops[i].Name)
	}
	return &App{Echo: e, Registry: reg, Ledger: led, Recharges: recharges, Refunds: refunds, Channels: chs,
		Limiter: limiter, Loops: loops, redis: rdb}, nil
}

// Close releases what New opened besides the pool.
func (a *App) Close() {
	if a.redis != nil {
		_ = a.redis.Close()
	}
}

// newChannels builds the registry of CHANNELS. Tests may swap in fakes
// through Options.Channels.
func newChannels(cfg config.Config, o Options) (*channel.Registry, error) {
	var chs []channel.Channel
	for _, name := range cfg.ChannelList() {
		if c, ok := o.Channels[name]; ok {
			chs = append(chs, c)
			continue
		}
		switch name {
		case sandbox.Name:
			c, err := sandbox.New(cfg.SandboxWebhookSecret, cfg.SandboxAutoSettle, o.Now)
			if err != nil {
				return nil, err
			}
			chs = append(chs, c)
		case monthlypay.Name:
			chs = append(chs, monthlypay.New(o.Pool, o.Now))
		default:
			c, err := externalChannel(name, cfg, o)
			if err != nil {
				return nil, err
			}
			chs = append(chs, c)
		}
	}
	return channel.NewRegistry(chs...)
}

func rechargeConfig(cfg config.Config) (recharge.Config, error) {
	pkgs := recharge.DefaultPackages()
	if list, err := cfg.PackageList(); err != nil {
		return recharge.Config{}, err
	} else if list != nil {
		pkgs = pkgs[:0]
		for _, p := range list {
			pkgs = append(pkgs, recharge.Package{ID: p.ID, Diamonds: p.Diamonds, AmountFen: p.AmountFen, Label: p.Label})
		}
	}
	policies := map[string]recharge.Policy{}
	for _, name := range cfg.ChannelList() {
		p := recharge.Policy{MinFen: cfg.RechargeMinFen, MaxFen: cfg.RechargeMaxFen, AllowMinors: true,
			Maintenance: slices.Contains(cfg.ChannelsMaintenance, name)}
		if name == monthlypay.Name {
			// A minor never pays on credit.
			p.MaxFen, p.AllowMinors = min(cfg.MonthlyPayMaxFen, cfg.RechargeMaxFen), false
		}
		policies[name] = p
	}
	return recharge.Config{
		Pricing: recharge.Pricing{DiamondsPerYuan: cfg.DiamondsPerYuan, MinFen: cfg.RechargeMinFen,
			MaxFen: cfg.RechargeMaxFen, Packages: pkgs},
		Policies:   policies,
		OrderTTL:   cfg.OrderTTL,
		QueryAfter: cfg.PendingQueryAfter,
		Risk: risk.Thresholds{
			DuplicateWindow: cfg.RiskDuplicateWindow, BurstWindow: cfg.RiskBurstWindow, BurstCount: cfg.RiskBurstCount,
			UnusualMultiple: cfg.RiskUnusualMultiple, UnusualMinFen: cfg.RiskUnusualMinFen,
			FirstRechargeMinFen: cfg.RiskFirstRechargeMinFen, MedianSample: 20,
		},
	}, nil
}

func newVerifier(cfg config.Config, now func() time.Time) (*auth.Verifier, error) {
	ac := auth.Config{HMACSecret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Now: now}
	if cfg.JWTPublicKeyFile != "" {
		k, err := auth.LoadPublicKeyPEM(cfg.JWTPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("JWT_PUBLIC_KEY_FILE: %w", err)
		}
		ac.PublicKeys = []crypto.PublicKey{k}
	}
	if cfg.JWTJWKSFile != "" {
		keys, err := auth.LoadJWKS(cfg.JWTJWKSFile)
		if err != nil {
			return nil, fmt.Errorf("JWT_JWKS_FILE: %w", err)
		}
		ac.KeysByID = keys
	}
	v, err := auth.NewVerifier(ac)
	if err != nil {
		return nil, fmt.Errorf("JWT configuration: %w", err)
	}
	return v, nil
}
