package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
)

// A request stuck past SHUTDOWN_TIMEOUT (a spend waiting on a wallet row
// the test holds) is cancelled when the timeout passes: serve returns at
// about the timeout, without error, and the spend's statement is gone from
// the database, having spent nothing.
func TestShutdownIsBoundedByTimeout(t *testing.T) {
	h := apptest.New(t)
	cfg := h.Config
	cfg.DatabaseURL = h.Pool.Config().ConnString()
	cfg.ShutdownTTL = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addrc <- a }) }()
	addr := <-addrc

	bg := context.Background()
	o := h.Recharge(h.Token("u1", auth.RoleUser), map[string]any{"channel": "sandbox", "package_id": "p60"}, "k")
	h.Pay(o["id"].(string), 600, "T-1", "e-1")
	tx, err := h.Pool.Begin(bg)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(bg) }()
	_, err = tx.Exec(bg, `SELECT 1 FROM wallets WHERE user_id = 'u1' FOR UPDATE`)
	require.NoError(t, err)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/spends", strings.NewReader(`{"user_id":"u1","diamonds":1,"reference":"r"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "k")
		req.Header.Set("Authorization", "Bearer "+h.Token("gift", auth.RoleService))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		err := h.Pool.QueryRow(bg, `SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting
	}, 5*time.Second, 10*time.Millisecond, "the spend waits on the wallet row")

	start := time.Now()
	cancel()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serve still running 10 s after SIGTERM")
	}
	took := time.Since(start)
	require.NoError(t, err, "a drain cut short at SHUTDOWN_TIMEOUT is no failure")
	require.Less(t, took, 3*time.Second, "SHUTDOWN_TIMEOUT is 1s")
	require.GreaterOrEqual(t, took, cfg.ShutdownTTL, "requests had the whole timeout")
	<-answered

	require.Eventually(t, func() bool {
		var waiting bool
		err := h.Pool.QueryRow(bg, `SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && !waiting
	}, 5*time.Second, 10*time.Millisecond, "the cancelled spend no longer waits in the database")
	require.NoError(t, tx.Rollback(bg))
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail, "nothing spent")
	h.RequireClean()
}

// What serve waits for after the drain (workers, pool.Close) never holds it
// past stopGrace.
func TestWithin(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	require.False(t, within(20*time.Millisecond, func() { <-stuck }))
	require.True(t, within(time.Second, func() {}))
}
