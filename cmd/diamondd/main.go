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
// Each command's -h/--help prints its own usage. Configuration comes from
// the environment; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/redisx"
)

const usage = `usage: diamondd <command> [arguments]

commands:
  serve                 run the HTTP API and background workers (migrate the database first)
  migrate up            apply pending database migrations
  migrate status        list migrations and whether they are applied
  token --sub ID        print a dev JWT signed with JWT_SECRET (iss, aud from JWT_ISSUER, JWT_AUDIENCE)
  ledger verify         check every ledger invariant; exit 1 with a report on any discrepancy, 3 if it cannot run
  dev                   run on embedded defaults: a throwaway PostgreSQL, demo tokens, the sandbox channel
  sandbox pay|fail|refund ID [flags]
                        play the sandbox channel: post a signed payment or refund webhook

Run 'diamondd <command> --help' for a command's usage. Configuration comes from the environment (README.md).
`

// errUsage matches (errors.Is) every command line the program does not
// understand.
var errUsage = errors.New("usage")

// usageError says what is wrong with a command line and carries the usage
// of the command at fault; main prints both and exits 2.
type usageError struct{ why, usage string }

func (e *usageError) Error() string        { return e.why }
func (e *usageError) Is(target error) bool { return target == errUsage }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "diamondd: %s\n\n%s", ue.why, ue.usage)
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

// run runs the command in args; out takes what the command prints,
// including the usage asked for with -h/--help.
func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return &usageError{why: "no command", usage: usage}
	}
	err := command(ctx, args[0], args[1:], out)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the usage asked for is printed
	}
	return err
}

func command(ctx context.Context, name string, args []string, out io.Writer) error {
	switch name {
	case "serve":
		f := newFlags("serve", serveUsage)
		if _, err := f.parse(args, out); err != nil {
			return err
		}
		cfg, err := config.Load()
		if err != nil {
			return fmt.Errorf("configuration:\n%w", err)
		}
		return serve(ctx, cfg, newLogger(cfg.LogLevel), nil)
	case "migrate":
		return migrate(ctx, args, out)
	case "token":
		return token(args, out, time.Now())
	case "ledger":
		f := newFlags("ledger", ledgerUsage)
		pos, err := f.parse(args, out, "verify")
		if err != nil {
			return err
		}
		if pos[0] != "verify" {
			return f.fail("unknown ledger command %q", pos[0])
		}
		return verify(ctx, out)
	case "dev":
		return dev(ctx, args, out)
	case "sandbox":
		return sandboxCmd(ctx, args, out)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(out, usage)
		return nil
	}
	return &usageError{why: fmt.Sprintf("unknown command %q", name), usage: usage}
}

const serveUsage = `usage: diamondd serve

Runs the HTTP API on HTTP_ADDR and the background workers until SIGTERM or
Ctrl-C. The database must be migrated first (diamondd migrate up); serve
refuses to start while a migration is pending. Configuration comes from the
environment (README.md).
`

const ledgerUsage = `usage: diamondd ledger verify

Recomputes every ledger invariant on DATABASE_URL. Exit status 0: they all
hold; 1: a report of the broken ones is printed; 3: the check could not run.
`

// cmdFlags is a command's flag set and its usage text. The flag package
// prints nothing itself: -h/--help go to the command's output (exit 0),
// mistakes to main as a usageError (exit 2).
type cmdFlags struct {
	*flag.FlagSet
	synopsis string
}

func newFlags(name, synopsis string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{fs, synopsis}
}

// usage is the synopsis followed by the flags, if any.
func (f *cmdFlags) usage() string {
	var b strings.Builder
	b.WriteString(f.synopsis)
	hasFlags := false
	f.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		b.WriteString("\nflags:\n")
		f.SetOutput(&b)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
	return b.String()
}

// fail is a usage error of this command.
func (f *cmdFlags) fail(format string, a ...any) error {
	return &usageError{why: fmt.Sprintf(format, a...), usage: f.usage()}
}

// parse parses args, whose flags may come before, between or after the
// positional arguments (the flag package alone stops at the first of
// these), and wants exactly the positional arguments named: a missing or
// extra one is a usage error. -h/--help prints the usage to out and returns
// flag.ErrHelp, which run turns into exit 0.
func (f *cmdFlags) parse(args []string, out io.Writer, want ...string) ([]string, error) {
	var pos []string
	for {
		err := f.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, f.usage())
			return nil, err
		}
		if err != nil {
			return nil, f.fail("%v", err)
		}
		if f.NArg() == 0 {
			break
		}
		pos = append(pos, f.Arg(0))
		args = f.Args()[1:]
	}
	if len(pos) < len(want) {
		return nil, f.fail("missing %s", want[len(pos)])
	}
	if len(pos) > len(want) {
		return nil, f.fail("unexpected argument %q", pos[len(want)])
	}
	return pos, nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	// go-redis logs every failed dial; route it through slog, rate limited.
	redis.SetLogger(redisx.NewRedisLogger(log, nil))
	return log
}
