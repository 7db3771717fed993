package refund_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/sandbox"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
	"github.com/diamondd/diamondd/internal/refund"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// bank is a channel's side of refunds: each refund number is applied once,
// however often it is submitted, as real channels do.
type bank struct {
	*sandbox.Channel
	mu       sync.Mutex
	applied  map[string]int64 // refund id → amount refunded
	calls    map[string]int
	timeouts int    // the next submissions time out after applying
	settle   string // "": processing; "succeeded" or "failed" at once
	// The first submission of refund slow is applied, then its answer held
	// until gate is closed (started is closed when it waits): a slow
	// channel, or a process that dies between the call and its recording.
	slow          string
	started, gate chan struct{}
}

func newBank(t *testing.T, now func() time.Time) *bank {
	sb, err := sandbox.New(apptest.SandboxSecret, false, now)
	require.NoError(t, err)
	return &bank{Channel: sb, applied: map[string]int64{}, calls: map[string]int{}}
}

func (b *bank) Refund(_ context.Context, r channel.RefundRequest) (channel.RefundStatus, error) {
	b.mu.Lock()
	b.calls[r.RefundID]++
	if _, ok := b.applied[r.RefundID]; !ok {
		b.applied[r.RefundID] = r.AmountFen
	}
	if r.RefundID == b.slow && b.calls[r.RefundID] == 1 {
		b.mu.Unlock()
		close(b.started)
		<-b.gate
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	if b.timeouts > 0 {
		b.timeouts--
		return channel.RefundStatus{}, errors.New("context deadline exceeded")
	}
	return b.status(r.RefundID), nil
}

func (b *bank) QueryRefund(_ context.Context, _, id string) (channel.RefundStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.applied[id]; !ok {
		return channel.RefundStatus{State: channel.RefundNotFound}, nil
	}
	return b.status(id), nil
}

func (b *bank) status(id string) channel.RefundStatus {
	switch b.settle {
	case "succeeded":
		return channel.RefundStatus{State: channel.RefundSucceeded, ChannelRefundID: "B-" + id}
	case "failed":
		return channel.RefundStatus{State: channel.RefundFailed, Reason: "account closed"}
	}
	return channel.RefundStatus{State: channel.RefundProcessing, ChannelRefundID: "B-" + id}
}

type fixture struct {
	*apptest.Harness
	bank    *bank
	user    string
	agent   string
	agent2  string
	lead    string
	service string
}

func setup(t *testing.T, edit ...func(*config.Config)) *fixture {
	var h *apptest.Harness
	b := newBank(t, func() time.Time { return h.Clock.Now() }) // the harness's clock, once it exists
	edit = append([]func(*config.Config){func(c *config.Config) { c.RateLimitRefundPerMin = 0; c.RateLimitRechargePerMin = 0 }}, edit...)
	h = apptest.NewWith(t, map[string]channel.Channel{"sandbox": b}, edit...)
	return &fixture{Harness: h, bank: b, user: h.Token("u1", auth.RoleUser), agent: h.Token("agent1", auth.RoleSupport),
		agent2: h.Token("agent2", auth.RoleSupport), lead: h.Token("lead1", auth.RoleSupportLead), service: h.Token("gifts", auth.RoleService)}
}

// paidOrder recharges and pays an order of amount fen for u1.
func (f *fixture) paidOrder(t *testing.T, amount int64) string {
	t.Helper()
	id := f.Recharge(f.user, map[string]any{"channel": "sandbox", "amount_fen": amount}, uuid.NewString())["id"].(string)
	f.Pay(id, amount, "T-"+id, "e-"+id)
	return id
}

func (f *fixture) refund(t *testing.T, tok, key string, body map[string]any) *apptest.Response {
	t.Helper()
	return f.Do("POST", "/v1/refunds", apptest.Req{Token: tok, Key: key, Body: body})
}

func (f *fixture) admin(t *testing.T, id string) map[string]any {
	t.Helper()
	return f.Do("GET", "/v1/admin/refunds/"+id, apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()
}

func (f *fixture) orderStatus(t *testing.T, id string) string {
	t.Helper()
	return f.Do("GET", "/v1/recharges/"+id, apptest.Req{Token: f.user}).RequireStatus(t, 200).JSON()["status"].(string)
}

func (f *fixture) wallet(t *testing.T) [3]int64 {
	t.Helper()
	a, h, d := f.Wallet("u1")
	return [3]int64{a, h, d}
}

func TestFullAndPartialRefunds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	require.Equal(t, [3]int64{100, 0, 0}, f.wallet(t))

	// partial: 333 fen → 34 diamonds (rounded up), held at once, in review
	r := f.refund(t, f.user, "p1", map[string]any{"order_id": order, "amount_fen": 333, "reason_code": "other",
		"evidence": []map[string]any{{"kind": "text", "value": "wrong package"}}}).RequireStatus(t, 201).JSON()
	require.Equal(t, "pending_review", r["status"])
	require.EqualValues(t, 34, r["diamonds"])
	require.NotNil(t, r["sla_deadline"])
	require.Equal(t, false, r["overdue"])
	require.Equal(t, [3]int64{66, 34, 0}, f.wallet(t))
	p1 := r["id"].(string)

	// the user cannot spend held diamonds
	sp := f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "s", Body: map[string]any{"user_id": "u1", "diamonds": 67, "reference": "g"}})
	require.Equal(t, "insufficient_diamonds", sp.RequireStatus(t, 409).Code())

	// the queue shows it, with the order's flags
	q := f.Do("GET", "/v1/admin/refunds?status=pending_review", apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()
	require.Len(t, q["items"], 1)
	require.Equal(t, p1, q["items"].([]any)[0].(map[string]any)["id"])

	a := f.Do("POST", "/v1/admin/refunds/"+p1+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200).JSON()
	require.Equal(t, "processing", a["status"], "approved and submitted at once")
	require.Equal(t, 1, f.bank.calls[p1])
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "re-1", "type": "refund.succeeded", "refund_id": p1, "amount_fen": 333}).Status)
	require.Equal(t, "succeeded", f.admin(t, p1)["status"])
	require.Equal(t, [3]int64{66, 0, 0}, f.wallet(t))
	require.Equal(t, "partially_refunded", f.orderStatus(t, order))

	// the rest by default: 667 fen takes the 66 diamonds left
	r = f.refund(t, f.user, "p2", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 667, r["amount_fen"])
	require.EqualValues(t, 66, r["diamonds"])
	p2 := r["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+p2+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "re-2", "type": "refund.succeeded", "refund_id": p2}).Status)
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	require.Equal(t, "refunded", f.orderStatus(t, order))

	// nothing left
	r2 := f.refund(t, f.user, "p3", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 409)
	require.Equal(t, "refund_exceeds_order", r2.Code())
	require.EqualValues(t, 0, r2.JSON()["max_refundable_fen"])
	// an order that was never paid has nothing to refund in its state
	pending := f.Recharge(f.user, map[string]any{"channel": "sandbox", "amount_fen": 600}, "unpaid")["id"].(string)
	r2 = f.refund(t, f.user, "p4", map[string]any{"order_id": pending, "reason_code": "other"}).RequireStatus(t, 409)
	require.Equal(t, "invalid_state", r2.Code())

	// a stale refund event changes nothing
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "re-3", "type": "refund.failed", "refund_id": p2, "reason": "late"}).Status)
	require.Equal(t, "succeeded", f.admin(t, p2)["status"])

	got := f.Do("GET", "/v1/refunds/"+p2, apptest.Req{Token: f.user}).RequireStatus(t, 200).JSON()
	statuses := []string{}
	for _, e := range got["timeline"].([]any) {
		statuses = append(statuses, e.(map[string]any)["status"].(string))
	}
	require.Equal(t, []string{"pending_review", "approved", "processing", "succeeded"}, statuses)
	require.EqualValues(t, 1000, f.bank.applied[p1]+f.bank.applied[p2])
	f.RequireClean()
}

