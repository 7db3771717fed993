package httpapi_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
)

// Regressions (found in review): the support lists paged by offset, so the
// review queue skipped refunds as agents decided them, and the newest-first
// lists showed a row again when one was added between two page reads. They
// page by the sort key of the last row now; the harness clock stands still
// unless advanced, so rows made together tie on their time keys.

// follow reads a list page by page, calling between (when set) after each
// page but the last, and returns the ids in the order shown.
func follow(t *testing.T, h *apptest.Harness, role auth.Role, path string, limit int, between func(page []string)) []string {
	t.Helper()
	var shown []string
	cursor := ""
	for range 50 {
		u := fmt.Sprintf("%s?limit=%d", path, limit)
		if strings.Contains(path, "?") {
			u = fmt.Sprintf("%s&limit=%d", path, limit)
		}
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		page := h.Do("GET", u, apptest.Req{Token: h.Token("reader", role)}).RequireStatus(t, 200).JSON()
		var ids []string
		for _, it := range page["items"].([]any) {
			ids = append(ids, it.(map[string]any)["id"].(string))
		}
		require.LessOrEqual(t, len(ids), limit)
		shown = append(shown, ids...)
		next, _ := page["next_cursor"].(string)
		if next == "" {
			return shown
		}
		if between != nil {
			between(ids)
		}
		cursor = next
	}
	t.Fatalf("%s: no last page after 50 pages", path)
	return nil
}

// dbOrder lists ids as the database orders them, for what a list must show.
func dbOrder(t *testing.T, h *apptest.Harness, q string, args ...any) []string {
	t.Helper()
	rows, err := h.Pool.Query(t.Context(), q, args...)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(t, rows.Err())
	return out
}

// paidOrder makes and pays a sandbox order for user.
func paidOrder(t *testing.T, h *apptest.Harness, user string, amountFen int64, birthdate ...string) string {
	t.Helper()
	o := h.Recharge(h.Token(user, auth.RoleUser, birthdate...), map[string]any{"channel": "sandbox", "amount_fen": amountFen}, "o-"+user)
	id := o["id"].(string)
	h.Pay(id, amountFen, "T-"+user, "e-"+user)
	return id
}

// requestRefund asks for a refund of a whole order, which goes to review.
func requestRefund(t *testing.T, h *apptest.Harness, user, order, reason string, birthdate ...string) string {
	t.Helper()
	r := h.Do("POST", "/v1/refunds", apptest.Req{Token: h.Token(user, auth.RoleUser, birthdate...), Key: "r-" + user,
		Body: map[string]any{"order_id": order, "reason_code": reason}}).RequireStatus(t, 201).JSON()
	require.Equal(t, "pending_review", r["status"])
	return r["id"].(string)
}

func requireOnce(t *testing.T, want, shown []string) {
	t.Helper()
	count := map[string]int{}
	for _, id := range shown {
		count[id]++
		require.Equal(t, 1, count[id], "%s shown on two pages", id)
	}
	for _, id := range want {
		require.Equal(t, 1, count[id], "%s never shown; shown %v of %v", id, shown, want)
	}
}

