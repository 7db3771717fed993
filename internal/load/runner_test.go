package load_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/load"
	"github.com/diamondd/diamondd/internal/load/loadfake"
)

const (
	jwtSecret = "load-test-jwt-secret-0123456789"
	whSecret  = "load-test-webhook-secret"
)

// runFake runs a scenario against the fake for a short while, settles it
// (for at most a few seconds, as the CLI's -settle bounds it, so a run whose
// webhooks are never acknowledged is still checked) and checks it with the
// fake's own journals and refunds standing in for the database.
func runFake(t *testing.T, bugs loadfake.Bugs, opt load.Options) (*load.Result, load.CheckReport) {
	t.Helper()
	fake := loadfake.New(jwtSecret, whSecret)
	fake.Bugs = bugs
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	opt.BaseURL, opt.JWTSecret, opt.WebhookSecret = srv.URL, jwtSecret, whSecret
	if opt.Duration == 0 && opt.Count == 0 {
		opt.Duration = 300 * time.Millisecond
	}
	if opt.Clients == 0 {
		opt.Clients = 8
	}
	if opt.Users == 0 {
		opt.Users = 50
	}
	opt.RetryFor, opt.InlineRetry, opt.RefundWait = 2*time.Second, time.Second, 2*time.Second
	r, err := load.New(opt)
	require.NoError(t, err)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := r.Run(ctx)
	require.NoError(t, err)
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	st := r.Settle(sctx)
	scancel()
	res.Settle = &st
	obs, err := r.Observe(ctx, load.ObserveOptions{})
	require.NoError(t, err)
	obs.Credits, obs.Refunds = fake.Credits(), fake.Refunds()
	obs.LedgerChecked = true
	rep := load.Check(r.Model().Expect(), obs)
	res.Checks = &rep
	var buf bytes.Buffer
	res.WriteTable(&buf)
	t.Log("\n" + buf.String())
	return res, rep
}

func TestScenariosAgainstFake(t *testing.T) {
	for _, sc := range load.Scenarios {
		t.Run(sc, func(t *testing.T) {
			res, rep := runFake(t, loadfake.Bugs{}, load.Options{Scenario: sc, Warmup: 50 * time.Millisecond})
			require.True(t, rep.OK(), "checks failed")
			var flows int64
			for _, n := range res.Flows {
				flows += n
			}
			require.Positive(t, flows)
			require.Empty(t, res.FailedFlows)
			require.Positive(t, res.RSS.Max)
		})
	}
}

func TestHotUserAndCount(t *testing.T) {
	res, rep := runFake(t, loadfake.Bugs{}, load.Options{Scenario: load.ScenarioMixed, Hot: true, Count: 200})
	require.True(t, rep.OK())
	require.Equal(t, 1, res.Users)
	var flows int64
	for _, n := range res.Flows {
		flows += n
	}
	require.EqualValues(t, 200, flows)
}

func TestRedeliveryUntilAcknowledged(t *testing.T) {
	res, rep := runFake(t, loadfake.Bugs{FailEvery: 3}, load.Options{Scenario: load.ScenarioRecharge})
	require.True(t, rep.OK())
	require.Positive(t, res.Redeliveries)
	require.Positive(t, res.Errors["webhook_pay internal_error"])
}

func TestChecksCatchPlantedBugs(t *testing.T) {
	t.Run("double credit in a storm", func(t *testing.T) {
		_, rep := runFake(t, loadfake.Bugs{CreditPerEvent: true}, load.Options{Scenario: load.ScenarioStorm})
		requireFailed(t, rep, load.CheckAckedOnce, "credited")
		requireFailed(t, rep, load.CheckNoDouble, "credited")
		requireFailed(t, rep, load.CheckWallets, "model says")
	})
	t.Run("lost credit", func(t *testing.T) {
		_, rep := runFake(t, loadfake.Bugs{LoseEvery: 7}, load.Options{Scenario: load.ScenarioRecharge})
		requireFailed(t, rep, load.CheckAckedOnce, "never credited")
		requireFailed(t, rep, load.CheckWallets, "model says")
	})
}

