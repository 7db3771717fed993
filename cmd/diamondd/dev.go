package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgserver"
)

// Defaults for `diamondd dev`: never for production.
const (
	devJWTSecret     = "dev-jwt-secret-not-for-production"
	devSandboxSecret = "dev-sandbox-secret"
)

// dev runs the service on embedded defaults: a throwaway PostgreSQL from the
// system's binaries (unless DATABASE_URL is set), migrations applied, the
// sandbox channel, and demo tokens printed for each role.
func dev(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return errUsage
	}
	setDefault := func(k, v string) {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	setDefault("JWT_SECRET", devJWTSecret)
	setDefault("SANDBOX_WEBHOOK_SECRET", devSandboxSecret)
	setDefault("LOG_LEVEL", "info")
	if os.Getenv("DATABASE_URL") == "" {
		fmt.Println("starting a throwaway PostgreSQL (data is removed on exit)...")
		srv, err := pgserver.Start(ctx)
		if errors.Is(err, pgserver.ErrNoBinaries) {
			return fmt.Errorf("%w\n(or set DATABASE_URL to an existing database)", err)
		}
		if err != nil {
			return err
		}
		defer srv.Stop()
		os.Setenv("DATABASE_URL", srv.URL)
	}
	cfg, err := config.Load()
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	applied, err := postgres.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return err
	}
	fmt.Printf("database %s: %d migration(s) applied\n", cfg.DatabaseURL, len(applied))

	fmt.Println("\ndemo tokens (valid 24h):")
	for _, p := range []auth.Principal{
		{Subject: "demo-user", Role: auth.RoleUser},
		{Subject: "demo-minor", Role: auth.RoleUser, Birthdate: time.Now().AddDate(-12, 0, 0).Format(time.DateOnly)},
		{Subject: "agent-1", Role: auth.RoleSupport},
		{Subject: "lead-1", Role: auth.RoleSupportLead},
		{Subject: "gift-service", Role: auth.RoleService},
	} {
		tok, err := auth.Sign([]byte(cfg.JWTSecret), p, 24*time.Hour, time.Now())
		if err != nil {
			return err
		}
		fmt.Printf("  %-13s %-12s %s\n", p.Role, p.Subject, tok)
	}
	fmt.Printf("\nsandbox webhook secret: %s\n\n", os.Getenv("SANDBOX_WEBHOOK_SECRET"))
	return serve(ctx, cfg, newLogger(cfg.LogLevel), func(addr string) {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			addr = "localhost:" + port
		}
		fmt.Printf("diamondd dev is serving on http://%s (Ctrl-C stops it)\n", addr)
	})
}
