package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// credit puts diamonds in a wallet through a paid sandbox recharge.
func credit(t *testing.T, h *apptest.Harness, user string, diamonds int64, ref string) {
	t.Helper()
	o := h.Recharge(h.Token(user, auth.RoleUser), map[string]any{"channel": "sandbox", "amount_fen": diamonds * 10}, "credit-"+ref)
	h.Pay(o["id"].(string), diamonds*10, "T-"+ref, "e-"+ref)
}

func TestWalletAndEntries(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	user := h.Token("u1", auth.RoleUser)

	h.Do("GET", "/v1/wallet", apptest.Req{}).RequireStatus(t, 401)
	h.Do("GET", "/v1/wallet", apptest.Req{Token: "garbage"}).RequireStatus(t, 401)
	// the scheme is case-insensitive; only Bearer is accepted
	for scheme, status := range map[string]int{"bearer": 200, "BEARER": 200, "Basic": 401, "Bearer  ": 200, "": 401} {
		header := strings.TrimSpace(scheme + " " + user)
		if scheme == "" {
			header = user
		}
		h.Do("GET", "/v1/wallet", apptest.Req{Headers: map[string]string{"Authorization": header}}).RequireStatus(t, status)
	}
	r := h.Do("GET", "/v1/wallet", apptest.Req{Token: user}).RequireStatus(t, 200)
	require.JSONEq(t, `{"user_id":"u1","available":0,"held":0,"debt":0}`, string(r.Body))
	r = h.Do("DELETE", "/v1/wallet", apptest.Req{Token: user}).RequireStatus(t, 405)
	require.Equal(t, "method_not_allowed", r.Code())
	require.Equal(t, "GET", r.Header.Get("Allow"), "only what is served")
	r = h.Do("OPTIONS", "/v1/wallet", apptest.Req{Token: user}).RequireStatus(t, 405)
	require.Equal(t, "GET", r.Header.Get("Allow"))

	for i := range 5 {
		credit(t, h, "u1", int64(10*(i+1)), fmt.Sprintf("o%d", i))
	}
	credit(t, h, "u2", 999, "other")
	r = h.Do("GET", "/v1/wallet", apptest.Req{Token: user}).RequireStatus(t, 200)
	require.JSONEq(t, `{"user_id":"u1","available":150,"held":0,"debt":0}`, string(r.Body))

	// newest first, two per page, cursor to the end
	var amounts []float64
	path := "/v1/wallet/entries?limit=2"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		page := h.Do("GET", path, apptest.Req{Token: user}).RequireStatus(t, 200).JSON()
		for _, it := range page["items"].([]any) {
			e := it.(map[string]any)
			require.Equal(t, "available", e["account"])
			amounts = append(amounts, e["amount"].(float64))
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		path = "/v1/wallet/entries?limit=2&cursor=" + next
	}
	require.Equal(t, []float64{50, 40, 30, 20, 10}, amounts)

	h.Do("GET", "/v1/wallet/entries?cursor=bogus", apptest.Req{Token: user}).RequireStatus(t, 400)
	h.Do("GET", "/v1/wallet/entries?limit=0", apptest.Req{Token: user}).RequireStatus(t, 400)
	h.Do("GET", "/v1/wallet/entries?limit=101", apptest.Req{Token: user}).RequireStatus(t, 400)
}

