// Command diamond-load puts load and faults on a diamondd and checks that
// nothing was lost or doubled.
//
//	diamond-load run     drive a running diamondd (scenario, users, clients, duration or count)
//	diamond-load bench   make bench: pgbench vs recharge/mixed on a fresh private PostgreSQL
//	diamond-load chaos   make chaos: mixed load while diamondd, PostgreSQL and Redis are broken
//
// Everything stays on loopback. See docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/load"
	"github.com/diamondd/diamondd/internal/load/rig"
)

const usage = `usage: diamond-load <command> [flags]

commands:
  run          drive a running diamondd over HTTP and check the invariants afterwards
  bench        pgbench and the load scenarios side by side on a fresh private PostgreSQL (make bench)
  chaos        mixed load while diamondd is killed, PostgreSQL restarted and Redis stopped (make chaos)

"diamond-load <command> -h" lists a command's flags.
`

// errUsage ends with the usage text and status 2; errFailed with status 1.
var (
	errUsage  = errors.New("usage")
	errFailed = errors.New("checks failed")
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	switch {
	case errors.Is(err, errUsage):
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case errors.Is(err, errFailed):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "diamond-load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:])
	case "bench":
		return benchCmd(ctx, args[1:])
	case "chaos":
		return chaosCmd(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return errUsage
}

func logLine(s string) { fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), s) }

func runCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o load.Options
	fs.StringVar(&o.BaseURL, "url", "http://127.0.0.1:8080", "diamondd to drive (loopback only)")
	fs.StringVar(&o.Scenario, "scenario", load.ScenarioRecharge, strings.Join(load.Scenarios, " | "))
	fs.IntVar(&o.Clients, "clients", 32, "concurrent closed-loop clients")
	fs.IntVar(&o.Users, "users", 10000, "distinct users")
	fs.BoolVar(&o.Hot, "hot", false, "every flow on one user")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time (unless -count)")
	fs.IntVar(&o.Count, "count", 0, "measured flows instead of a duration")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "unmeasured time first")
	fs.StringVar(&o.RunID, "run-id", "", "prefix of user ids and keys (default: load-<time>-<n>)")
	mix := fs.String("mix", "recharge=50,spend=30,wallet=15,refund=5", "weights of the mixed scenario")
	fs.IntVar(&o.StormFanout, "storm-fanout", 10, "notifications per payment in storm")
	fs.Int64Var(&o.DiamondsPerYuan, "diamonds-per-yuan", load.RateFromEnv(os.Environ()),
		"the service's rate for custom amounts (default: DIAMONDS_PER_YUAN, else 10), which the checks price orders at")
	fs.Float64Var(&o.StormStaleFailed, "storm-stale-failed", 0.2, "share of storm payments that also get a late payment.failed of an earlier attempt")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "read the server's RSS from /proc/PID (default: its /metrics)")
	fs.DurationVar(&o.RetryFor, "retry-for", 30*time.Second, "how long an operation without a definitive answer is retried")
	out := fs.String("out", "", "write the JSON result here")
	check := fs.Bool("check", true, "settle and check the invariants after the run")
	settleFor := fs.Duration("settle", time.Minute, "how long redeliveries may take to drain before the checks")
	diamondd := fs.String("diamondd", "", "diamondd binary for `ledger verify` (default: the same verification in-process)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.JWTSecret = os.Getenv("JWT_SECRET")
	o.WebhookSecret = os.Getenv("SANDBOX_WEBHOOK_SECRET")
	var err error
	if o.Mix, err = parseMix(*mix); err != nil {
		return err
	}
	o.Log = logLine
	r, err := load.New(o)
	if err != nil {
		return err
	}
	defer r.Close()
	o = r.Options()
	who := fmt.Sprintf("%d users", o.Users)
	if o.Hot {
		who = "one hot user"
	}
	logLine(fmt.Sprintf("%s on %s: %d clients, %s, run %s", o.Scenario, o.BaseURL, o.Clients, who, o.RunID))
	res, err := r.Run(ctx)
	if err != nil {
		return err
	}
	if *check {
		sctx, cancel := context.WithTimeout(ctx, *settleFor)
		st := r.Settle(sctx)
		cancel()
		res.Settle = &st
		obs := load.ObserveOptions{}
		if u := os.Getenv("DATABASE_URL"); u != "" {
			pool, err := pgxpool.New(ctx, u)
			if err != nil {
				return fmt.Errorf("DATABASE_URL: %w", err)
			}
			defer pool.Close()
			obs.DB = pool
			obs.Verify = load.VerifyInProcess(pool)
			if *diamondd != "" {
				obs.Verify = load.VerifyBinary(*diamondd, u)
			}
		} else {
			logLine("DATABASE_URL not set: the per-order credit checks and ledger verify are skipped")
		}
		rep, err := r.Check(ctx, obs)
		if err != nil {
			return err
		}
		res.Checks = &rep
	}
	res.WriteTable(os.Stdout)
	if *out != "" {
		raw, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, raw, 0o644); err != nil {
			return err
		}
	}
	if res.Checks != nil && !res.Checks.OK() {
		return errFailed
	}
	return nil
}