func TestHeldDiamondsReturn(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 600)
	body := map[string]any{"order_id": order, "amount_fen": 300, "reason_code": "accidental_recharge"}

	first := f.refund(t, f.user, "k1", body).RequireStatus(t, 201)
	replay := f.refund(t, f.user, "k1", body).RequireStatus(t, 201)
	require.Equal(t, "true", replay.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first.Body), string(replay.Body))
	require.Equal(t, [3]int64{30, 30, 0}, f.wallet(t))
	id := first.JSON()["id"].(string)

	// rejection returns them
	rej := f.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: f.agent, Body: map[string]any{"note": "no", "reason_code": "not_eligible"}}).RequireStatus(t, 200).JSON()
	require.Equal(t, "rejected", rej["status"])
	require.Equal(t, [3]int64{60, 0, 0}, f.wallet(t))
	require.Equal(t, "invalid_state", f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "x"}}).RequireStatus(t, 409).Code())

	// new evidence returns it to review (at most twice), holding again
	ev := map[string]any{"evidence": []map[string]any{{"kind": "url", "value": "https://example.com/receipt"}}}
	back := f.Do("POST", "/v1/refunds/"+id+"/evidence", apptest.Req{Token: f.user, Body: ev}).RequireStatus(t, 200).JSON()
	require.Equal(t, "pending_review", back["status"])
	require.EqualValues(t, 1, back["resubmissions"])
	require.Equal(t, [3]int64{30, 30, 0}, f.wallet(t))
	f.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: f.agent, Body: map[string]any{"note": "no", "reason_code": "x"}}).RequireStatus(t, 200)
	f.Do("POST", "/v1/refunds/"+id+"/evidence", apptest.Req{Token: f.user, Body: ev}).RequireStatus(t, 200)
	f.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: f.agent, Body: map[string]any{"note": "no", "reason_code": "x"}}).RequireStatus(t, 200)
	third := f.Do("POST", "/v1/refunds/"+id+"/evidence", apptest.Req{Token: f.user, Body: ev}).RequireStatus(t, 409)
	require.Equal(t, "invalid_state", third.Code())
	require.Equal(t, [3]int64{60, 0, 0}, f.wallet(t))

	// cancellation returns them
	c := f.refund(t, f.user, "k2", body).RequireStatus(t, 201).JSON()
	require.Equal(t, [3]int64{30, 30, 0}, f.wallet(t))
	f.Do("POST", "/v1/refunds/"+c["id"].(string)+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)
	require.Equal(t, [3]int64{60, 0, 0}, f.wallet(t))
	f.Do("POST", "/v1/refunds/"+c["id"].(string)+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 409)

	// channel failure returns them
	fl := f.refund(t, f.user, "k3", body).RequireStatus(t, 201).JSON()
	fid := fl["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+fid+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, [3]int64{30, 30, 0}, f.wallet(t))
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "rf", "type": "refund.failed", "refund_id": fid, "reason": "account closed"}).Status)
	got := f.admin(t, fid)
	require.Equal(t, "failed", got["status"])
	require.Contains(t, got["failure_reason"], "account closed")
	require.Equal(t, [3]int64{60, 0, 0}, f.wallet(t))
	require.Equal(t, "paid", f.orderStatus(t, order))
	f.RequireClean()
}

