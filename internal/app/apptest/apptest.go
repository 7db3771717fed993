// Package apptest runs the whole service for end-to-end tests: the app as
// main wires it, over real HTTP, on a fresh PostgreSQL database, with every
// response checked against the OpenAPI spec.
package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/sandbox"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

// Secret is the JWT secret of test services.
const Secret = "apptest-jwt-secret-0123456789"

// Clock is a settable clock shared by the service and the test.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Harness is a running service.
type Harness struct {
	T      testing.TB
	Pool   *pgxpool.Pool
	App    *app.App
	Config config.Config
	Clock  *Clock
	URL    string
}

// Defaults is the configuration tests start from.
func Defaults() config.Config {
	c := config.Defaults()
	c.DatabaseURL = "set-by-harness"
	c.DBMaxConns = 30
	c.HTTPAddr = "127.0.0.1:0"
	c.JWTSecret = Secret
	c.SandboxWebhookSecret = SandboxSecret
	c.Channels = []string{"sandbox", "monthly_pay"}
	c.ShutdownTTL = time.Second
	return c
}

// SandboxSecret signs sandbox webhooks in tests.
const SandboxSecret = "apptest-sandbox-secret"

// New starts a service; edit adjusts the configuration first.
func New(t testing.TB, edit ...func(*config.Config)) *Harness {
	t.Helper()
	return NewWith(t, nil, edit...)
}

// NewWith starts a service whose named channels are replaced (fakes).
func NewWith(t testing.TB, channels map[string]channel.Channel, edit ...func(*config.Config)) *Harness {
	t.Helper()
	// The listener comes first so that the configuration can carry the
	// service's own URL (PUBLIC_BASE_URL: where channel fakes notify).
	var handler http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	url := "http://" + srv.Listener.Addr().String()
	cfg := Defaults()
	cfg.PublicBaseURL = url
	for _, e := range edit {
		e(&cfg)
	}
	require.NoError(t, cfg.Validate())
	h := &Harness{T: t, Pool: pgtest.Pool(t), Config: cfg,
		Clock: &Clock{now: time.Now().UTC().Truncate(time.Second)}}
	a, err := app.New(context.Background(), cfg, app.Options{Pool: h.Pool, Now: h.Clock.Now, ValidateResponses: true, Channels: channels})
	require.NoError(t, err)
	h.App = a
	t.Cleanup(a.Close)
	handler = a.Echo
	srv.Start()
	t.Cleanup(srv.Close)
	h.URL = url
	return h
}

// Token signs a token for a principal valid for a day of the harness clock.
func (h *Harness) Token(sub string, role auth.Role, birthdate ...string) string {
	p := auth.Principal{Subject: sub, Role: role}
	if len(birthdate) > 0 {
		p.Birthdate = birthdate[0]
	}
	tok, err := auth.Sign([]byte(Secret), p, 24*time.Hour, h.Clock.Now())
	require.NoError(h.T, err)
	return tok
}

// Response is a received response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r *Response) JSON() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// Decode decodes the body into v.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Body, v), "body: %s", r.Body)
}

// Code is the problem code of an error response.
func (r *Response) Code() string {
	s, _ := r.JSON()["code"].(string)
	return s
}

// Req describes a request.
type Req struct {
	Token   string
	Key     string // Idempotency-Key
	Body    any    // marshalled to JSON unless it is a string or []byte
	Headers map[string]string
}