func TestRolesAndOtherUsers(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	credit(t, h, "u2", 70, "x")
	user := h.Token("u1", auth.RoleUser)
	support := h.Token("agent", auth.RoleSupport)
	lead := h.Token("lead", auth.RoleSupportLead)
	service := h.Token("gifts", auth.RoleService)

	// a user has no way to name another user's wallet
	r := h.Do("GET", "/v1/admin/users/u2/wallet", apptest.Req{Token: user}).RequireStatus(t, 403)
	require.Equal(t, "forbidden", r.Code())
	h.Do("GET", "/v1/admin/users/u2/entries", apptest.Req{Token: user}).RequireStatus(t, 403)
	h.Do("GET", "/v1/wallet", apptest.Req{Token: support}).RequireStatus(t, 403)
	h.Do("GET", "/v1/wallet", apptest.Req{Token: service}).RequireStatus(t, 403)
	h.Do("POST", "/v1/spends", apptest.Req{Token: user, Key: "k", Body: map[string]any{"user_id": "u2", "diamonds": 1, "reference": "g"}}).RequireStatus(t, 403)

	for _, tok := range []string{support, lead} {
		r := h.Do("GET", "/v1/admin/users/u2/wallet", apptest.Req{Token: tok}).RequireStatus(t, 200)
		require.JSONEq(t, `{"user_id":"u2","available":70,"held":0,"debt":0}`, string(r.Body))
		r = h.Do("GET", "/v1/admin/users/u2/entries", apptest.Req{Token: tok}).RequireStatus(t, 200)
		require.Len(t, r.JSON()["items"], 1)
		// the same list under the wallet's path, as the user's own is
		again := h.Do("GET", "/v1/admin/users/u2/wallet/entries", apptest.Req{Token: tok}).RequireStatus(t, 200)
		require.JSONEq(t, string(r.Body), string(again.Body))
	}
	h.Do("GET", "/v1/admin/users/u2/wallet/entries", apptest.Req{Token: user}).RequireStatus(t, 403)
	// an expired token
	h.Clock.Advance(25 * 60 * 60 * 1e9)
	h.Do("GET", "/v1/wallet", apptest.Req{Token: user}).RequireStatus(t, 401)
}