// 30 concurrent requests with distinct keys on one order.
func TestConcurrentRefundRequests(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := int64(0)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := f.refund(t, f.user, fmt.Sprintf("c%d", i), map[string]any{"order_id": order, "amount_fen": 70, "reason_code": "other"})
			switch r.Status {
			case 201:
				mu.Lock()
				accepted += 70
				mu.Unlock()
			case 409:
				require.Contains(t, []string{"refund_exceeds_order", "diamonds_already_spent"}, r.Code())
			default:
				t.Errorf("status %d: %s", r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 980, accepted, "14 of 70 fen fit in 1000")
	var sumAmount, sumDiamonds int64
	require.NoError(t, f.Pool.QueryRow(context.Background(), `SELECT sum(amount_fen), sum(diamonds) FROM refunds WHERE order_id = $1`, order).Scan(&sumAmount, &sumDiamonds))
	require.EqualValues(t, accepted, sumAmount)
	w := f.wallet(t)
	require.Equal(t, sumDiamonds, w[1], "held equals the accepted clawbacks")
	require.EqualValues(t, 100, w[0]+w[1])
	f.RequireClean()
}

func TestSpentDiamonds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "s1", Body: map[string]any{"user_id": "u1", "diamonds": 75, "reference": "g"}}).RequireStatus(t, 201)

	r := f.refund(t, f.user, "u", map[string]any{"order_id": order, "reason_code": "accidental_recharge"}).RequireStatus(t, 409)
	require.Equal(t, "diamonds_already_spent", r.Code())
	require.EqualValues(t, 250, r.JSON()["max_refundable_fen"], "25 diamonds left buy back 250 fen")
	require.Equal(t, [3]int64{25, 0, 0}, f.wallet(t), "nothing held")
	// the suggested amount is accepted
	ok := f.refund(t, f.user, "u2", map[string]any{"order_id": order, "amount_fen": 250, "reason_code": "accidental_recharge"}).RequireStatus(t, 201).JSON()
	f.Do("POST", "/v1/refunds/"+ok["id"].(string)+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)

	// an agent refunds it all with allow_debt: 25 held, 75 become debt
	body := map[string]any{"order_id": order, "user_id": "u1", "reason_code": "minor_recharge", "clawback": "allow_debt"}
	ag := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "a1", Body: body}).RequireStatus(t, 201).JSON()
	require.Equal(t, "pending_review", ag["status"])
	require.EqualValues(t, 25, ag["held"])
	id := ag["id"].(string)
	// four-eyes: not by the agent who opened it; at or above the threshold... this one is below
	require.Equal(t, "four_eyes_required", f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "x"}}).RequireStatus(t, 403).Code())
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "rd", "type": "refund.succeeded", "refund_id": id}).Status)
	require.Equal(t, [3]int64{0, 0, 75}, f.wallet(t))

	// spending is refused while in debt; the next recharge pays the debt first
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "s2", Body: map[string]any{"user_id": "u1", "diamonds": 1, "reference": "g"}}).RequireStatus(t, 409)
	f.paidOrder(t, 600)
	require.Equal(t, [3]int64{0, 0, 15}, f.wallet(t))
	second := f.paidOrder(t, 600)
	require.Equal(t, [3]int64{45, 0, 0}, f.wallet(t))

	// write_off: the platform absorbs what was spent
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "s3", Body: map[string]any{"user_id": "u1", "diamonds": 40, "reference": "g"}}).RequireStatus(t, 201)
	wo := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "a2",
		Body: map[string]any{"order_id": second, "user_id": "u1", "reason_code": "other", "clawback": "write_off"}}).RequireStatus(t, 201).JSON()
	f.Do("POST", "/v1/admin/refunds/"+wo["id"].(string)+"/approve", apptest.Req{Token: f.lead, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "rw", "type": "refund.succeeded", "refund_id": wo["id"]}).Status)
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	var writeoff int64
	require.NoError(t, f.Pool.QueryRow(context.Background(), `SELECT -sum(amount) FROM postings WHERE account = 'writeoff'`).Scan(&writeoff))
	require.EqualValues(t, 55, writeoff)

	audit := f.Do("GET", "/v1/admin/audit", apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()["items"].([]any)
	actions := []string{}
	for _, a := range audit {
		actions = append(actions, a.(map[string]any)["action"].(string))
	}
	require.Equal(t, []string{"refund.approve", "refund.create", "refund.approve", "refund.create"}, actions)
	f.RequireClean()
}

