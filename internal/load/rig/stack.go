package rig

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/load"
)

// StackOptions describe the processes to start.
type StackOptions struct {
	Diamondd string // the diamondd binary
	// ServeBin and ServeArgs replace `diamondd serve` (the profiling
	// server); migrations still run with Diamondd.
	ServeBin  string
	ServeArgs []string
	FastPG    bool     // durability off
	Redis     bool     // start a private redis-server and set REDIS_URL
	ExtraEnv  []string // more settings for diamondd
	Log       func(string)
}

// Stack is a private PostgreSQL (and Redis) with diamondd migrated and
// serving on them.
type Stack struct {
	PG            *PG
	Redis         *Redis
	Svc           *Service
	Pool          *pgxpool.Pool // the service's database, for the checks
	DatabaseURL   string
	JWTSecret     string
	WebhookSecret string
	Dir           string
	Env           []string // what diamondd was started with (secrets included)
	opt           StackOptions
}

// ServiceEnv is the configuration bench and chaos give diamondd besides the
// database and secrets: the sandbox channel, rate limits off (the load
// tool's users would hit them at once; they are per user, so they measure
// nothing here), workers every 250 ms so refunds reach the channel quickly,
// and quiet logs.
var ServiceEnv = []string{
	"CHANNELS=sandbox",
	"RATE_LIMIT_RECHARGE_PER_MIN=0",
	"RATE_LIMIT_REFUND_PER_MIN=0",
	"WORKER_INTERVAL=250ms",
	"LOG_LEVEL=warn",
}

// EffectiveEnv is ServiceEnv with later settings overriding earlier ones,
// for saying what diamondd runs with.
func EffectiveEnv(extra ...string) []string {
	var out []string
	idx := map[string]int{}
	for _, kv := range append(append([]string{}, ServiceEnv...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// StartStack starts everything and migrates the database.
func StartStack(ctx context.Context, o StackOptions) (*Stack, error) {
	if o.Log == nil {
		o.Log = func(string) {}
	}
	dir, err := os.MkdirTemp("", "diamond-load-")
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, JWTSecret: "load-" + secret(), WebhookSecret: "sandbox-" + secret(), opt: o}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	o.Log("starting a private PostgreSQL" + map[bool]string{true: " (fsync off)", false: " (durable defaults)"}[o.FastPG])
	if s.PG, err = StartPG(ctx, PGOptions{Fast: o.FastPG}); err != nil {
		return nil, err
	}
	if err := s.PG.CreateDB(ctx, "diamondd"); err != nil {
		return nil, err
	}
	s.DatabaseURL = s.PG.URL("diamondd")
	env := append([]string{"DATABASE_URL=" + s.DatabaseURL, "JWT_SECRET=" + s.JWTSecret,
		"SANDBOX_WEBHOOK_SECRET=" + s.WebhookSecret}, ServiceEnv...)
	if o.Redis {
		if s.Redis, err = StartRedis(ctx); err != nil {
			return nil, err
		}
		env = append(env, "REDIS_URL="+s.Redis.URL())
	}
	env = append(env, o.ExtraEnv...)
	s.Env = env
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s.Svc = &Service{Bin: o.Diamondd, Env: env, Port: port, Dir: dir}
	mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := s.Svc.Run(mctx, "migrate", "up"); err != nil {
		return nil, err
	}
	if s.Pool, err = pgxpool.New(ctx, s.DatabaseURL); err != nil {
		return nil, err
	}
	if o.ServeBin != "" {
		s.Svc.Bin, s.Svc.Args = o.ServeBin, o.ServeArgs
	}
	o.Log(fmt.Sprintf("starting %s on %s", s.Svc.Bin, s.Svc.URL()))
	if err := s.Svc.Start(ctx); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Close stops everything and removes the files.
func (s *Stack) Close() {
	if s.Svc != nil && s.Svc.p != nil {
		s.Svc.Stop()
	}
	if s.Pool != nil {
		s.Pool.Close()
	}
	if s.Redis != nil {
		s.Redis.Destroy()
	}
	if s.PG != nil {
		s.PG.Destroy()
	}
	os.RemoveAll(s.Dir)
}

// Options fills in the target and secrets of load options.
func (s *Stack) Options(o load.Options) load.Options {
	o.BaseURL, o.JWTSecret, o.WebhookSecret = s.Svc.URL(), s.JWTSecret, s.WebhookSecret
	if o.ServerPID == 0 {
		o.ServerPID = s.Svc.PID()
	}
	if o.DiamondsPerYuan == 0 { // the rate diamondd was started with
		o.DiamondsPerYuan = load.RateFromEnv(append(os.Environ(), s.Svc.Env...))
	}
	return o
}

// Observe is how the stack's runs are checked: the database for credits
// and orders, `diamondd ledger verify` for the ledger.
func (s *Stack) Observe() load.ObserveOptions {
	return load.ObserveOptions{DB: s.Pool, Verify: load.VerifyBinary(s.opt.Diamondd, s.DatabaseURL)}
}

// RunChecked runs a scenario, settles it and checks it (verify may be
// skipped for runs whose ledger is checked later). The database is watched
// during the measured phase only.
func (s *Stack) RunChecked(ctx context.Context, o load.Options, verify bool, settleFor time.Duration) (*load.Result, DBStats, error) {
	var w *dbWatch
	var cpu *cpuMeter
	var mu sync.Mutex
	o.OnMeasure = func() {
		mu.Lock()
		defer mu.Unlock()
		w = watchDB(ctx, s.Pool, "diamondd")
		cpu = startCPU(s.Svc.PID(), s.PG.PID())
	}
	r, err := load.New(s.Options(o))
	if err != nil {
		return nil, DBStats{}, err
	}
	defer r.Close()
	res, err := r.Run(ctx)
	var dbs DBStats
	mu.Lock()
	if w != nil {
		c := cpu.stop()
		dbs = w.stop(ctx)
		dbs.CPU = c
	}
	mu.Unlock()
	if err != nil {
		return nil, dbs, err
	}
	sctx, cancel := context.WithTimeout(ctx, settleFor)
	st := r.Settle(sctx)
	cancel()
	res.Settle = &st
	obs := s.Observe()
	if !verify {
		obs.Verify = nil
	}
	rep, err := r.Check(ctx, obs)
	if err != nil {
		return res, dbs, err
	}
	res.Checks = &rep
	return res, dbs, nil
}
