package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
	"github.com/diamondd/diamondd/migrations"
)

// asMain, in the environment, makes the test binary run main with its
// value as arguments (TestMain).
const asMain = "DIAMONDD_TEST_AS_MAIN"

// nowhere is a database no command reaches.
const nowhere = "postgres://postgres@127.0.0.1:1/nowhere?connect_timeout=1"

// What each command does with -h/--help, stray arguments and unknown
// flags: its own usage, exit 0 when asked for, 2 on a mistake; and nothing
// started or sent either way.
func TestUsage(t *testing.T) {
	var posted atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { posted.Add(1) }))
	defer hook.Close()
	t.Setenv("SANDBOX_WEBHOOK_SECRET", apptest.SandboxSecret)
	t.Setenv("JWT_SECRET", apptest.Secret)
	// Should a command start after all, it fails at once.
	t.Setenv("DATABASE_URL", nowhere)

	for _, tc := range []struct {
		args  string
		usage string // the usage printed: its first line's start
		why   string // for a usage error
	}{
		{args: "help", usage: "usage: diamondd <command>"},
		{args: "--help", usage: "usage: diamondd <command>"},
		{args: "serve --help", usage: "usage: diamondd serve"},
		{args: "serve -h", usage: "usage: diamondd serve"},
		{args: "migrate --help", usage: "usage: diamondd migrate up"},
		{args: "migrate up --help", usage: "usage: diamondd migrate up"},
		{args: "ledger --help", usage: "usage: diamondd ledger verify"},
		{args: "ledger verify --help", usage: "usage: diamondd ledger verify"},
		{args: "dev --help", usage: "usage: diamondd dev"},
		{args: "token --help", usage: "usage: diamondd token"},
		{args: "sandbox --help", usage: "usage: diamondd sandbox pay"},
		{args: "sandbox refund --help --url " + hook.URL, usage: "usage: diamondd sandbox pay"},
		{args: "sandbox pay R-1 -h --amount 600 --url " + hook.URL, usage: "usage: diamondd sandbox pay"},

		{args: "", usage: "usage: diamondd <command>", why: "no command"},
		{args: "bogus", usage: "usage: diamondd <command>", why: `unknown command "bogus"`},
		{args: "serve --port 9000", usage: "usage: diamondd serve", why: "flag provided but not defined: -port"},
		{args: "serve extra", usage: "usage: diamondd serve", why: `unexpected argument "extra"`},
		{args: "migrate", usage: "usage: diamondd migrate up", why: "missing up or status"},
		{args: "migrate sideways", usage: "usage: diamondd migrate up", why: `unknown migrate command "sideways"`},
		{args: "migrate up now", usage: "usage: diamondd migrate up", why: `unexpected argument "now"`},
		{args: "ledger", usage: "usage: diamondd ledger verify", why: "missing verify"},
		{args: "ledger check", usage: "usage: diamondd ledger verify", why: `unknown ledger command "check"`},
		{args: "ledger verify all", usage: "usage: diamondd ledger verify", why: `unexpected argument "all"`},
		{args: "dev now", usage: "usage: diamondd dev", why: `unexpected argument "now"`},
		{args: "token --sub u1 extra-arg", usage: "usage: diamondd token", why: `unexpected argument "extra-arg"`},
		{args: "token --role user", usage: "usage: diamondd token", why: "--sub is required"},
		{args: "sandbox", usage: "usage: diamondd sandbox pay", why: "missing pay, fail or refund"},
		{args: "sandbox refund --url " + hook.URL, usage: "usage: diamondd sandbox pay", why: "missing ORDER_ID or REFUND_ID"},
		{args: "sandbox pay O-1 --url " + hook.URL, usage: "usage: diamondd sandbox pay", why: "--amount (fen, as the order says) is required"},
		{args: "sandbox pay O-1 --failed --amount 600 --url " + hook.URL, usage: "usage: diamondd sandbox pay", why: "--failed does not apply to sandbox pay"},
		{args: "sandbox refund R-1 --reason x --url " + hook.URL, usage: "usage: diamondd sandbox pay", why: "--reason goes with --failed"},
		{args: "sandbox fly O-1 --url " + hook.URL, usage: "usage: diamondd sandbox pay", why: `unknown sandbox command "fly"`},
	} {
		t.Run(tc.args, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), strings.Fields(tc.args), &out)
			if tc.why == "" {
				require.NoError(t, err)
				require.True(t, strings.HasPrefix(out.String(), tc.usage), "usage printed: %s", out.String())
				return
			}
			require.ErrorIs(t, err, errUsage)
			var ue *usageError
			require.True(t, errors.As(err, &ue))
			require.Contains(t, ue.why, tc.why)
			require.True(t, strings.HasPrefix(ue.usage, tc.usage), "usage: %s", ue.usage)
			require.Empty(t, out.String(), "a mistake's usage goes to stderr")
		})
	}
	require.Zero(t, posted.Load(), "no webhook sent")
}