func TestReviewRules(t *testing.T) {
	t.Parallel()
	f := setup(t)
	big := f.paidOrder(t, 200000)
	r := f.refund(t, f.user, "b", map[string]any{"order_id": big, "amount_fen": 100000, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id := r["id"].(string)
	require.Equal(t, "lead_approval_required", f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "x"}}).RequireStatus(t, 403).Code())
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.user, Body: map[string]any{"note": "x"}}).RequireStatus(t, 403)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.service, Body: map[string]any{"note": "x"}}).RequireStatus(t, 403)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.lead, Body: map[string]any{"note": "big, ok"}}).RequireStatus(t, 200)

	// another user never sees it
	other := f.Token("u2", auth.RoleUser)
	f.Do("GET", "/v1/refunds/"+id, apptest.Req{Token: other}).RequireStatus(t, 404)
	f.Do("POST", "/v1/refunds/"+id+"/cancel", apptest.Req{Token: other}).RequireStatus(t, 404)
	f.Do("POST", "/v1/refunds/"+id+"/evidence", apptest.Req{Token: other, Body: map[string]any{"evidence": []map[string]any{{"kind": "text", "value": "x"}}}}).RequireStatus(t, 404)
	require.Empty(t, f.Do("GET", "/v1/refunds", apptest.Req{Token: other}).RequireStatus(t, 200).JSON()["items"])
	require.Equal(t, "not_found", f.refund(t, other, "o", map[string]any{"order_id": big, "reason_code": "other"}).RequireStatus(t, 404).Code())
	require.Len(t, f.Do("GET", "/v1/refunds", apptest.Req{Token: f.user}).RequireStatus(t, 200).JSON()["items"], 1)

	// the SLA: overdue after 72 h, minors' refunds first
	small := f.paidOrder(t, 600)
	f.refund(t, f.user, "s", map[string]any{"order_id": small, "amount_fen": 100, "reason_code": "other"}).RequireStatus(t, 201)
	kid := f.Token("kid", auth.RoleUser, f.Clock.Now().AddDate(-10, 0, 0).Format(time.DateOnly))
	ko := f.Recharge(kid, map[string]any{"channel": "sandbox", "package_id": "p60"}, "kid")["id"].(string)
	f.Pay(ko, 600, "T-kid", "e-kid")
	f.Clock.Advance(73 * time.Hour)
	f.agent = f.Token("agent1", auth.RoleSupport)
	minorRefund := f.refund(t, f.Token("kid", auth.RoleUser, f.Clock.Now().AddDate(-10, 0, 0).Format(time.DateOnly)), "kid",
		map[string]any{"order_id": ko, "reason_code": "minor_recharge"}).RequireStatus(t, 201).JSON()
	q := f.Do("GET", "/v1/admin/refunds?status=pending_review", apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()["items"].([]any)
	require.Len(t, q, 2)
	require.Equal(t, minorRefund["id"], q[0].(map[string]any)["id"], "minor first")
	require.Equal(t, false, q[0].(map[string]any)["overdue"])
	require.Equal(t, true, q[1].(map[string]any)["overdue"])
	risk := q[0].(map[string]any)["order_risk"].(map[string]any)
	require.Equal(t, "minor_account", risk["flags"].([]any)[0].(map[string]any)["code"])
}

