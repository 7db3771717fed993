package httpapi_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
)

// Regression (a bug found in review, now fixed): a JWT birthdate after today
// made no one a minor, so monthly_pay was offered and charged and the order
// carried no minor flag. Such a token is now refused like a malformed
// birthdate: 401 unauthenticated. Today is the Asia/Shanghai date of the
// service's clock.
func TestFutureBirthdateIsRefused(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	lead := h.Token("lead", auth.RoleSupportLead)
	h.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: lead,
		Body: map[string]any{"limit_fen": 100000, "status": "active"}}).RequireStatus(t, 200)
	china := time.FixedZone("CST", 8*60*60)
	date := func() string { return h.Clock.Now().In(china).Format(time.DateOnly) }
	tomorrow := h.Clock.Now().In(china).AddDate(0, 0, 1).Format(time.DateOnly)
	keys := 0
	monthlyPay := func(tok string) *apptest.Response {
		keys++
		return h.Do("POST", "/v1/recharges", apptest.Req{Token: tok, Key: fmt.Sprint("k", keys),
			Body: map[string]any{"channel": "monthly_pay", "package_id": "p60"}})
	}
	monthlyPayReason := func(tok string) any {
		var items []map[string]any
		h.Do("GET", "/v1/channels?amount_fen=600", apptest.Req{Token: tok}).RequireStatus(t, 200).Decode(t, &items)
		for _, it := range items {
			if it["channel"] == "monthly_pay" {
				return it["reason_code"]
			}
		}
		t.Fatal("no monthly_pay")
		return nil
	}

	malformed := h.Do("GET", "/v1/channels?amount_fen=600", apptest.Req{Token: h.Token("u1", auth.RoleUser, "2012-13-01")}).
		RequireStatus(t, 401)
	for _, birthdate := range []string{tomorrow, "2099-01-01"} {
		t.Run(birthdate, func(t *testing.T) {
			tok := h.Token("u1", auth.RoleUser, birthdate)
			r := h.Do("GET", "/v1/channels?amount_fen=600", apptest.Req{Token: tok}).RequireStatus(t, 401)
			require.Equal(t, "unauthenticated", r.Code())
			require.Equal(t, malformed.JSON()["detail"], r.JSON()["detail"], "the same problem as a malformed birthdate")
			require.Equal(t, "unauthenticated", monthlyPay(tok).RequireStatus(t, 401).Code())
		})
	}

	// Born today is a minor, not a bogus claim.
	require.Equal(t, "minor_not_allowed", monthlyPayReason(h.Token("u1", auth.RoleUser, date())))
	refused := monthlyPay(h.Token("u1", auth.RoleUser, date())).RequireStatus(t, 422)
	require.Equal(t, "minor_not_allowed", refused.JSON()["reason_code"], "body: %s", refused.Body)

	// The service's clock, not the wall clock, says what today is: a day
	// later, yesterday's "tomorrow" is a birthdate like any other.
	h.Clock.Advance(24 * time.Hour)
	require.Equal(t, tomorrow, date())
	require.Equal(t, "minor_not_allowed", monthlyPayReason(h.Token("u1", auth.RoleUser, tomorrow)))

	var orders int
	require.NoError(t, h.Pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE user_id = 'u1'`).Scan(&orders))
	require.Zero(t, orders, "no order was created for a refused token")
	h.RequireClean()
}