// Do sends a request and reads the whole response.
func (h *Harness) Do(method, path string, r Req) *Response {
	h.T.Helper()
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(h.T, err)
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, h.URL+path, body)
	require.NoError(h.T, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	if r.Key != "" {
		req.Header.Set("Idempotency-Key", r.Key)
	}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(h.T, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(h.T, err)
	if resp.StatusCode >= 400 {
		require.Equal(h.T, "application/problem+json", resp.Header.Get("Content-Type"), "error body: %s", raw)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// RequireStatus fails the test unless the response has the status.
func (r *Response) RequireStatus(t testing.TB, status int) *Response {
	t.Helper()
	require.Equal(t, status, r.Status, "body: %s", r.Body)
	return r
}

// RequireClean fails the test when the ledger has any broken invariant.
func (h *Harness) RequireClean() {
	h.T.Helper()
	findings, err := app.Verify(context.Background(), h.Pool)
	require.NoError(h.T, err)
	require.Empty(h.T, findings)
}

// Webhook posts a sandbox notification signed at the harness clock's time.
func (h *Harness) Webhook(event map[string]any) *Response {
	h.T.Helper()
	body, err := json.Marshal(event)
	require.NoError(h.T, err)
	return h.SignedWebhook(body, h.Clock.Now().Unix(), SandboxSecret)
}

// SignedWebhook posts a raw sandbox body with a timestamp and secret of the
// test's choosing (to test refusals).
func (h *Harness) SignedWebhook(body []byte, ts int64, secret string) *Response {
	h.T.Helper()
	req, err := http.NewRequest(http.MethodPost, h.URL+"/v1/webhooks/sandbox", bytes.NewReader(body))
	require.NoError(h.T, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sandbox-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Sandbox-Signature", sandbox.Sign(secret, ts, body))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(h.T, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(h.T, err)
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// Pay reports a sandbox payment of an order and requires it acknowledged.
func (h *Harness) Pay(orderID string, amountFen int64, tradeNo, eventID string) {
	h.T.Helper()
	r := h.Webhook(map[string]any{"event_id": eventID, "type": "payment.succeeded", "order_id": orderID,
		"trade_no": tradeNo, "amount_fen": amountFen})
	require.Equal(h.T, http.StatusOK, r.Status, "webhook: %s", r.Body)
}

// Recharge creates a sandbox order for a user and returns its JSON.
func (h *Harness) Recharge(userToken string, body map[string]any, key string) map[string]any {
	h.T.Helper()
	r := h.Do(http.MethodPost, "/v1/recharges", Req{Token: userToken, Key: key, Body: body})
	require.Equal(h.T, http.StatusCreated, r.Status, "body: %s", r.Body)
	return r.JSON()
}

// Wallet reads a user's wallet through the support API.
func (h *Harness) Wallet(userID string) (available, held, debt int64) {
	h.T.Helper()
	r := h.Do(http.MethodGet, "/v1/admin/users/"+userID+"/wallet", Req{Token: h.Token("wallet-reader", auth.RoleSupport)})
	require.Equal(h.T, http.StatusOK, r.Status, "body: %s", r.Body)
	var w struct{ Available, Held, Debt int64 }
	r.Decode(h.T, &w)
	return w.Available, w.Held, w.Debt
}

// RunWorkers runs one round of every background loop, as serve would.
func (h *Harness) RunWorkers() {
	h.T.Helper()
	for _, l := range h.App.Loops {
		if _, _, err := l.Step(context.Background()); err != nil {
			h.T.Logf("worker %s: %v", l.Name, err)
		}
	}
}

// JSON2 decodes a body that is a JSON array of objects.
func (r *Response) JSON2() []map[string]any {
	var m []map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// Replica starts a second instance of the service on the same database and
// configuration, as another replica behind a load balancer would be.
func (h *Harness) Replica() *Harness {
	h.T.Helper()
	return h.SkewedReplica(0)
}

// SkewedReplica is a Replica whose clock is the harness clock plus skew, as
// the clocks of two machines are never quite the same.
func (h *Harness) SkewedReplica(skew time.Duration) *Harness {
	h.T.Helper()
	return h.replica(skew, h.Config)
}

// ReplicaWith is a Replica started with its configuration edited, as a
// deploy that changes a setting meets the orders of the one before.
func (h *Harness) ReplicaWith(edit ...func(*config.Config)) *Harness {
	h.T.Helper()
	cfg := h.Config
	for _, e := range edit {
		e(&cfg)
	}
	require.NoError(h.T, cfg.Validate())
	return h.replica(0, cfg)
}

func (h *Harness) replica(skew time.Duration, cfg config.Config) *Harness {
	h.T.Helper()
	a, err := app.New(context.Background(), cfg, app.Options{Pool: h.Pool, ValidateResponses: true,
		Now: func() time.Time { return h.Clock.Now().Add(skew) }})
	require.NoError(h.T, err)
	srv := httptest.NewServer(a.Echo)
	h.T.Cleanup(srv.Close)
	h.T.Cleanup(a.Close)
	r := *h
	r.App, r.URL, r.Config = a, srv.URL, cfg
	return &r
}
