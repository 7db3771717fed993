package load_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/load"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
	"github.com/diamondd/diamondd/internal/worker"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestSmoke runs a few seconds of the load tool against the real service
// (in-process, on a fresh database, every response checked against the
// spec) so the tool cannot rot: the mixed scenario and a redelivery storm,
// then the checks, which must pass, and must fail once a credit is planted.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("smoke run of the load tool")
	}
	h := apptest.New(t, func(c *config.Config) {
		c.RateLimitRechargePerMin, c.RateLimitRefundPerMin = 0, 0 // the tool's users would hit them
		c.WorkerInterval = 100 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wctx, stopWorkers := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); worker.RunAll(wctx, h.App.Loops...) }()
	defer func() { stopWorkers(); <-done }()

	obs := load.ObserveOptions{DB: h.Pool, Verify: load.VerifyInProcess(h.Pool)}
	var runners []*load.Runner
	for _, opt := range []load.Options{
		{Scenario: load.ScenarioMixed, Users: 200, Duration: 2 * time.Second, Warmup: 300 * time.Millisecond},
		{Scenario: load.ScenarioStorm, Users: 50, Duration: time.Second, StormStaleFailed: 0.3},
	} {
		opt.BaseURL, opt.JWTSecret, opt.WebhookSecret = h.URL, apptest.Secret, apptest.SandboxSecret
		opt.Clients, opt.RefundWait = 8, 10*time.Second
		opt.DiamondsPerYuan = h.Config.DiamondsPerYuan // the service's, never this process's environment
		r, err := load.New(opt)
		require.NoError(t, err)
		defer r.Close()
		res, err := r.Run(ctx)
		require.NoError(t, err)
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		st := r.Settle(sctx)
		scancel()
		res.Settle = &st
		rep, err := r.Check(ctx, obs)
		require.NoError(t, err)
		res.Checks = &rep
		var buf bytes.Buffer
		res.WriteTable(&buf)
		t.Log("\n" + buf.String())
		require.True(t, rep.OK(), "checks failed")
		require.Zero(t, res.RateLimited)
		require.Positive(t, res.Flows[opt.Scenario]+res.Flows[load.ScenarioRecharge])
		require.Empty(t, res.FailedFlows)
		runners = append(runners, r)
	}

	// A credit planted behind the service's back: the checks must see it.
	r := runners[0]
	var user string
	for _, o := range r.Model().Expect().Orders {
		if o.Acked {
			user = o.UserID
			break
		}
	}
	require.NotEmpty(t, user)
	require.NoError(t, pgx.BeginFunc(ctx, h.Pool, func(tx pgx.Tx) error {
		_, err := ledger.New(nil, nil).Credit(ctx, tx, user, "sandbox", 60, "recharge:planted-double", "planted")
		return err
	}))
	rep, err := r.Check(ctx, obs)
	require.NoError(t, err)
	failed := map[string]bool{}
	for _, c := range rep.Checks {
		if !c.Passed() {
			failed[c.Name] = true
		}
	}
	require.Equal(t, map[string]bool{load.CheckNoStray: true, load.CheckWallets: true}, failed)
}
