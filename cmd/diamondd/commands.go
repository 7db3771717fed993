package main

import (
	"context"
	"errors"
	"flag"
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

func migrate(ctx context.Context, args []string) error {
	if len(args) != 1 || (args[0] != "up" && args[0] != "status") {
		return errUsage
	}
	pool, err := openDatabase(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if args[0] == "status" {
		lines, err := postgres.MigrationStatus(ctx, pool)
		for _, l := range lines {
			fmt.Println(l)
		}
		return err
	}
	applied, err := postgres.Migrate(ctx, pool)
	for _, a := range applied {
		fmt.Println("applied", a)
	}
	if err == nil && len(applied) == 0 {
		fmt.Println("no pending migrations")
	}
	return err
}

func token(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	sub := fs.String("sub", "", "subject: the user id, agent id or service name")
	role := fs.String("role", "user", "user | support | support_lead | service")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	birthdate := fs.String("birthdate", "", "YYYY-MM-DD (optional)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	secret := os.Getenv("JWT_SECRET")
	if secret == "" {
		return errors.New("JWT_SECRET is required to sign a token")
	}
	if *sub == "" {
		return errors.New("--sub is required")
	}
	switch auth.Role(*role) {
	case auth.RoleUser, auth.RoleSupport, auth.RoleSupportLead, auth.RoleService:
	default:
		return fmt.Errorf("--role %q: must be user, support, support_lead or service", *role)
	}
	if *birthdate != "" {
		if _, err := time.Parse(time.DateOnly, *birthdate); err != nil {
			return fmt.Errorf("--birthdate %q: must be YYYY-MM-DD", *birthdate)
		}
	}
	tok, err := auth.Sign([]byte(secret), auth.Principal{Subject: *sub, Role: auth.Role(*role), Birthdate: *birthdate}, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

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