// A refund approved but never submitted (the process died after commit) is
// submitted by the worker exactly once; a timeout followed by success does
// not refund twice.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 600)
	r := f.refund(t, f.user, "k", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id := uuid.MustParse(r["id"].(string))
	// approve in a transaction and stop: no submission
	require.NoError(t, postgres.WithTx(context.Background(), f.Pool, func(tx pgx.Tx) error {
		_, err := f.App.Refunds.Approve(context.Background(), tx, refund.Actor{ID: "agent1", Role: "support"}, id, "ok")
		return err
	}))
	require.Zero(t, f.bank.calls[id.String()])
	f.RunWorkers()
	f.RunWorkers()
	require.Equal(t, 1, f.bank.calls[id.String()])
	require.Equal(t, "processing", f.admin(t, id.String())["status"])

	// timeout, then success: one refund at the channel
	f.bank.mu.Lock()
	f.bank.timeouts = 1
	f.bank.settle = "succeeded"
	f.bank.mu.Unlock()
	order2 := f.paidOrder(t, 700) // not 600 again: that would be flagged a duplicate and auto-approved
	r2 := f.refund(t, f.user, "k2", map[string]any{"order_id": order2, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id2 := r2["id"].(string)
	a := f.Do("POST", "/v1/admin/refunds/"+id2+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200).JSON()
	require.Equal(t, "approved", a["status"], "the submission timed out: outcome unknown, still approved")
	f.RunWorkers()
	require.Equal(t, "approved", f.admin(t, id2)["status"], "backing off before resubmitting")
	f.Clock.Advance(time.Minute)
	f.RunWorkers()
	require.Equal(t, "succeeded", f.admin(t, id2)["status"])
	require.Equal(t, 2, f.bank.calls[id2])
	require.EqualValues(t, 700, f.bank.applied[id2])
	avail, held, _ := f.Wallet("u1")
	require.EqualValues(t, 0, avail)
	require.EqualValues(t, 0, held, "the first refund settled too when polled")
	require.Equal(t, "succeeded", f.admin(t, id.String())["status"])
	require.Equal(t, 1, f.bank.calls[id.String()], "polled, never resubmitted")
	f.RequireClean()
}

// The credit line is restored synchronously by a refund.
func TestMonthlyPayRefund(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: f.lead, Body: map[string]any{"limit_fen": 10000, "status": "active"}}).RequireStatus(t, 200)
	o := f.Recharge(f.user, map[string]any{"channel": "monthly_pay", "package_id": "p60"}, "m")
	r := f.refund(t, f.user, "r", map[string]any{"order_id": o["id"], "reason_code": "other"}).RequireStatus(t, 201).JSON()
	done := f.Do("POST", "/v1/admin/refunds/"+r["id"].(string)+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200).JSON()
	require.Equal(t, "succeeded", done["status"])
	line := f.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: f.lead, Body: map[string]any{"limit_fen": 10000, "status": "active"}}).RequireStatus(t, 200).JSON()
	require.EqualValues(t, 0, line["used_fen"])
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	f.RequireClean()
}