func parseMix(s string) (map[string]int, error) {
	m := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return nil, fmt.Errorf("-mix %q: want name=weight,...", s)
		}
		m[k] = n
	}
	return m, nil
}

// diamonddBin finds the diamondd binary: the flag, else bin/diamondd.
func diamonddBin(flagValue string) (string, error) {
	p := flagValue
	if p == "" {
		p = "bin/diamondd"
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("diamondd binary %s: %w (make build, or -diamondd PATH)", p, err)
	}
	return abs, nil
}

func benchCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o rig.BenchOptions
	bin := fs.String("diamondd", "", "diamondd binary (default bin/diamondd)")
	fs.IntVar(&o.Clients, "clients", 16, "clients, for pgbench and the load alike")
	fs.IntVar(&o.Users, "users", 10000, "distinct users")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "pgbench, recharge and mixed (the other parts run half of it)")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "warm-up of each load run")
	fs.IntVar(&o.Scale, "scale", 10, "pgbench scale")
	fs.BoolVar(&o.FastPG, "fast-pg", false, "run PostgreSQL with fsync off (default: durable)")
	fs.IntVar(&o.Postings, "postings", 1_000_000, "ledger postings of the big wallet in the wallet-read comparison")
	parts := fs.String("parts", strings.Join(rig.BenchParts, ","), "which parts to run")
	fs.StringVar(&o.OutDir, "out", "bin/bench", "directory for the JSON report and the profiles")
	profile := fs.Bool("profile", true, "profile the server under load (pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.Diamondd, err = diamonddBin(*bin); err != nil {
		return err
	}
	o.Profile = *profile
	o.Parts = strings.Split(*parts, ",")
	o.Log = logLine
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return err
	}
	logLine("diamondd runs with " + strings.Join(rig.ServiceEnv, " ") + " (per-user rate limits off: the load's users would hit them)")
	rep, err := rig.Bench(ctx, o)
	if err != nil {
		return err
	}
	rep.WriteTable(os.Stdout)
	path := filepath.Join(o.OutDir, "bench.json")
	if err := rep.WriteJSON(path); err != nil {
		return err
	}
	fmt.Println("report:", path)
	if !rep.ChecksOK {
		return errFailed
	}
	return nil
}

func chaosCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	var o rig.ChaosOptions
	bin := fs.String("diamondd", "", "diamondd binary (default bin/diamondd)")
	fs.IntVar(&o.Clients, "clients", 16, "clients")
	fs.IntVar(&o.Users, "users", 2000, "distinct users")
	fs.DurationVar(&o.Duration, "duration", time.Minute, "the mixed load; faults are spread over it")
	fs.IntVar(&o.Kills, "kills", 5, "kill -9 of diamondd")
	fs.BoolVar(&o.FastPG, "fast-pg", false, "run PostgreSQL with fsync off (default: durable)")
	fs.DurationVar(&o.SettleFor, "settle", 2*time.Minute, "how long redeliveries may take to drain afterwards")
	out := fs.String("out", "bin/chaos", "directory for the JSON report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.Diamondd, err = diamonddBin(*bin); err != nil {
		return err
	}
	o.Log = logLine
	logLine("diamondd runs with " + strings.Join(rig.EffectiveEnv(rig.ChaosEnv...), " ") +
		" (limits on but out of reach, so the limiter consults Redis) and a private redis-server")
	rep, err := rig.Chaos(ctx, o)
	if err != nil {
		return err
	}
	rep.WriteTable(os.Stdout)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(*out, "chaos.json")
	if err := rep.WriteJSON(path); err != nil {
		return err
	}
	fmt.Println("report:", path)
	if !rep.OK {
		return errFailed
	}
	return nil
}
