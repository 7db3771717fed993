package refund_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/refund"
)

// Regression (a bug found in review, now fixed), as first reported:
// A refund returned to review keeps the clawback computed when it was
// created, although other refunds of the order were decided meanwhile: the
// order's refunds then claw back more diamonds than the order credited.
//
// Order 600 fen / 60 diamonds. R1 599 fen → ceil(59.9) = 60 diamonds,
// rejected. R2 1 fen → ceil(0.1) = 1 diamond, succeeds. R1 returned to
// review with new evidence still takes 60: 61 diamonds for a 60-diamond order.
func TestReopenNeverClawsBackMoreThanOrderCredited(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 600) // 60 diamonds
	f.paidOrder(t, 1000)         // 100 more diamonds, so the extra diamond is there to take
	require.Equal(t, [3]int64{160, 0, 0}, f.wallet(t))

	r1 := f.refund(t, f.user, "r1", map[string]any{"order_id": order, "amount_fen": 599, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 60, r1["diamonds"])
	id1 := r1["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id1+"/reject", apptest.Req{Token: f.agent, Body: map[string]any{"note": "no", "reason_code": "x"}}).RequireStatus(t, 200)

	r2 := f.refund(t, f.user, "r2", map[string]any{"order_id": order, "amount_fen": 1, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 1, r2["diamonds"])
	id2 := r2["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id2+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-r2", "type": "refund.succeeded", "refund_id": id2}).Status)

	// back to review: 599 + 1 fen fit in 600, but 60 + 1 diamonds do not fit in 60
	back := f.Do("POST", "/v1/refunds/"+id1+"/evidence", apptest.Req{Token: f.user,
		Body: map[string]any{"evidence": []map[string]any{{"kind": "text", "value": "please"}}}}).RequireStatus(t, 200).JSON()
	require.Equal(t, "pending_review", back["status"])
	f.Do("POST", "/v1/admin/refunds/"+id1+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-r1", "type": "refund.succeeded", "refund_id": id1}).Status)
	require.Equal(t, "refunded", f.orderStatus(t, order))

	var taken int64
	require.NoError(t, f.Pool.QueryRow(context.Background(),
		`SELECT sum(diamonds) FROM refunds WHERE order_id = $1 AND status = 'succeeded'`, order).Scan(&taken))
	require.LessOrEqual(t, taken, int64(60), "the refunds of one order never claw back more than the order credited")
	require.Equal(t, [3]int64{100, 0, 0}, f.wallet(t), "the 1000-fen order's 100 diamonds are untouched")
	f.RequireClean()
}

// The automatic refund of a second payment is never left failed: the money
// bought nothing and no one can ask for it again, so a channel refusal is
// shown to support and the refund submitted again (with backoff) until the
// channel takes it.
func TestRefusedDuplicatePaymentRefundIsRetried(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.bank.mu.Lock()
	f.bank.settle = "failed"
	f.bank.mu.Unlock()
	order := f.Recharge(f.user, map[string]any{"channel": "sandbox", "amount_fen": 700}, "zz-dup")["id"].(string)
	f.Pay(order, 700, "T-1", "e-1")
	f.Pay(order, 700, "T-2", "e-2") // a second payment: refunded automatically
	f.RunWorkers()
	f.Clock.Advance(time.Hour)
	f.RunWorkers()

	var id string
	require.NoError(t, f.Pool.QueryRow(context.Background(), `
		SELECT id FROM refunds WHERE order_id = $1 AND kind = 'duplicate_payment' AND trade_no = 'T-2'`, order).Scan(&id))
	r := f.admin(t, id)
	require.Equal(t, "approved", r["status"], "still to be refunded")
	require.Contains(t, r["failure_reason"], "account closed", "support sees why")
	require.Equal(t, 2, f.bank.calls[id])

	// the channel takes it on a later attempt
	f.bank.mu.Lock()
	f.bank.settle = "succeeded"
	f.bank.mu.Unlock()
	f.Clock.Advance(time.Hour)
	f.RunWorkers()
	require.Equal(t, "succeeded", f.admin(t, id)["status"])
	require.EqualValues(t, 700, f.bank.applied[id])
	f.RequireClean()
}

// API.md, POST /v1/refunds: "Response 201: the refund {id, order_id, status,
// amount_fen, diamonds, sla_deadline, timeline, ...}". The handler builds the
// response without the timeline, so the 201 (and every replay of it) has none.
func TestCreateRefundResponseHasTimeline(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 700)
	r := f.refund(t, f.user, "tl", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.Contains(t, r, "timeline")
}

// Regression (a bug found in review, now fixed), as first reported:
// The refund that completes an order takes "exactly what is left", where what
// is left is computed against refunds that are still live but can still be
// cancelled (or rejected, or fail). A user reserves diamonds with tiny
// refunds (1 fen takes ceil(0.1) = 1 diamond each), asks for the rest (which
// then takes far less than its proportional share), and withdraws the tiny
// ones: 580 fen come back for 40 diamonds instead of 58, and the user keeps
// 20 diamonds bought for 20 fen.
func TestCompletingRefundTakesItsShareAfterCancellations(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 600) // 60 diamonds
	var tiny []string
	for i := range 20 {
		r := f.refund(t, f.user, fmt.Sprintf("tiny-%d", i), map[string]any{"order_id": order, "amount_fen": 1, "reason_code": "other"}).RequireStatus(t, 201).JSON()
		require.EqualValues(t, 1, r["diamonds"])
		tiny = append(tiny, r["id"].(string))
	}
	rest := f.refund(t, f.user, "rest", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 580, rest["amount_fen"])
	for _, id := range tiny {
		f.Do("POST", "/v1/refunds/"+id+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)
	}
	id := rest["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-rest", "type": "refund.succeeded", "refund_id": id}).Status)

	t.Logf("wallet after 580 of 600 fen refunded: %v; refund took %v diamonds", f.wallet(t), f.admin(t, id)["diamonds"])
	require.EqualValues(t, 58, f.admin(t, id)["diamonds"], "580 fen of a 600 fen / 60 diamond order: ceil(58) diamonds")
}

