package refund_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app/apptest"
)

// A refund withdrawn while another refund of its order waits passes its
// held diamonds to that one, up to what it now takes, before anything goes
// back to available. R2, the rest of an order, holds only what R1 left it
// (99 of 100); R1 is withdrawn: R2 holds all 100, nothing can be spent, and
// R2 settles with neither debt nor write-off.
func TestWithdrawnRefundPassesItsHold(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	r1 := f.refund(t, f.user, "r1", map[string]any{"order_id": order, "amount_fen": 1, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	r2 := f.refund(t, f.user, "r2", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 99, r2["held"])
	f.Do("POST", "/v1/refunds/"+r1["id"].(string)+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)
	id2 := r2["id"].(string)
	require.EqualValues(t, 100, f.admin(t, id2)["held"])
	tl := f.admin(t, r1["id"].(string))["timeline"].([]any)
	require.Contains(t, tl[len(tl)-1].(map[string]any)["note"], "1 of its held diamonds now held for the order's other refunds")
	require.Equal(t, [3]int64{0, 100, 0}, f.wallet(t))
	f.RequireClean()
	sp := f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "sp", Body: map[string]any{"user_id": "u1", "diamonds": 1, "reference": "g"}})
	require.Equal(t, "insufficient_diamonds", sp.RequireStatus(t, 409).Code())

	f.Do("POST", "/v1/admin/refunds/"+id2+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "s2", "type": "refund.succeeded", "refund_id": id2}).Status)
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	require.EqualValues(t, 100, f.admin(t, id2)["diamonds"])
	require.Zero(t, f.count(t, `SELECT count(*) FROM postings WHERE account = 'writeoff'`))
	f.RequireClean()
}

// The same at scale cannot be farmed: 90 one-fen refunds each hold a
// diamond, the rest holds 10; all 90 are withdrawn and whatever comes back
// is spent. The rest still takes its 91 without the platform writing off
// more than a rounding.
func TestWithdrawnRefundsCannotBeFarmed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	var small []string
	for i := range 90 {
		r := f.refund(t, f.user, fmt.Sprintf("s%d", i), map[string]any{"order_id": order, "amount_fen": 1, "reason_code": "other"}).RequireStatus(t, 201).JSON()
		small = append(small, r["id"].(string))
	}
	rest := f.refund(t, f.user, "rest", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 910, rest["amount_fen"])
	require.EqualValues(t, 10, rest["held"])
	for _, id := range small {
		f.Do("POST", "/v1/refunds/"+id+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)
	}
	w := f.wallet(t)
	if w[0] > 0 {
		f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "sp", Body: map[string]any{"user_id": "u1", "diamonds": w[0], "reference": "g"}}).RequireStatus(t, 201)
	}
	id := rest["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "s-rest", "type": "refund.succeeded", "refund_id": id}).Status)
	require.EqualValues(t, 91, f.admin(t, id)["diamonds"])
	require.LessOrEqual(t, -f.count(t, `SELECT coalesce(sum(amount), 0)::int FROM postings WHERE account = 'writeoff'`), 1)
	require.Zero(t, f.wallet(t)[2])
	f.RequireClean()
}