// The usage names every verb and flag the commands take.
func TestUsageListsWhatIsImplemented(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"sandbox", "--help"}, &out))
	for _, w := range []string{"sandbox pay ORDER_ID", "sandbox fail ORDER_ID", "sandbox refund REFUND_ID",
		"-amount", "-trade", "-failed", "-reason", "-url"} {
		require.Contains(t, out.String(), w)
	}
	out.Reset()
	require.NoError(t, run(context.Background(), []string{"token", "--help"}, &out))
	for _, w := range []string{"-sub", "-role", "-ttl", "-birthdate", "JWT_ISSUER", "JWT_AUDIENCE"} {
		require.Contains(t, out.String(), w)
	}
	require.NotContains(t, out.String(), "commands:", "token's usage, not the whole program's")
}

// The exit status and where the usage goes, through main itself.
func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		args           string
		code           int
		stdout, stderr string
	}{
		{"serve --help", 0, "usage: diamondd serve", ""},
		{"token -h", 0, "usage: diamondd token", ""},
		{"serve --port 9000", 2, "", "diamondd: flag provided but not defined: -port\n\nusage: diamondd serve"},
		{"sandbox pay --amount 600", 2, "", "diamondd: missing ORDER_ID or REFUND_ID\n\nusage: diamondd sandbox"},
		{"", 2, "", "usage: diamondd <command>"},
		{"token --sub u1", 1, "", "diamondd: JWT_SECRET must be at least 16 characters"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0])
			// No database, and a secret too short to sign with.
			cmd.Env = append(os.Environ(), asMain+"="+tc.args, "DATABASE_URL="+nowhere, "JWT_SECRET=short")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.code, code, "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
			if tc.stdout != "" {
				require.True(t, strings.HasPrefix(stdout.String(), tc.stdout), stdout.String())
			}
			if tc.stderr != "" {
				require.Contains(t, stderr.String(), tc.stderr)
			}
		})
	}
}

// token refuses what serve would refuse, and signs iss and aud when they
// are configured.
func TestToken(t *testing.T) {
	// 01:00 on 1 July in Beijing, still 30 June in UTC
	now := time.Date(2025, 6, 30, 17, 0, 0, 0, time.UTC)
	t.Setenv("JWT_SECRET", apptest.Secret)
	t.Setenv("JWT_ISSUER", "")
	t.Setenv("JWT_AUDIENCE", "")
	verifier := func(iss, aud string) *auth.Verifier {
		v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(apptest.Secret), Issuer: iss, Audience: aud,
			Now: func() time.Time { return now }})
		require.NoError(t, err)
		return v
	}
	sign := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := token(args, &out, now)
		return strings.TrimSpace(out.String()), err
	}

	for _, tc := range []struct {
		args []string
		why  string
	}{
		{[]string{"--sub", "u1", "--ttl", "0"}, "--ttl 0s: must be positive"},
		{[]string{"--sub", "u1", "--ttl", "-1h"}, "--ttl -1h0m0s: must be positive"},
		{[]string{"--sub", "u1", "--birthdate", "2025-07-02"}, "--birthdate 2025-07-02: is after today (2025-07-01 in Beijing)"},
		{[]string{"--sub", "u1", "--birthdate", "2999-01-01"}, "is after today"},
		{[]string{"--sub", "u1", "--birthdate", "2012-1-1"}, "must be YYYY-MM-DD"},
	} {
		_, err := sign(tc.args...)
		require.ErrorIs(t, err, errUsage, "%v", tc.args)
		require.ErrorContains(t, err, tc.why)
	}

	// today in Beijing is a birthdate the server takes
	tok, err := sign("--sub", "u1", "--birthdate", "2025-07-01")
	require.NoError(t, err)
	p, err := verifier("", "").Verify(tok)
	require.NoError(t, err)
	require.Equal(t, "2025-07-01", p.Birthdate)

	t.Setenv("JWT_ISSUER", "https://id.example")
	t.Setenv("JWT_AUDIENCE", "diamondd")
	tok, err = sign("--sub", "agent-1", "--role", "support")
	require.NoError(t, err)
	p, err = verifier("https://id.example", "diamondd").Verify(tok)
	require.NoError(t, err)
	require.Equal(t, auth.Principal{Subject: "agent-1", Role: auth.RoleSupport}, p)
	_, err = verifier("https://other.example", "diamondd").Verify(tok)
	require.ErrorIs(t, err, auth.ErrUnauthenticated, "the issuer is signed, not ignored")

	t.Setenv("JWT_SECRET", "too-short")
	_, err = sign("--sub", "u1")
	require.ErrorContains(t, err, "JWT_SECRET must be at least 16 characters")
	require.NotErrorIs(t, err, errUsage)
}

