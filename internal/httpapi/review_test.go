package httpapi_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/config"
)

// Regression (a bug found in review, now fixed), as first reported:
// A retry with the same Idempotency-Key must replay the stored outcome
// (API.md, Idempotency). The rate limiter runs before the stored record is
// consulted, so a client retrying a request that already succeeded (a lost
// response) is told 429 instead of getting its order back.
func TestRateLimitDoesNotHideReplay(t *testing.T) {
	t.Parallel()
	h := apptest.New(t, func(c *config.Config) { c.RateLimitRechargePerMin = 1 })
	tok := h.Token("u1", auth.RoleUser)
	body := map[string]any{"channel": "sandbox", "package_id": "p60"}
	first := h.Do("POST", "/v1/recharges", apptest.Req{Token: tok, Key: "k", Body: body}).RequireStatus(t, 201)
	retry := h.Do("POST", "/v1/recharges", apptest.Req{Token: tok, Key: "k", Body: body})
	require.Equal(t, 201, retry.Status, "the retry should replay the created order; got %s", retry.Body)
	require.Equal(t, "true", retry.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first.Body), string(retry.Body))
}

// Regression (a bug found in review, now fixed), as first reported:
// API.md: "5xx outcomes are not stored (a retry may run again)": a 4xx is
// stored and replayed. CreateRecharge checks eligibility before the
// idempotent transaction, so its 422 channel_unavailable is not stored: the
// same key later creates (and, for the credit line, charges) an order. The
// same refusal found inside the transaction (PayInTx) is stored instead.
func TestRechargeRefusalIsStored(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	lead := h.Token("lead", auth.RoleSupportLead)
	tok := h.Token("u1", auth.RoleUser)
	set := func(status string) {
		h.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: lead, Body: map[string]any{"limit_fen": 10000, "status": status}}).RequireStatus(t, 200)
	}
	body := map[string]any{"channel": "monthly_pay", "package_id": "p60"}
	set("frozen")
	first := h.Do("POST", "/v1/recharges", apptest.Req{Token: tok, Key: "k", Body: body}).RequireStatus(t, 422)
	require.Equal(t, "channel_unavailable", first.Code())
	set("active")
	retry := h.Do("POST", "/v1/recharges", apptest.Req{Token: tok, Key: "k", Body: body})
	require.Equal(t, 422, retry.Status, "same key, same request: the stored 422 should be replayed; got %d %s", retry.Status, retry.Body)
}