// What support planned to write off stays written off: a user's refund of
// the unspent half withdrawn, or rejected, gives its diamonds back to
// available, not to support's write_off refund of the spent half, and can
// be asked for again, or reopened with evidence.
func TestEndedRefundLeavesAnAgentsShortfallAlone(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"cancel", "reject"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			order := f.paidOrder(t, 1000) // 100 diamonds
			f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "sp", Body: map[string]any{"user_id": "u1", "diamonds": 50, "reference": "g"}}).RequireStatus(t, 201)
			u := f.refund(t, f.user, "u", map[string]any{"order_id": order, "amount_fen": 500, "reason_code": "other"}).RequireStatus(t, 201).JSON()
			w := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "w",
				Body: map[string]any{"order_id": order, "user_id": "u1", "reason_code": "other", "clawback": "write_off"}}).RequireStatus(t, 201).JSON()
			require.EqualValues(t, 0, w["held"])
			id := u["id"].(string)
			if how == "cancel" {
				f.Do("POST", "/v1/refunds/"+id+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)
			} else {
				f.Do("POST", "/v1/admin/refunds/"+id+"/reject", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "send a screenshot", "reason_code": "insufficient_evidence"}}).RequireStatus(t, 200)
			}
			require.Equal(t, [3]int64{50, 0, 0}, f.wallet(t))
			require.EqualValues(t, 0, f.admin(t, w["id"].(string))["held"])
			if how == "cancel" {
				f.refund(t, f.user, "u2", map[string]any{"order_id": order, "amount_fen": 500, "reason_code": "other"}).RequireStatus(t, 201)
			} else {
				f.Do("POST", "/v1/refunds/"+id+"/evidence", apptest.Req{Token: f.user,
					Body: map[string]any{"evidence": []map[string]any{{"kind": "text", "value": "screenshot"}}}}).RequireStatus(t, 200)
			}
			require.Equal(t, [3]int64{0, 50, 0}, f.wallet(t))
			f.RequireClean()
		})
	}
}

// Support's write_off stays the platform's loss whichever refund of the
// order settles first: the write_off refund does not take the hold of the
// user's own refund of the other half and leave that one to book debt.
func TestWriteOffNeverBecomesTheUsersDebt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "sp", Body: map[string]any{"user_id": "u1", "diamonds": 50, "reference": "g"}}).RequireStatus(t, 201)
	r1 := f.refund(t, f.user, "r1", map[string]any{"order_id": order, "amount_fen": 500, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 50, r1["held"])
	r2 := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "r2",
		Body: map[string]any{"order_id": order, "user_id": "u1", "reason_code": "other", "clawback": "write_off"}}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 0, r2["held"])
	id1, id2 := r1["id"].(string), r2["id"].(string)

	f.Do("POST", "/v1/admin/refunds/"+id2+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "s2", "type": "refund.succeeded", "refund_id": id2}).Status)
	require.Equal(t, [3]int64{0, 50, 0}, f.wallet(t), "the user refund's hold is untouched")
	f.Do("POST", "/v1/admin/refunds/"+id1+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "s1", "type": "refund.succeeded", "refund_id": id1}).Status)
	require.Equal(t, "refunded", f.orderStatus(t, order))
	require.Equal(t, [3]int64{0, 0, 0}, f.wallet(t))
	require.EqualValues(t, 50, f.admin(t, id1)["diamonds"])
	require.EqualValues(t, 50, f.admin(t, id2)["diamonds"])
	f.RequireClean()
}

// Diamonds released from a hold pay the user's debt first, as a recharge's
// do: a user never has diamonds available while owing some, which could be
// refunded for money while the debt stays unpaid.
func TestReleasedDiamondsPayDebtFirst(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a := f.paidOrder(t, 1000) // 100 diamonds
	b := f.paidOrder(t, 700)  // 70 diamonds
	rb := f.refund(t, f.user, "rb", map[string]any{"order_id": b, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "sp", Body: map[string]any{"user_id": "u1", "diamonds": 100, "reference": "g"}}).RequireStatus(t, 201)
	ra := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "ra",
		Body: map[string]any{"order_id": a, "user_id": "u1", "reason_code": "minor_recharge", "clawback": "allow_debt"}}).RequireStatus(t, 201).JSON()
	f.Do("POST", "/v1/admin/refunds/"+ra["id"].(string)+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "sa", "type": "refund.succeeded", "refund_id": ra["id"]}).Status)
	require.Equal(t, [3]int64{0, 70, 100}, f.wallet(t))

	f.Do("POST", "/v1/admin/refunds/"+rb["id"].(string)+"/reject", apptest.Req{Token: f.agent, Body: map[string]any{"note": "no", "reason_code": "x"}}).RequireStatus(t, 200)
	require.Equal(t, [3]int64{0, 0, 30}, f.wallet(t))
	again := f.refund(t, f.user, "rb2", map[string]any{"order_id": b, "reason_code": "other"})
	require.NotEqual(t, 201, again.Status, "nothing left to refund while the user owes diamonds: %s", again.Body)
	f.RequireClean()
}