// concurrent requests with one key make one refund.
func TestSameKeyConcurrentRefunds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 700)
	var wg sync.WaitGroup
	statuses := make([]int, 12)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = f.refund(t, f.user, "same", map[string]any{"order_id": order, "amount_fen": 100, "reason_code": "other"}).Status
		}()
	}
	wg.Wait()
	for _, s := range statuses {
		require.Contains(t, []int{201, 409}, s)
	}
	var n int
	require.NoError(t, f.Pool.QueryRow(context.Background(), `SELECT count(*) FROM refunds WHERE order_id = $1`, order).Scan(&n))
	require.Equal(t, 1, n)
	f.RequireClean()
}

// Regression (a bug found in review, now fixed), as first reported:
// Refunds at or above REVIEW_THRESHOLD_FEN need a human (and a lead). The
// threshold is applied per request, so a refund of a large flagged order
// (a first recharge of ¥2000 is flagged "unusual amount") split into pieces
// below it is approved and paid out automatically, whole, with nobody looking.
func TestSplitRefundsStillReachTheThreshold(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 200000)
	var approved int64
	for i, amount := range []int64{99999, 99999, 2} {
		r := f.refund(t, f.user, fmt.Sprintf("split-%d", i), map[string]any{"order_id": order, "amount_fen": amount, "reason_code": "accidental_recharge"}).RequireStatus(t, 201).JSON()
		if r["status"] == "approved" {
			approved += amount
		}
	}
	require.Less(t, approved, int64(100000), "auto-approved %d fen of one order without review", approved)
}

// Regression (a bug found in review, now fixed), as first reported:
// allow_debt fixes the shortfall when the refund is opened; settlement turns
// all of it into debt even if the user has available diamonds by then. The
// user then holds available diamonds and debt at once: those diamonds cannot
// be spent, and they can be refunded for money while the debt stays unpaid.
func TestAllowDebtSettlementTakesAvailableFirst(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a := f.paidOrder(t, 1000) // 100 diamonds
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "s", Body: map[string]any{"user_id": "u1", "diamonds": 100, "reference": "g"}}).RequireStatus(t, 201)
	ag := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "a",
		Body: map[string]any{"order_id": a, "user_id": "u1", "reason_code": "minor_recharge", "clawback": "allow_debt"}}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 0, ag["held"])
	b := f.paidOrder(t, 700) // 70 diamonds, before the refund settles
	id := ag["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-ad", "type": "refund.succeeded", "refund_id": id}).Status)
	w := f.wallet(t)
	t.Logf("wallet after settlement: available=%d held=%d debt=%d", w[0], w[1], w[2])
	// the user may now take B's 70 diamonds back as money while owing 100
	rb := f.refund(t, f.user, "b", map[string]any{"order_id": b, "reason_code": "other"})
	t.Logf("refund of B while in debt: %d %s", rb.Status, rb.Code())
	require.False(t, w[0] > 0 && w[2] > 0, "available %d and debt %d at once", w[0], w[2])
}

