package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
)

// Text PostgreSQL cannot store (NUL, invalid UTF-8), a body that is more
// than one JSON value, and a chunked body over the limit are the client's
// mistakes: 400 or 413, never 500, and nothing is stored.
func TestClientTextIsRefusedNot500(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)
	svc := h.Token("gifts", auth.RoleService)
	support := h.Token("agent", auth.RoleSupport)
	order := h.Recharge(user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "o")["id"].(string)
	h.Pay(order, 600, "T-1", "e-1")

	for name, r := range map[string]struct {
		method, path, token, body string
	}{
		"NUL in a spend reference":       {"POST", "/v1/spends", svc, `{"user_id":"u1","diamonds":1,"reference":"g\u0000"}`},
		"NUL in a spend user_id":         {"POST", "/v1/spends", svc, `{"user_id":"u\u00001","diamonds":1,"reference":"g"}`},
		"NUL in a refund description":    {"POST", "/v1/refunds", user, `{"order_id":"` + order + `","reason_code":"other","description":"a\u0000b"}`},
		"NUL in evidence":                {"POST", "/v1/refunds", user, `{"order_id":"` + order + `","reason_code":"other","evidence":[{"kind":"text","value":"\u0000"}]}`},
		"invalid UTF-8 in a body":        {"POST", "/v1/spends", svc, "{\"user_id\":\"u1\",\"diamonds\":1,\"reference\":\"g\xff\"}"},
		"two JSON objects":               {"POST", "/v1/spends", svc, `{"user_id":"u1","diamonds":1,"reference":"g"}{"user_id":"u1","diamonds":2,"reference":"h"}`},
		"trailing bytes":                 {"POST", "/v1/spends", svc, `{"user_id":"u1","diamonds":1,"reference":"g"} x`},
		"NUL in a path parameter":        {"GET", "/v1/admin/users/u%001/wallet", support, ""},
		"invalid UTF-8 in a path":        {"GET", "/v1/admin/users/u%FF/wallet", support, ""},
		"NUL in a query parameter":       {"GET", "/v1/admin/refunds?status=pending_review&cursor=%00", support, ""},
		"javascript: evidence":           {"POST", "/v1/refunds", user, `{"order_id":"` + order + `","reason_code":"other","evidence":[{"kind":"url","value":"javascript:alert(1)"}]}`},
		"evidence url without a host":    {"POST", "/v1/refunds", user, `{"order_id":"` + order + `","reason_code":"other","evidence":[{"kind":"url","value":"https:///x"}]}`},
		"evidence url of another scheme": {"POST", "/v1/refunds", user, `{"order_id":"` + order + `","reason_code":"other","evidence":[{"kind":"url","value":"data:text/html,x"}]}`},
	} {
		t.Run(name, func(t *testing.T) {
			req := apptest.Req{Token: r.token}
			if r.body != "" {
				req.Body, req.Key = r.body, "k-"+name
			}
			resp := h.Do(r.method, r.path, req)
			require.Equal(t, 400, resp.Status, "body: %s", resp.Body)
			require.Equal(t, "validation_failed", resp.Code())
		})
	}
	// the media type's spelling and parameters change nothing
	for i, ct := range []string{"application/json; charset=utf-8", "Application/JSON"} {
		r := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: fmt.Sprint("ct", i), Headers: map[string]string{"Content-Type": ct},
			Body: `{"user_id":"u1","diamonds":1,"reference":"g"} x`})
		require.Equal(t, 400, r.Status, "%s: %s", ct, r.Body)
	}
	// a read's body is never read, so it is never judged
	h.Do("GET", "/v1/wallet", apptest.Req{Token: user, Body: "not json"}).RequireStatus(t, 200)
	// an escaped backslash before u0000 is text, not a NUL
	h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "backslash", Body: `{"user_id":"u1","diamonds":1,"reference":"g\\u0000"}`}).RequireStatus(t, 201)
	h.Do("POST", "/v1/refunds", apptest.Req{Token: user, Key: "url", Body: `{"order_id":"` + order + `","amount_fen":100,"reason_code":"other","evidence":[{"kind":"url","value":"https://example.com/receipt.png"}]}`}).RequireStatus(t, 201)

	// a chunked body (no Content-Length) over 64 KiB
	body := []byte(`{"channel":"sandbox","package_id":"p60","x":"` + strings.Repeat("x", 70000) + `"}`)
	req, err := http.NewRequest(http.MethodPost, h.URL+"/v1/recharges", io.MultiReader(bytes.NewReader(body)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+user)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "chunked")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 413, resp.StatusCode)
	var spends, refunds, orders int
	require.NoError(t, h.Pool.QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM spends), (SELECT count(*) FROM refunds), (SELECT count(*) FROM orders)`).Scan(&spends, &refunds, &orders))
	require.Equal(t, []int{1, 1, 1}, []int{spends, refunds, orders}, "only the two good requests did anything")
	h.RequireClean()
}

// A token's sub names the user everywhere: one the API could not name in a
// path (blank, control characters, over 128 characters) is refused, and so
// is a token with crit extensions this service does not understand.
func TestTokenSubjectAndCrit(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	sign := func(header map[string]any, claims jwt.MapClaims) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		for k, v := range header {
			tok.Header[k] = v
		}
		s, err := tok.SignedString([]byte(apptest.Secret))
		require.NoError(t, err)
		return s
	}
	exp := h.Clock.Now().Add(time.Hour).Unix()
	for name, sub := range map[string]string{"blank": " ", "NUL": "u\x001", "newline": "u\n1", "129 characters": strings.Repeat("u", 129)} {
		r := h.Do("GET", "/v1/wallet", apptest.Req{Token: sign(nil, jwt.MapClaims{"sub": sub, "role": "user", "exp": exp})})
		require.Equal(t, 401, r.Status, "%s: %s", name, r.Body)
	}
	h.Do("GET", "/v1/wallet", apptest.Req{Token: sign(nil, jwt.MapClaims{"sub": strings.Repeat("u", 128), "role": "user", "exp": exp})}).RequireStatus(t, 200)
	r := h.Do("GET", "/v1/wallet", apptest.Req{Token: sign(map[string]any{"crit": []string{"x-unknown"}, "x-unknown": true},
		jwt.MapClaims{"sub": "u1", "role": "user", "exp": exp})})
	require.Equal(t, "unauthenticated", r.RequireStatus(t, 401).Code())
}

// A replayed refusal names the request it answers: its request_id is the
// one of the retry, as its X-Request-ID header says, not the first one's.
func TestReplayedProblemNamesTheRetry(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	svc := h.Token("gifts", auth.RoleService)
	body := map[string]any{"user_id": "u1", "diamonds": 5, "reference": "g"}
	first := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "k", Body: body, Headers: map[string]string{"X-Request-ID": "first"}})
	require.Equal(t, "insufficient_diamonds", first.RequireStatus(t, 409).Code())
	require.Equal(t, "first", first.JSON()["request_id"])
	retry := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "k", Body: body, Headers: map[string]string{"X-Request-ID": "retry"}})
	require.Equal(t, "true", retry.RequireStatus(t, 409).Header.Get("Idempotent-Replayed"))
	require.Equal(t, "retry", retry.Header.Get("X-Request-ID"))
	require.Equal(t, "retry", retry.JSON()["request_id"])
}

// Of concurrent first openings of a user's credit line, exactly one is
// audited as opening it; the others change the line it opened.
func TestCreditLineFirstOpeningsAudited(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	lead := h.Token("lead", auth.RoleSupportLead)
	for round := range 5 {
		user := fmt.Sprintf("cl%d", round)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.Do("PUT", "/v1/admin/users/"+user+"/credit-line", apptest.Req{Token: lead,
					Body: map[string]any{"limit_fen": 1000 * (i + 1), "status": "active"}}).RequireStatus(t, 200)
			}()
		}
		wg.Wait()
	}
	var opened, changed int
	require.NoError(t, h.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE before IS NULL), count(*) FILTER (WHERE before IS NOT NULL)
		FROM audit_log WHERE action = 'credit_line.set'`).Scan(&opened, &changed))
	require.Equal(t, []int{5, 15}, []int{opened, changed})
}