// The sandbox helper takes flags before or after the id, prints what the
// service answers, and fails when the service refuses the webhook.
func TestSandbox(t *testing.T) {
	h := apptest.New(t)
	ctx := context.Background()
	t.Setenv("SANDBOX_WEBHOOK_SECRET", apptest.SandboxSecret)
	o := h.Recharge(h.Token("u1", auth.RoleUser), map[string]any{"channel": "sandbox", "package_id": "p60"}, "k")

	var out bytes.Buffer
	require.NoError(t, sandboxCmd(ctx, []string{"pay", "--amount", "600", "--url", h.URL, o["id"].(string)}, &out))
	require.Contains(t, out.String(), `200 OK {"ok":true}`)
	avail, _, _ := h.Wallet("u1")
	require.EqualValues(t, 60, avail)

	// an unknown order is acknowledged all the same: the answer is shown
	out.Reset()
	require.NoError(t, sandboxCmd(ctx, []string{"pay", uuid.NewString(), "--amount", "600", "--url", h.URL}, &out))
	require.Contains(t, out.String(), `200 OK {"ok":true}`)

	// a refusal is a failure, with the answer printed
	t.Setenv("SANDBOX_WEBHOOK_SECRET", "not-the-secret")
	out.Reset()
	err := sandboxCmd(ctx, []string{"fail", o["id"].(string), "--reason", "declined", "--url", h.URL}, &out)
	require.ErrorContains(t, err, "webhook answered 401")
	require.Contains(t, out.String(), "invalid_signature")
}

// serve refuses a database whose migrations are not applied, before it
// listens or starts a worker.
func TestServeRefusesPendingMigrations(t *testing.T) {
	cfg := apptest.Defaults()
	cfg.DatabaseURL = emptyDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := serve(ctx, cfg, slog.New(slog.DiscardHandler), func(string) {
		t.Error("serve listens on an unmigrated database")
		cancel()
	})
	require.ErrorContains(t, err, "migrations pending: run `diamondd migrate up` first")
}

// dev defaults to loopback: its secrets are published.
func TestDevListensOnLoopbackByDefault(t *testing.T) {
	for _, k := range []string{"HTTP_ADDR", "JWT_SECRET", "SANDBOX_WEBHOOK_SECRET", "LOG_LEVEL"} {
		t.Setenv(k, "")
	}
	setDevDefaults()
	require.Equal(t, "127.0.0.1:8080", os.Getenv("HTTP_ADDR"))

	t.Setenv("HTTP_ADDR", ":9090")
	setDevDefaults()
	require.Equal(t, ":9090", os.Getenv("HTTP_ADDR"), "an explicit HTTP_ADDR wins")
}

// dev migrates the database before it serves, prints its URL where a copy
// takes it alone, and prints tokens the service accepts, iss and aud
// included when they are configured.
func TestDev(t *testing.T) {
	db := emptyDatabase(t)
	t.Setenv("DATABASE_URL", db)
	t.Setenv("HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("LOG_LEVEL", "error")
	t.Setenv("JWT_SECRET", "")
	t.Setenv("SANDBOX_WEBHOOK_SECRET", "")
	t.Setenv("JWT_ISSUER", "https://id.example")
	t.Setenv("JWT_AUDIENCE", "diamondd")

	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- dev(ctx, nil, out) }()
	serving := regexp.MustCompile(`serving on (http://\S+) `)
	require.Eventually(t, func() bool { return serving.MatchString(out.String()) }, 30*time.Second, 20*time.Millisecond,
		"dev serves: %s", out.String())
	cancel()
	require.NoError(t, <-done)

	migrated, err := migrations.FS.ReadDir(".")
	require.NoError(t, err)
	n := 0
	for _, m := range migrated {
		if strings.HasSuffix(m.Name(), ".sql") {
			n++
		}
	}
	require.Contains(t, out.String(), "database: "+db+" ("+plural(n, "migration")+" applied)\n")

	tok := regexp.MustCompile(`(?m)^  user +demo-user +(\S+)$`).FindStringSubmatch(out.String())
	require.NotNil(t, tok, out.String())
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(devJWTSecret), Issuer: "https://id.example", Audience: "diamondd"})
	require.NoError(t, err)
	p, err := v.Verify(tok[1])
	require.NoError(t, err)
	require.Equal(t, "demo-user", p.Subject)
}

// emptyDatabase is a new database on the test server with no migration
// applied; it is dropped after the test.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pgtest.URL(t))
	require.NoError(t, err)
	defer admin.Close(ctx)
	name := "diamondd_cli_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, pgtest.URL(t)); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(pgtest.URL(t))
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// syncBuffer is written by dev's goroutine while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
