package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

const devUsage = `usage: diamondd dev

Runs the service on embedded defaults, for development only: a throwaway
PostgreSQL from the system's binaries (unless DATABASE_URL is set), migrations
applied, the sandbox channel, published dev secrets, and demo tokens printed
for each role. It listens on 127.0.0.1:8080 unless HTTP_ADDR says otherwise.
Every other setting comes from the environment (README.md).
`

// dev runs the service as devUsage says.
func dev(ctx context.Context, args []string, out io.Writer) error {
	if _, err := newFlags("dev", devUsage).parse(args, out); err != nil {
		return err
	}
	setDevDefaults()
	if os.Getenv("DATABASE_URL") == "" {
		fmt.Fprintln(out, "starting a throwaway PostgreSQL (data is removed on exit)...")
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
	// The URL stands alone between spaces, so that a double click copies it.
	fmt.Fprintf(out, "database: %s (%s applied)\n", cfg.DatabaseURL, plural(len(applied), "migration"))

	fmt.Fprintln(out, "\ndemo tokens (valid 24h):")
	for _, p := range []auth.Principal{
		{Subject: "demo-user", Role: auth.RoleUser},
		{Subject: "demo-minor", Role: auth.RoleUser, Birthdate: time.Now().AddDate(-12, 0, 0).Format(time.DateOnly)},
		{Subject: "agent-1", Role: auth.RoleSupport},
		{Subject: "lead-1", Role: auth.RoleSupportLead},
		{Subject: "gift-service", Role: auth.RoleService},
	} {
		tok, err := auth.SignFor([]byte(cfg.JWTSecret), cfg.JWTIssuer, cfg.JWTAudience, p, 24*time.Hour, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %-13s %-12s %s\n", p.Role, p.Subject, tok)
	}
	fmt.Fprintf(out, "\nsandbox webhook secret: %s\n\n", os.Getenv("SANDBOX_WEBHOOK_SECRET"))
	return serve(ctx, cfg, newLogger(cfg.LogLevel), func(addr string) {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			addr = "localhost:" + port
		}
		fmt.Fprintf(out, "diamondd dev is serving on http://%s (Ctrl-C stops it)\n", addr)
	})
}

// setDevDefaults fills in what dev needs and the environment leaves unset.
// Its secrets are published, so it listens on loopback only unless
// HTTP_ADDR says otherwise.
func setDevDefaults() {
	for k, v := range map[string]string{
		"JWT_SECRET":             devJWTSecret,
		"SANDBOX_WEBHOOK_SECRET": devSandboxSecret,
		"LOG_LEVEL":              "info",
		"HTTP_ADDR":              "127.0.0.1:8080",
	} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
}

// plural is "1 migration", "5 migrations".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