// Two identical recharges a minute apart: the second is flagged a duplicate,
// and its refund is approved at once and reaches the channel.
func TestFastRefund(t *testing.T) {
	t.Parallel()
	f := setup(t)
	first := f.paidOrder(t, 3000)
	f.Clock.Advance(time.Minute)
	second := f.paidOrder(t, 3000)

	flags := f.Do("GET", "/v1/admin/risk/flags?reason=duplicate_recharge", apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()["items"].([]any)
	require.Len(t, flags, 1)
	flagged := flags[0].(map[string]any)
	require.Equal(t, second, flagged["id"])
	rf := flagged["risk"].(map[string]any)["flags"].([]any)[0].(map[string]any)
	require.Equal(t, "duplicate_recharge", rf["code"])
	require.Equal(t, first, rf["evidence"].(map[string]any)["order_id"])
	require.Empty(t, f.Do("GET", "/v1/admin/risk/flags?reason=burst", apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()["items"])

	// the unflagged first order goes to review
	r := f.refund(t, f.user, "r1", map[string]any{"order_id": first, "reason_code": "accidental_recharge"}).RequireStatus(t, 201).JSON()
	require.Equal(t, "pending_review", r["status"])
	f.Do("POST", "/v1/refunds/"+r["id"].(string)+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)

	r = f.refund(t, f.user, "r2", map[string]any{"order_id": second, "reason_code": "accidental_recharge"}).RequireStatus(t, 201).JSON()
	require.Equal(t, "approved", r["status"], "the response is the state at acceptance")
	require.Equal(t, true, r["auto_approved"])
	id := r["id"].(string)
	require.Equal(t, 1, f.bank.calls[id], "submitted to the channel at once")
	got := f.Do("GET", "/v1/refunds/"+id, apptest.Req{Token: f.user}).RequireStatus(t, 200).JSON()
	require.Equal(t, "processing", got["status"])
	tl := got["timeline"].([]any)
	require.Contains(t, tl[1].(map[string]any)["note"], "auto-approved: the order was flagged as an accidental recharge (duplicate_recharge)")
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "fast", "type": "refund.succeeded", "refund_id": id}).Status)
	require.Equal(t, [3]int64{300, 0, 0}, f.wallet(t))

	// flagged, but the diamonds are spent: refused
	third := f.paidOrder(t, 3000)
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "sp", Body: map[string]any{"user_id": "u1", "diamonds": 500, "reference": "g"}}).RequireStatus(t, 201)
	sp := f.refund(t, f.user, "r3", map[string]any{"order_id": third, "reason_code": "accidental_recharge"}).RequireStatus(t, 409)
	require.Equal(t, "diamonds_already_spent", sp.Code())

	// flagged, but past the window: review
	f.Clock.Advance(25 * time.Hour)
	f.user = f.Token("u1", auth.RoleUser)
	late := f.refund(t, f.user, "r4", map[string]any{"order_id": third, "amount_fen": 1000, "reason_code": "accidental_recharge"}).RequireStatus(t, 201).JSON()
	require.Equal(t, "pending_review", late["status"])
	f.RequireClean()
}