// Agents decide each page of the review queue before reading the next: every
// refund still shows, in queue order (a minor's first, then the oldest
// deadline, then id), with page ends inside groups of equal deadlines.
func TestReviewQueueDrainedWhilePagingShowsEveryRefund(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	kid := h.Clock.Now().AddDate(-10, 0, 0).Format(time.DateOnly)
	users := []string{"d0", "d1", "d2", "d3", "d4"}
	orders := map[string]string{}
	for _, u := range users {
		orders[u] = paidOrder(t, h, u, 600)
	}
	minorOrder := paidOrder(t, h, "kid", 600, kid)
	h.Clock.Advance(25 * time.Hour) // past the fast-refund window: every refund goes to review
	var refunds []string
	// deadlines: d0 = d1, then d2 = d3, then d4, then the minor's, last of all
	for i, u := range users {
		if i == 2 || i == 4 {
			h.Clock.Advance(time.Minute)
		}
		refunds = append(refunds, requestRefund(t, h, u, orders[u], "other"))
	}
	h.Clock.Advance(time.Minute)
	minor := requestRefund(t, h, "kid", minorOrder, "minor_recharge", kid)
	sort.Strings(refunds[0:2])
	sort.Strings(refunds[2:4])
	want := append([]string{minor}, refunds...)
	require.Equal(t, want, dbOrder(t, h, `SELECT id::text FROM refunds WHERE status = 'pending_review'
		ORDER BY priority DESC, sla_deadline, id`), "the queue order the test expects")

	agent := h.Token("agent", auth.RoleSupport)
	shown := follow(t, h, auth.RoleSupport, "/v1/admin/refunds?status=pending_review", 2, func(page []string) {
		for _, id := range page {
			h.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: agent,
				Body: map[string]any{"note": "no", "reason_code": "other"}}).RequireStatus(t, 200)
		}
	})
	require.Equal(t, want, shown, "following next_cursor while deciding each page")
}

// A refund requested between two page reads of the newest-first listings
// (all refunds, or one status) repeats nothing, and refunds made at the
// same instant are each shown once.
func TestAdminRefundsInsertBetweenPagesRepeatsNothing(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	orders := map[string]string{}
	for i := range 10 {
		u := fmt.Sprintf("n%d", i)
		orders[u] = paidOrder(t, h, u, 600)
	}
	h.Clock.Advance(25 * time.Hour)
	made := 0
	ask := func() string {
		u := fmt.Sprintf("n%d", made)
		made++
		return requestRefund(t, h, u, orders[u], "other")
	}
	for i := range 5 {
		if i == 3 {
			h.Clock.Advance(time.Second) // n0..n2 tie on created_at, as do n3, n4 and the later ones
		}
		ask()
	}
	want := dbOrder(t, h, `SELECT id::text FROM refunds ORDER BY created_at DESC, id DESC`)
	shown := follow(t, h, auth.RoleSupport, "/v1/admin/refunds", 2, func([]string) { ask() })
	requireOnce(t, want, shown)

	agent := h.Token("agent", auth.RoleSupport)
	reject := func(id string) {
		h.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: agent,
			Body: map[string]any{"note": "no", "reason_code": "other"}}).RequireStatus(t, 200)
	}
	for _, id := range dbOrder(t, h, `SELECT id::text FROM refunds`) {
		reject(id)
	}
	want = dbOrder(t, h, `SELECT id::text FROM refunds WHERE status = 'rejected' ORDER BY created_at DESC, id DESC`)
	require.Len(t, want, made)
	shown = follow(t, h, auth.RoleSupport, "/v1/admin/refunds?status=rejected", 3, func([]string) { reject(ask()) })
	requireOnce(t, want, shown)
}

// Support actions recorded between two page reads of the audit log repeat
// nothing; entries recorded at the same instant are each shown once.
func TestAuditInsertBetweenPagesRepeatsNothing(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	lead := h.Token("lead", auth.RoleSupportLead)
	set := func(user string) {
		h.Do("PUT", "/v1/admin/users/"+user+"/credit-line", apptest.Req{Token: lead,
			Body: map[string]any{"limit_fen": 10000, "status": "active"}}).RequireStatus(t, 200)
	}
	for i := range 7 {
		if i == 4 {
			h.Clock.Advance(time.Second) // a0..a3 tie on at, as do a4..a6
		}
		set(fmt.Sprintf("a%d", i))
	}
	want := dbOrder(t, h, `SELECT id::text FROM audit_log ORDER BY at DESC, id DESC`)
	require.Len(t, want, 7)
	n := 0
	shown := follow(t, h, auth.RoleSupportLead, "/v1/admin/audit", 2, func([]string) {
		n++
		set(fmt.Sprintf("new%d", n)) // another agent acts meanwhile
	})
	requireOnce(t, want, shown)
	require.Equal(t, want, shown[:len(want)], "newest first, id breaking ties")
}

