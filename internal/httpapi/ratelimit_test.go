package httpapi_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/redisx/redistest"
)

func createRecharge(h *apptest.Harness, tok string, i int) *apptest.Response {
	return h.Do("POST", "/v1/recharges", apptest.Req{Token: tok, Key: fmt.Sprintf("rl-%d", i),
		Body: map[string]any{"channel": "sandbox", "package_id": "p60"}})
}

// With Redis the limit is shared by replicas: 20 a minute across both.
func TestRateLimitSharedThroughRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := apptest.New(t, func(c *config.Config) { c.RedisURL = srv.URL() })
	replica := h.Replica()
	tok := h.Token("u1", auth.RoleUser)
	for i := range 20 {
		target := h
		if i%2 == 1 {
			target = replica
		}
		createRecharge(target, tok, i).RequireStatus(t, 201)
	}
	for _, target := range []*apptest.Harness{h, replica} {
		r := createRecharge(target, tok, 99).RequireStatus(t, 429)
		require.Equal(t, "rate_limited", r.Code())
		retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
		require.NoError(t, err)
		require.Positive(t, retry)
	}
	// another user has their own allowance; refunds have their own (5/min)
	createRecharge(h, h.Token("u2", auth.RoleUser), 0).RequireStatus(t, 201)
	require.Equal(t, "ok", h.Do("GET", "/readyz", apptest.Req{}).RequireStatus(t, 200).JSON()["redis"])
}

// Without Redis each process limits on its own.
func TestRateLimitInProcess(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	replica := h.Replica()
	tok := h.Token("u1", auth.RoleUser)
	for i := range 20 {
		createRecharge(h, tok, i).RequireStatus(t, 201)
	}
	createRecharge(h, tok, 20).RequireStatus(t, 429)
	createRecharge(replica, tok, 21).RequireStatus(t, 201)
	r := h.Do("GET", "/readyz", apptest.Req{}).RequireStatus(t, 200).JSON()
	require.Contains(t, r["redis"], "not configured")

	refundTok := h.Token("u3", auth.RoleUser)
	for i := range 5 {
		// refused for another reason (no such order), but counted
		h.Do("POST", "/v1/refunds", apptest.Req{Token: refundTok, Key: fmt.Sprintf("rf-%d", i),
			Body: map[string]any{"order_id": "01a1fee9-3982-7415-ae27-cb5d3a089c39", "reason_code": "other"}}).RequireStatus(t, 404)
	}
	h.Do("POST", "/v1/refunds", apptest.Req{Token: refundTok, Key: "rf-6",
		Body: map[string]any{"order_id": "01a1fee9-3982-7415-ae27-cb5d3a089c39", "reason_code": "other"}}).RequireStatus(t, 429)
}

// Redis stopped mid-test: requests are still served, limits fall back to
// the process, nothing fails because of Redis, and Redis is used again once
// it is back.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := apptest.New(t, func(c *config.Config) { c.RedisURL = srv.URL(); c.RateLimitRechargePerMin = 1000 })
	tok := h.Token("u1", auth.RoleUser)
	for i := range 5 {
		createRecharge(h, tok, i).RequireStatus(t, 201)
	}
	srv.Stop()
	for i := 5; i < 30; i++ {
		r := createRecharge(h, tok, i)
		require.Equal(t, 201, r.Status, "request %d during the outage: %s", i, r.Body)
	}
	ready := h.Do("GET", "/readyz", apptest.Req{}).RequireStatus(t, 200).JSON()
	require.Equal(t, "ready", ready["status"])
	require.Contains(t, ready["redis"], "unreachable")
	metrics := string(h.Do("GET", "/metrics", apptest.Req{}).RequireStatus(t, 200).Body)
	require.Contains(t, metrics, "diamondd_redis_up 0")
	require.Regexp(t, `diamondd_ratelimit_fallback_total [1-9]`, metrics)

	srv.Restart()
	require.Equal(t, "ok", h.Do("GET", "/readyz", apptest.Req{}).RequireStatus(t, 200).JSON()["redis"])
	createRecharge(h, tok, 31).RequireStatus(t, 201)
	require.Contains(t, string(h.Do("GET", "/metrics", apptest.Req{}).Body), "diamondd_redis_up 1")
}
