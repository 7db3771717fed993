package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/app"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// errFindings: ledger verify found broken invariants (exit 1, report printed).
var errFindings = errors.New("ledger invariants broken")

// errCouldNotVerify: ledger verify could not run its checks (exit 3), which
// a cron job must not mistake for a broken ledger (1) nor a clean one (0).
var errCouldNotVerify = errors.New("ledger verify could not run")

// openDatabase opens a small pool on DATABASE_URL for the one-shot commands.
func openDatabase(ctx context.Context) (*pgxpool.Pool, error) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		return nil, errors.New("DATABASE_URL is required (postgres://user@host:5432/db)")
	}
	pool, err := postgres.Open(ctx, url, 2)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	return pool, nil
}

const migrateUsage = `usage: diamondd migrate up       apply pending migrations to DATABASE_URL
       diamondd migrate status   list migrations and whether each is applied

Several processes may run migrate up at once: the others wait, then find
nothing to do.
`

func migrate(ctx context.Context, args []string, out io.Writer) error {
	f := newFlags("migrate", migrateUsage)
	pos, err := f.parse(args, out, "up or status")
	if err != nil {
		return err
	}
	if pos[0] != "up" && pos[0] != "status" {
		return f.fail("unknown migrate command %q", pos[0])
	}
	pool, err := openDatabase(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if pos[0] == "status" {
		lines, err := postgres.MigrationStatus(ctx, pool)
		for _, l := range lines {
			fmt.Fprintln(out, l)
		}
		return err
	}
	applied, err := postgres.Migrate(ctx, pool)
	for _, a := range applied {
		fmt.Fprintln(out, "applied", a)
	}
	if err == nil && len(applied) == 0 {
		fmt.Fprintln(out, "no pending migrations")
	}
	return err
}

const tokenUsage = `usage: diamondd token --sub ID [--role user] [--ttl 1h] [--birthdate YYYY-MM-DD]

Prints a JWT (HS256) signed with JWT_SECRET, for development and tests. It
carries iss and aud from JWT_ISSUER and JWT_AUDIENCE when those are set, as
serve then requires them.
`

// token prints a token that serve, configured from the same environment,
// accepts at now: whatever it would refuse is refused here.
func token(args []string, out io.Writer, now time.Time) error {
	f := newFlags("token", tokenUsage)
	sub := f.String("sub", "", "subject: the user id, agent id or service name (required)")
	role := f.String("role", "user", "user | support | support_lead | service")
	ttl := f.Duration("ttl", time.Hour, "lifetime (positive)")
	birthdate := f.String("birthdate", "", "the user's birth date, YYYY-MM-DD, not after today in Beijing (optional)")
	if _, err := f.parse(args, out); err != nil {
		return err
	}
	if *sub == "" {
		return f.fail("--sub is required")
	}
	switch auth.Role(*role) {
	case auth.RoleUser, auth.RoleSupport, auth.RoleSupportLead, auth.RoleService:
	default:
		return f.fail("--role %q: must be user, support, support_lead or service", *role)
	}
	if *ttl <= 0 {
		return f.fail("--ttl %s: must be positive (the token would be expired already)", *ttl)
	}
	if *birthdate != "" {
		b, err := time.Parse(time.DateOnly, *birthdate)
		if err != nil {
			return f.fail("--birthdate %q: must be YYYY-MM-DD", *birthdate)
		}
		// The server refuses a birthdate after today's date in Beijing,
		// the calendar ages are counted on.
		y, m, d := now.In(beijing).Date()
		if today := time.Date(y, m, d, 0, 0, 0, 0, time.UTC); b.After(today) {
			return f.fail("--birthdate %s: is after today (%s in Beijing)", *birthdate, today.Format(time.DateOnly))
		}
	}
	secret := os.Getenv("JWT_SECRET")
	if secret == "" {
		return errors.New("JWT_SECRET is required to sign a token")
	}
	if len(secret) < minJWTSecret {
		return fmt.Errorf("JWT_SECRET must be at least %d characters: serve refuses a shorter one", minJWTSecret)
	}
	p := auth.Principal{Subject: *sub, Role: auth.Role(*role), Birthdate: *birthdate}
	tok, err := auth.SignFor([]byte(secret), os.Getenv("JWT_ISSUER"), os.Getenv("JWT_AUDIENCE"), p, *ttl, now)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

// minJWTSecret is the shortest JWT_SECRET the configuration accepts.
const minJWTSecret = 16

// beijing is the time zone the server counts ages in (no daylight saving).
var beijing = time.FixedZone("CST", 8*60*60)

func verify(ctx context.Context, out io.Writer) error {
	pool, err := openDatabase(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errCouldNotVerify, err)
	}
	defer pool.Close()
	findings, err := app.Verify(ctx, pool)
	if err != nil {
		return fmt.Errorf("%w: %w", errCouldNotVerify, err)
	}
	if len(findings) == 0 {
		fmt.Fprintln(out, "ledger verify: every invariant holds")
		return nil
	}
	fmt.Fprintf(out, "ledger verify: %d problem(s)\n", len(findings))
	for _, f := range findings {
		fmt.Fprintln(out, "  -", f)
	}
	return errFindings
}