// debtAhead sets up a user about to fall into debt: order A's 100 diamonds
// are spent and an agent's approved allow_debt refund of A waits at the
// channel; order B's 70 diamonds are held by the user's own refund of B. It
// returns A's and B's refund ids.
func debtAhead(t *testing.T, f *fixture) (aid, bid string) {
	t.Helper()
	a := f.paidOrder(t, 1000)
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "s", Body: map[string]any{"user_id": "u1", "diamonds": 100, "reference": "g"}}).RequireStatus(t, 201)
	aid = f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "a", Body: map[string]any{
		"order_id": a, "user_id": "u1", "reason_code": "minor_recharge", "clawback": "allow_debt"}}).RequireStatus(t, 201).JSON()["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+aid+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	b := f.paidOrder(t, 700)
	bid = f.refund(t, f.user, "b", map[string]any{"order_id": b, "reason_code": "other"}).RequireStatus(t, 201).JSON()["id"].(string)
	return aid, bid
}

// A user's refund that holds diamonds is not paid out while the user owes
// diamonds: an agent's allow_debt refund of another order settled after it
// was accepted. It fails before reaching the channel, and what it held pays
// the debt, as a recharge would; had it been sent first, the allow_debt
// settlement would have found those diamonds available instead.
func TestRefundHeldWhileInDebtPaysTheDebt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	aid, bid := debtAhead(t, f)
	require.Equal(t, [3]int64{0, 70, 0}, f.wallet(t))
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "a-ok", "type": "refund.succeeded", "refund_id": aid}).Status)
	require.Equal(t, [3]int64{0, 70, 100}, f.wallet(t))

	f.Do("POST", "/v1/admin/refunds/"+bid+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	f.RunWorkers()
	got := f.Do("GET", "/v1/admin/refunds/"+bid, apptest.Req{Token: f.agent}).RequireStatus(t, 200).JSON()
	require.Equal(t, "failed", got["status"], "never sent while the user owes diamonds")
	require.Contains(t, got["failure_reason"], "owes 100 diamonds")
	require.Equal(t, [3]int64{0, 0, 30}, f.wallet(t), "the held diamonds paid the debt")
	// the channel was never asked: a refund notification for it changes nothing
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "b-ok", "type": "refund.succeeded", "refund_id": bid}).Status)
	require.Equal(t, [3]int64{0, 0, 30}, f.wallet(t))
	f.RequireClean()
}

// A refund whose first submission went out is never stopped for debt, even
// when its answer was never recorded: here the call outlives its lease
// while the user falls into debt, and another round looks at the refund.
// The channel has it and pays it back, so it must not be failed, nor its
// hold given to the debt.
func TestRefundSentBeforeTheDebtIsNotStopped(t *testing.T) {
	t.Parallel()
	f := setup(t)
	aid, bid := debtAhead(t, f)
	f.bank.mu.Lock()
	f.bank.slow, f.bank.started, f.bank.gate = bid, make(chan struct{}), make(chan struct{})
	f.bank.mu.Unlock()
	approved := make(chan int, 1)
	go func() {
		approved <- f.Do("POST", "/v1/admin/refunds/"+bid+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).Status
	}()
	<-f.bank.started // B's refund is at the channel; its answer is not back

	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "a-ok", "type": "refund.succeeded", "refund_id": aid}).Status)
	f.Clock.Advance(2 * time.Minute) // past B's lease
	f.RunWorkers()
	close(f.bank.gate)
	require.Equal(t, 200, <-approved)

	require.NotEqual(t, "failed", f.admin(t, bid)["status"], "sent, so never stopped")
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "b-ok", "type": "refund.succeeded", "refund_id": bid}).Status)
	require.Equal(t, "succeeded", f.admin(t, bid)["status"])
	require.Equal(t, [3]int64{0, 0, 100}, f.wallet(t), "B's diamonds went back with its money; the debt waits for a recharge")
	f.RequireClean()
}