// An order flagged between two page reads of the risk flags repeats
// nothing; orders paid at the same instant are each shown once.
func TestRiskFlagsInsertBetweenPagesRepeatsNothing(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	for i := range 5 {
		if i == 3 {
			h.Clock.Advance(time.Second)
		}
		paidOrder(t, h, fmt.Sprintf("f%d", i), 100000) // a first recharge of ¥1000 is unusual
	}
	want := dbOrder(t, h, `SELECT id::text FROM orders WHERE risk_score > 0 ORDER BY paid_at DESC, id DESC`)
	require.Len(t, want, 5)
	n := 0
	shown := follow(t, h, auth.RoleSupport, "/v1/admin/risk/flags", 2, func([]string) {
		n++
		paidOrder(t, h, fmt.Sprintf("new%d", n), 100000)
	})
	requireOnce(t, want, shown)
	require.Equal(t, want, shown, "newest first, id breaking ties; later ones join the head")
}

// A cursor this API could not have returned for the list, including the
// offset cursors it used to return, is 400 invalid_cursor.
func TestSupportListCursorsRefuseForeignOnes(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	lead := h.Token("lead", auth.RoleSupportLead)
	for i := range 2 {
		paidOrder(t, h, fmt.Sprintf("c%d", i), 100000)
		h.Do("PUT", fmt.Sprintf("/v1/admin/users/c%d/credit-line", i), apptest.Req{Token: lead,
			Body: map[string]any{"limit_fen": 10000, "status": "active"}}).RequireStatus(t, 200)
	}
	h.Clock.Advance(25 * time.Hour)
	for i := range 2 {
		u := fmt.Sprintf("c%d", i)
		requestRefund(t, h, u, dbOrder(t, h, `SELECT id::text FROM orders WHERE user_id = $1`, u)[0], "other")
	}
	lead = h.Token("lead", auth.RoleSupportLead)
	cursor := func(path string) string {
		c, _ := h.Do("GET", path+"limit=1", apptest.Req{Token: lead}).RequireStatus(t, 200).JSON()["next_cursor"].(string)
		require.NotEmpty(t, c, path)
		return c
	}
	lists := map[string]string{
		"/v1/admin/refunds?status=pending_review&": cursor("/v1/admin/refunds?status=pending_review&"),
		"/v1/admin/refunds?":                       cursor("/v1/admin/refunds?"),
		"/v1/admin/audit?":                         cursor("/v1/admin/audit?"),
		"/v1/admin/risk/flags?":                    cursor("/v1/admin/risk/flags?"),
	}
	b64 := base64.RawURLEncoding.EncodeToString
	id := "0190a0a0-0000-7000-8000-000000000000"
	bad := []string{"%21%21", b64([]byte("o:2")), b64([]byte("a:1:x")), b64([]byte("q:99999999999::" + id)),
		b64([]byte("q:0:1e9:" + id)), b64([]byte("a:999999999999999999:" + id)), b64([]byte("a:-99999999999999999:" + id))}
	for path, own := range lists {
		h.Do("GET", path+"cursor="+url.QueryEscape(own), apptest.Req{Token: lead}).RequireStatus(t, 200)
		for other, foreign := range lists {
			if other == path {
				continue
			}
			r := h.Do("GET", path+"cursor="+url.QueryEscape(foreign), apptest.Req{Token: lead})
			require.Equal(t, "invalid_cursor", r.RequireStatus(t, 400).Code(), "%s with a cursor of %s", path, other)
		}
		for _, c := range bad {
			r := h.Do("GET", path+"cursor="+c, apptest.Req{Token: lead})
			require.Equal(t, "invalid_cursor", r.RequireStatus(t, 400).Code(), "%s with cursor %s", path, c)
		}
	}
}
