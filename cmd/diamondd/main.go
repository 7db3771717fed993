// Command diamondd sells diamonds for money and refunds them.
//
//	diamondd serve            HTTP API and background workers
//	diamondd migrate up       apply pending migrations
//	diamondd migrate status   list migrations
//	diamondd token            print a dev token signed with JWT_SECRET
//	diamondd ledger verify    recompute the ledger; exit 1 on any broken invariant, 3 if it cannot run
//	diamondd dev              everything on embedded defaults
//	diamondd sandbox pay ...  play the sandbox channel: signed payment and refund webhooks
//
// Configuration comes from the environment; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/redisx"
)

const usage = `usage: diamondd <command>

commands:
  serve            run the HTTP API and background workers
  migrate up       apply pending database migrations
  migrate status   list migrations and whether they are applied
  token            print a dev JWT: token --sub u1 --role user [--ttl 1h] [--birthdate 2012-01-01]
  ledger verify    check every ledger invariant; exit 1 with a report on any discrepancy, 3 if it cannot run
  dev              run on embedded defaults: a throwaway PostgreSQL, demo tokens, the sandbox channel
  sandbox pay ORDER_ID --amount FEN [--url URL]    simulate a sandbox payment (signed webhook)
  sandbox refund REFUND_ID [--failed]              settle a sandbox refund
`

// errUsage ends the program with the usage text and status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	switch {
	case errors.Is(err, errUsage):
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case errors.Is(err, errFindings):
		os.Exit(1)
	case errors.Is(err, errCouldNotVerify):
		fmt.Fprintln(os.Stderr, "diamondd:", err)
		os.Exit(3)
	case err != nil:
		fmt.Fprintln(os.Stderr, "diamondd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "serve":
		cfg, err := config.Load()
		if err != nil {
			return fmt.Errorf("configuration:\n%w", err)
		}
		return serve(ctx, cfg, newLogger(cfg.LogLevel), nil)
	case "migrate":
		return migrate(ctx, args[1:])
	case "token":
		return token(args[1:], os.Stdout)
	case "ledger":
		if len(args) != 2 || args[1] != "verify" {
			return errUsage
		}
		return verify(ctx, os.Stdout)
	case "dev":
		return dev(ctx, args[1:])
	case "sandbox":
		return sandboxCmd(ctx, args[1:], os.Stdout)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return errUsage
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	// go-redis logs every failed dial; route it through slog, rate limited.
	redis.SetLogger(redisx.NewRedisLogger(log, nil))
	return log
}