// A rolling deploy: a binary from before submitted_at (migration 0007)
// submits a refund without marking it, and its call times out (attempts = 1,
// the channel applied it). The user then falls into debt, and a new replica
// takes the refund over: a call was made, so it is not stopped.
func TestRefundSentByAnOlderBinaryIsNotStopped(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	aid, bid := debtAhead(t, f)
	f.bank.mu.Lock()
	f.bank.timeouts = 1 // applied at the channel, the answer lost
	f.bank.mu.Unlock()
	f.Do("POST", "/v1/admin/refunds/"+bid+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	// What a pre-2dcc9bf binary leaves after that call: attempts = 1, no submitted_at.
	_, err := f.Pool.Exec(ctx, `UPDATE refunds SET submitted_at = NULL WHERE id = $1`, bid)
	require.NoError(t, err)
	var attempts int
	require.NoError(t, f.Pool.QueryRow(ctx, `SELECT attempts FROM refunds WHERE id = $1`, bid).Scan(&attempts))
	require.Equal(t, 1, attempts)
	f.bank.mu.Lock()
	_, atChannel := f.bank.applied[bid]
	f.bank.mu.Unlock()
	require.True(t, atChannel, "the channel has B's refund")

	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "a-ok", "type": "refund.succeeded", "refund_id": aid}).Status)
	require.Equal(t, [3]int64{0, 70, 100}, f.wallet(t))
	f.Clock.Advance(2 * time.Minute)
	f.RunWorkers() // a new replica

	got := f.admin(t, bid)
	t.Logf("B: status=%v failure=%v wallet=%v", got["status"], got["failure_reason"], f.wallet(t))
	require.NotEqual(t, "failed", got["status"], "B was sent (attempts=1): the channel paid it, it must not be failed and its hold given to the debt")
}

// reopen after rejection, then a channel failure;
// then a new refund of the same order succeeds. Every hold and release has
// its own reference and the ledger stays clean.
func TestReopenThenFailure(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 700)
	r := f.refund(t, f.user, "x", map[string]any{"order_id": order, "amount_fen": 300, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id := r["id"].(string)
	ev := map[string]any{"evidence": []map[string]any{{"kind": "text", "value": "x"}}}
	for range 2 {
		f.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: f.agent, Body: map[string]any{"note": "no", "reason_code": "x"}}).RequireStatus(t, 200)
		f.Do("POST", "/v1/refunds/"+id+"/evidence", apptest.Req{Token: f.user, Body: ev}).RequireStatus(t, 200)
	}
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-f", "type": "refund.failed", "refund_id": id, "reason": "x"}).Status)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-f2", "type": "refund.succeeded", "refund_id": id}).Status)
	require.Equal(t, [3]int64{70, 0, 0}, f.wallet(t))
	r2 := f.refund(t, f.user, "y", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	f.Do("POST", "/v1/admin/refunds/"+r2["id"].(string)+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	f.RunWorkers()
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-s", "type": "refund.succeeded", "refund_id": r2["id"]}).Status)
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	f.RequireClean()
}

// a credit-line refund submitted by many callers
// at once restores the line once.
func TestMonthlyPayConcurrentSubmit(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: f.lead, Body: map[string]any{"limit_fen": 100000, "status": "active"}}).RequireStatus(t, 200)
	f.Recharge(f.user, map[string]any{"channel": "monthly_pay", "package_id": "p300"}, "m0")
	o := f.Recharge(f.user, map[string]any{"channel": "monthly_pay", "package_id": "p60"}, "m1")
	r := f.refund(t, f.user, "r", map[string]any{"order_id": o["id"], "reason_code": "other"}).RequireStatus(t, 201).JSON()
	id := uuid.MustParse(r["id"].(string))
	require.NoError(t, postgres.WithTx(context.Background(), f.Pool, func(tx pgx.Tx) error {
		_, err := f.App.Refunds.Approve(context.Background(), tx, refund.Actor{ID: "agent1", Role: "support"}, id, "ok")
		return err
	}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(2)
		go func() { defer wg.Done(); _ = f.App.Refunds.Submit(context.Background(), "u1", id) }()
		go func() { defer wg.Done(); f.RunWorkers() }()
	}
	wg.Wait()
	line := f.Do("PUT", "/v1/admin/users/u1/credit-line", apptest.Req{Token: f.lead, Body: map[string]any{"limit_fen": 100000, "status": "active"}}).RequireStatus(t, 200).JSON()
	require.EqualValues(t, 3000, line["used_fen"])
	require.Equal(t, "succeeded", f.admin(t, id.String())["status"])
	f.RequireClean()
}