// Money that goes wrong around refunds and pricing, planted in the fake:
// each must fail the checks named, end to end.
func TestChecksCatchPlantedRefundAndPricingBugs(t *testing.T) {
	for _, tt := range []struct {
		name     string
		bugs     loadfake.Bugs
		scenario string
		fails    map[string]string // check → a substring of its failures
	}{{
		// The channel paid the refund back; the service answers 500 to its
		// refund.succeeded and fails the refund, giving the diamonds back.
		name: "refund paid back, never acknowledged, then failed", bugs: loadfake.Bugs{RefundHookFails: true},
		scenario: load.ScenarioRefund,
		fails: map[string]string{load.CheckRefundAcked: "refund.succeeded never acknowledged", load.CheckPending: "never acknowledged",
			load.CheckRefunds: "refund.succeeded sent, status is failed", load.CheckWallets: "model says"},
	}, {
		// The same, but the refund just stays processing: held matches.
		name: "refund paid back, never acknowledged, left open", bugs: loadfake.Bugs{RefundHookIgnored: true},
		scenario: load.ScenarioRefund,
		fails: map[string]string{load.CheckRefundAcked: "refund.succeeded never acknowledged", load.CheckPending: "never acknowledged",
			load.CheckRefundsOpen: "still processing after settling"},
	}, {
		name: "full refund takes back half the diamonds", bugs: loadfake.Bugs{RefundHalfDiamonds: true},
		scenario: load.ScenarioRefund,
		fails:    map[string]string{load.CheckRefundAmounts: "the order is", load.CheckWallets: "model says"},
	}, {
		name: "orders priced at twice the rate", bugs: loadfake.Bugs{DoublePricing: true}, scenario: load.ScenarioRecharge,
		fails: map[string]string{load.CheckPriced: "the service created it for", load.CheckAckedOnce: "order is for",
			load.CheckWallets: "model says"},
	}, {
		// A storm repeats one payment (same trade) under other event ids; a
		// service that takes them for second payments refunds money the
		// channel never took.
		name: "refunds nobody asked for", bugs: loadfake.Bugs{DuplicateRefund: true}, scenario: load.ScenarioStorm,
		fails: map[string]string{load.CheckUnasked: "(duplicate_payment, order"},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			res, rep := runFake(t, tt.bugs, load.Options{Scenario: tt.scenario})
			if tt.bugs.RefundHookFails || tt.bugs.RefundHookIgnored { // settling says so too
				require.Positive(t, res.Settle.WebhooksPending)
				require.Positive(t, res.Settle.RefundsOpen)
			}
			for name, want := range tt.fails {
				requireFailed(t, rep, name, want)
			}
		})
	}
}

// The tool prices orders at the rate it is given (DIAMONDS_PER_YUAN), so a
// service running at another rate fails the checks instead of defining
// what is right.
func TestOrdersPricedAtTheConfiguredRate(t *testing.T) {
	_, rep := runFake(t, loadfake.Bugs{}, load.Options{Scenario: load.ScenarioRecharge, DiamondsPerYuan: 20})
	requireFailed(t, rep, load.CheckPriced, "the service created it for")
	require.EqualValues(t, 10, load.RateFromEnv(nil))
	require.EqualValues(t, 25, load.RateFromEnv([]string{"DIAMONDS_PER_YUAN=20", "X=1", "DIAMONDS_PER_YUAN=25"}))

	// The library never takes the rate from its own process's environment:
	// a test process exporting DIAMONDS_PER_YUAN (for diamondd dev, say)
	// must not make a correct service fail.
	t.Setenv("DIAMONDS_PER_YUAN", "20")
	_, rep = runFake(t, loadfake.Bugs{}, load.Options{Scenario: load.ScenarioRecharge})
	require.True(t, rep.OK(), "%+v", rep)
}

func requireFailed(t *testing.T, rep load.CheckReport, name, want string) {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			require.False(t, c.Passed(), "%s passed", name)
			require.True(t, strings.Contains(strings.Join(c.Failures, "\n"), want), "%s: %v", name, c.Failures)
			return
		}
	}
	t.Fatalf("no check %q", name)
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1:8080", "http://example.com", "https://127.0.0.1"} {
		_, err := load.New(load.Options{BaseURL: u, JWTSecret: jwtSecret, WebhookSecret: whSecret})
		require.Error(t, err, u)
	}
	for _, u := range []string{"http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"} {
		r, err := load.New(load.Options{BaseURL: u, JWTSecret: jwtSecret, WebhookSecret: whSecret})
		require.NoError(t, err, u)
		r.Close()
	}
}
