// Package app wires diamondd together from its configuration: the services,
// the HTTP server and the background loops. main uses it to run the service,
// and the end-to-end tests use it to build exactly what main runs.
package app

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/httpapi"
	"github.com/diamondd/diamondd/internal/idempotency"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
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
}

// App is a wired service.
type App struct {
	Echo     *echo.Echo
	Registry *prometheus.Registry
	Ledger   *ledger.Ledger
	Loops    []worker.Loop
}

// New builds the service from a validated configuration.
func New(ctx context.Context, cfg config.Config, o Options) (*App, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
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
	e, err := httpapi.New(httpapi.Deps{
		Pool:              o.Pool,
		Ledger:            led,
		Spends:            spend.New(led, o.NewID, o.Now),
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
	}}
	return &App{Echo: e, Registry: reg, Ledger: led, Loops: loops}, nil
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