func TestSpends(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	svc := h.Token("gifts", auth.RoleService)
	credit(t, h, "u1", 100, "a")
	body := map[string]any{"user_id": "u1", "diamonds": 30, "reference": "gift-1", "description": "a rose"}

	r := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Body: body}).RequireStatus(t, 400)
	require.Equal(t, "idempotency_key_required", r.Code())
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: strings.Repeat("k", 256), Body: body}).RequireStatus(t, 400)
	require.Equal(t, "idempotency_key_invalid", r.Code())

	first := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "s1", Body: body}).RequireStatus(t, 201)
	require.Empty(t, first.Header.Get("Idempotent-Replayed"))
	require.EqualValues(t, 70, first.JSON()["available_after"])

	again := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "s1", Body: body}).RequireStatus(t, 201)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first.Body), string(again.Body))

	other := map[string]any{"user_id": "u1", "diamonds": 31, "reference": "gift-1"}
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "s1", Body: other}).RequireStatus(t, 422)
	require.Equal(t, "idempotency_key_reused", r.Code())

	big := map[string]any{"user_id": "u1", "diamonds": 71, "reference": "gift-2"}
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "s2", Body: big}).RequireStatus(t, 409)
	require.Equal(t, "insufficient_diamonds", r.Code())
	// the refusal is stored: the same request replays it even once it could succeed
	credit(t, h, "u1", 100, "b")
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "s2", Body: big}).RequireStatus(t, 409)
	require.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))

	r = h.Do("GET", "/v1/admin/users/u1/wallet", apptest.Req{Token: h.Token("a", auth.RoleSupport)}).RequireStatus(t, 200)
	require.EqualValues(t, 170, r.JSON()["available"])

	for name, bad := range map[string]string{
		"negative":       `{"user_id":"u1","diamonds":-1,"reference":"g"}`,
		"zero":           `{"user_id":"u1","diamonds":0,"reference":"g"}`,
		"float":          `{"user_id":"u1","diamonds":1.5,"reference":"g"}`,
		"string amount":  `{"user_id":"u1","diamonds":"5","reference":"g"}`,
		"missing ref":    `{"user_id":"u1","diamonds":5}`,
		"unknown field":  `{"user_id":"u1","diamonds":5,"reference":"g","extra":1}`,
		"case smuggling": `{"user_id":"u1","diamonds":5,"reference":"g","DIAMONDS":-5}`,
		"not json":       `{"user_id":`,
		"empty body":     ``,
		"array":          `[]`,
	} {
		t.Run(name, func(t *testing.T) {
			r := h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "bad-" + name, Body: bad})
			require.Equal(t, 400, r.Status, "body: %s", r.Body)
		})
	}
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "huge",
		Body: `{"user_id":"u1","diamonds":5,"reference":"` + strings.Repeat("x", 70000) + `"}`})
	require.Equal(t, 413, r.Status)
	require.Equal(t, "payload_too_large", r.Code())
	// 64 KiB is the limit: a body of exactly 65 536 bytes is read (and then
	// judged on its content), one byte more is not
	sized := func(n int) string {
		head, tail := `{"user_id":"u1","diamonds":5,"reference":"g","description":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "at-limit", Body: sized(64 << 10)})
	require.Equal(t, "validation_failed", r.RequireStatus(t, 400).Code(), "the description is too long, the body is not")
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "over-limit", Body: sized(64<<10 + 1)})
	require.Equal(t, "payload_too_large", r.RequireStatus(t, 413).Code())
	r = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "plain", Body: `{"user_id":"u1","diamonds":5,"reference":"g"}`,
		Headers: map[string]string{"Content-Type": "text/plain"}})
	require.Equal(t, "unsupported_media_type", r.RequireStatus(t, 415).Code())
	h.RequireClean()
}

// Concurrent spends with one key: exactly one takes effect.
func TestConcurrentSpendSameKey(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	svc := h.Token("gifts", auth.RoleService)
	credit(t, h, "u1", 1000, "a")
	body := map[string]any{"user_id": "u1", "diamonds": 10, "reference": "gift"}
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = h.Do("POST", "/v1/spends", apptest.Req{Token: svc, Key: "same", Body: body}).Status
		}()
	}
	wg.Wait()
	for _, s := range statuses {
		require.Contains(t, []int{201, 409}, s)
	}
	r := h.Do("GET", "/v1/admin/users/u1/wallet", apptest.Req{Token: h.Token("a", auth.RoleSupport)}).RequireStatus(t, 200)
	require.EqualValues(t, 990, r.JSON()["available"])
	h.RequireClean()
}

func TestOpsEndpoints(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	h.Do("GET", "/healthz", apptest.Req{}).RequireStatus(t, 200)
	r := h.Do("GET", "/readyz", apptest.Req{}).RequireStatus(t, 200)
	require.Equal(t, "ready", r.JSON()["status"])

	h.Do("GET", "/v1/wallet", apptest.Req{Token: h.Token("u1", auth.RoleUser)}).RequireStatus(t, 200)
	r = h.Do("GET", "/metrics", apptest.Req{}).RequireStatus(t, 200)
	body := string(r.Body)
	require.Contains(t, body, `diamondd_http_requests_total{code="200",host=`)
	require.Contains(t, body, `url="/v1/wallet"`)
	require.Contains(t, body, "diamondd_db_pool_max_conns")

	// request ids: echoed when given, generated otherwise, and in problems
	r = h.Do("GET", "/v1/wallet", apptest.Req{Headers: map[string]string{"X-Request-ID": "req-42"}}).RequireStatus(t, 401)
	require.Equal(t, "req-42", r.Header.Get("X-Request-ID"))
	require.Equal(t, "req-42", r.JSON()["request_id"])
	r = h.Do("GET", "/nowhere", apptest.Req{}).RequireStatus(t, 404)
	require.NotEmpty(t, r.Header.Get("X-Request-ID"))
	require.Equal(t, "not_found", r.Code())
	h.Do("DELETE", "/v1/wallet", apptest.Req{Token: h.Token("u1", auth.RoleUser)})
}

func BenchmarkSpendHTTP(b *testing.B) {
	h := apptest.New(b)
	svc := h.Token("gifts", auth.RoleService)
	ctx := context.Background()
	require.NoError(b, postgres.WithTx(ctx, h.Pool, func(tx pgx.Tx) error {
		for u := range 100 {
			if _, err := h.App.Ledger.Credit(ctx, tx, fmt.Sprintf("u%d", u), "sandbox", 1e9, fmt.Sprintf("recharge:%d", u), ""); err != nil {
				return err
			}
		}
		return nil
	}))
	i := 0
	for b.Loop() {
		i++
		r := h.Do(http.MethodPost, "/v1/spends", apptest.Req{Token: svc, Key: fmt.Sprintf("k%d", i),
			Body: map[string]any{"user_id": fmt.Sprintf("u%d", i%100), "diamonds": 1, "reference": "bench"}})
		if r.Status != 201 {
			b.Fatalf("status %d: %s", r.Status, r.Body)
		}
	}
}