// Two refunds of one order confirmed at the same moment: each settles once,
// the order ends refunded, and together they take exactly what it credited.
func TestConcurrentSettlements(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for round := range 5 {
		f.Clock.Advance(11 * time.Minute) // not a duplicate of the round before: no fast path
		order := f.paidOrder(t, 1000)
		var ids []string
		for i, amount := range []int64{300, 700} {
			r := f.refund(t, f.user, fmt.Sprintf("cs-%d-%d", round, i), map[string]any{"order_id": order, "amount_fen": amount, "reason_code": "other"}).RequireStatus(t, 201).JSON()
			ids = append(ids, r["id"].(string))
			f.Do("POST", "/v1/admin/refunds/"+ids[i]+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
		}
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := f.Webhook(map[string]any{"event_id": "cs-" + id, "type": "refund.succeeded", "refund_id": id})
				require.Equal(t, 200, r.Status, "body: %s", r.Body)
			}()
		}
		wg.Wait()
		require.Equal(t, "refunded", f.orderStatus(t, order))
		total := int64(0)
		for _, id := range ids {
			total += int64(f.admin(t, id)["diamonds"].(float64))
		}
		require.EqualValues(t, 100, total)
	}
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	f.RequireClean()
}

// A payment of the wrong amount bought nothing: support returns it in full,
// through the channel, once.
func TestReturnPaymentOfWrongAmount(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.Recharge(f.user, map[string]any{"channel": "sandbox", "package_id": "p60"}, "o")["id"].(string)
	f.Pay(order, 599, "T-wrong", "e-wrong")
	path := "/v1/admin/recharges/" + order + "/payments/T-wrong/return"
	body := map[string]any{"note": "the payer sent 5.99 for a 6.00 order"}

	f.Do("POST", path, apptest.Req{Token: f.user, Key: "r1", Body: body}).RequireStatus(t, 403)
	require.Equal(t, "idempotency_key_required", f.Do("POST", path, apptest.Req{Token: f.agent, Body: body}).RequireStatus(t, 400).Code())
	r := f.Do("POST", path, apptest.Req{Token: f.agent, Key: "r1", Body: body}).RequireStatus(t, 201).JSON()
	require.Equal(t, "payment_return", r["kind"])
	require.EqualValues(t, 599, r["amount_fen"])
	require.EqualValues(t, 0, r["diamonds"])
	id := r["id"].(string)
	require.Equal(t, 1, f.bank.calls[id], "sent to the channel at once")
	replay := f.Do("POST", path, apptest.Req{Token: f.agent, Key: "r1", Body: body}).RequireStatus(t, 201)
	require.Equal(t, "true", replay.Header.Get("Idempotent-Replayed"))
	require.Equal(t, "invalid_state", f.Do("POST", path, apptest.Req{Token: f.agent, Key: "r2", Body: body}).RequireStatus(t, 409).Code())

	// only a payment of the wrong amount, only one that exists
	f.Pay(order, 600, "T-right", "e-right")
	require.Equal(t, "invalid_state", f.Do("POST", "/v1/admin/recharges/"+order+"/payments/T-right/return",
		apptest.Req{Token: f.agent, Key: "r3", Body: body}).RequireStatus(t, 409).Code())
	f.Do("POST", "/v1/admin/recharges/"+order+"/payments/T-none/return", apptest.Req{Token: f.agent, Key: "r4", Body: body}).RequireStatus(t, 404)

	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "ret", "type": "refund.succeeded", "refund_id": id}).Status)
	require.Equal(t, "succeeded", f.admin(t, id)["status"])
	require.EqualValues(t, 599, f.bank.applied[id])
	require.Equal(t, [3]int64{60, 0, 0}, f.wallet(t), "the right payment credited; the returned one never was")
	v := f.Do("GET", "/v1/admin/recharges/"+order, apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()
	require.Equal(t, "paid", v["status"])
	for _, p := range v["payments"].([]any) {
		if p.(map[string]any)["trade_no"] == "T-wrong" {
			require.Equal(t, id, p.(map[string]any)["refund_id"])
		}
	}
	audit := f.Do("GET", "/v1/admin/audit", apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()["items"].([]any)
	require.Equal(t, "payment.return", audit[0].(map[string]any)["action"])
	f.RequireClean()
}
