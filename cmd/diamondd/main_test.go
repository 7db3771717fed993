package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func TestMain(m *testing.M) {
	// TestExitStatus runs this binary as diamondd itself.
	if args, ok := os.LookupEnv(asMain); ok {
		os.Args = append([]string{"diamondd"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	pgtest.Main(m)
}

// The commands an operator runs, on a real database: verify finds nothing on
// a sound ledger, exits 1 on a planted corruption; the sandbox helper pays an
// order through the webhook; token signs what the service accepts.
func TestCommands(t *testing.T) {
	h := apptest.New(t)
	ctx := context.Background()
	t.Setenv("DATABASE_URL", h.Pool.Config().ConnString())
	t.Setenv("SANDBOX_WEBHOOK_SECRET", apptest.SandboxSecret)
	t.Setenv("JWT_SECRET", apptest.Secret)

	var out bytes.Buffer
	require.NoError(t, token([]string{"--sub", "u1", "--role", "user"}, &out, time.Now()))
	tok := strings.TrimSpace(out.String())
	o := h.Recharge(tok, map[string]any{"channel": "sandbox", "package_id": "p60"}, "k")
	out.Reset()
	require.NoError(t, sandboxCmd(ctx, []string{"pay", o["id"].(string), "--amount", "600", "--url", h.URL}, &out))
	require.Contains(t, out.String(), `200 OK {"ok":true}`)
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail)

	out.Reset()
	require.NoError(t, verify(ctx, &out))
	require.Contains(t, out.String(), "every invariant holds")

	// a double credit planted behind the service's back
	_, err := h.Pool.Exec(ctx, `UPDATE wallets SET available = available + 60 WHERE user_id = 'u1'`)
	require.NoError(t, err)
	out.Reset()
	require.ErrorIs(t, verify(ctx, &out), errFindings)
	require.Contains(t, out.String(), "wallet differs from postings: user u1: wallet available=120")

	require.ErrorIs(t, run(ctx, []string{"ledger"}, &out), errUsage)
	require.ErrorContains(t, token([]string{"--sub", "x", "--role", "admin"}, &out, time.Now()), "--role")

	// an order marked paid that never credited (a lost credit)
	lost := h.Recharge(h.Token("u2", auth.RoleUser), map[string]any{"channel": "sandbox", "package_id": "p60"}, "k2")
	_, err = h.Pool.Exec(ctx, `UPDATE orders SET status = 'paid' WHERE id = $1`, lost["id"])
	require.NoError(t, err)
	out.Reset()
	require.ErrorIs(t, verify(ctx, &out), errFindings)
	require.Contains(t, out.String(), "order credit: order "+lost["id"].(string)+" (paid, sandbox, user u2): 0 recharge journal(s)")

	// a verify that cannot run is neither a clean ledger nor a broken one
	t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere?connect_timeout=1")
	out.Reset()
	require.ErrorIs(t, verify(ctx, &out), errCouldNotVerify)
}

// serve stops gracefully when its context ends (SIGTERM): the listener
// closes and serve returns without error.
func TestServeShutsDownGracefully(t *testing.T) {
	h := apptest.New(t)
	cfg := h.Config
	cfg.DatabaseURL = h.Pool.Config().ConnString()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addrc <- a }) }()
	addr := <-addrc
	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	cancel()
	require.NoError(t, <-done)
	_, err = http.Get("http://" + addr + "/healthz")
	require.Error(t, err, "no longer listening")
}
