package refund_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/app"
	"github.com/diamondd/diamondd/internal/app/apptest"
)

func zzFindings(t *testing.T, f *fixture) []string {
	t.Helper()
	fs, err := app.Verify(context.Background(), f.Pool)
	require.NoError(t, err)
	var out []string
	for _, x := range fs {
		out = append(out, x.String())
	}
	return out
}

// Regression (a bug found in review, now fixed), as first reported:
// Two partial refunds of one order, both in review, settled by the channel
// in the opposite order to their creation (nothing unusual: review and
// channels are asynchronous). Order 1000 fen / 100 diamonds.
//
//	R1 333 fen: ceil(33.3) = 34 diamonds held.
//	R2 667 fen (the rest): estimated as "what is left" = 66, held 66.
//
// R2 settles first. succeed() re-decides its clawback against the refunds
// that *succeeded* (none), so R2 is no longer the completing refund:
// ceil(66.7) = 67 > 66 held. The 67th diamond comes from available (0) and
// then from debt, although R2 is a user refund (unspent_only) and nothing
// was ever spent. Meanwhile R1 still holds its 34: 67 + 34 = 101 diamonds
// taken or held against a 100-diamond order, and `ledger verify` reports
// "refunds within order". When R1 then succeeds it takes 33 and releases 1
// to available, leaving available 1 and debt 1 at once (spending blocked).
func TestOutOfOrderSettlementTakesFromSiblingHolds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	r1 := f.refund(t, f.user, "zz-r1", map[string]any{"order_id": order, "amount_fen": 333, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	r2 := f.refund(t, f.user, "zz-r2", map[string]any{"order_id": order, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 34, r1["diamonds"])
	require.EqualValues(t, 667, r2["amount_fen"])
	require.EqualValues(t, 66, r2["diamonds"])
	require.Equal(t, [3]int64{0, 100, 0}, f.wallet(t))
	id1, id2 := r1["id"].(string), r2["id"].(string)

	// R2 is approved and confirmed first
	f.Do("POST", "/v1/admin/refunds/"+id2+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-s2", "type": "refund.succeeded", "refund_id": id2}).Status)
	w := f.wallet(t)
	t.Logf("after R2 settled: R2 took %v diamonds; wallet available=%d held=%d debt=%d; verify: %v",
		f.admin(t, id2)["diamonds"], w[0], w[1], w[2], zzFindings(t, f))
	assert.Empty(t, zzFindings(t, f), "ledger verify must stay clean while R1 is still live")
	assert.Zero(t, w[2], "a user (unspent_only) refund of unspent diamonds must not create debt")

	// then R1
	f.Do("POST", "/v1/admin/refunds/"+id1+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-s1", "type": "refund.succeeded", "refund_id": id1}).Status)
	require.Equal(t, "refunded", f.orderStatus(t, order))
	w = f.wallet(t)
	t.Logf("after R1 settled: R1 took %v diamonds; wallet available=%d held=%d debt=%d", f.admin(t, id1)["diamonds"], w[0], w[1], w[2])
	assert.Equal(t, [3]int64{0, 0, 0}, w, "order fully refunded, nothing spent: the wallet should be empty, not available 1 + debt 1")
	// the user cannot spend the diamond they hold
	sp := f.Do("POST", "/v1/spends", apptest.Req{Token: f.service, Key: "zz-sp", Body: map[string]any{"user_id": "u1", "diamonds": 1, "reference": "g"}})
	t.Logf("spend of the 1 available diamond: %d %s", sp.Status, sp.Body)
}

// Regression (a bug found in review, now fixed), as first reported:
// The same out-of-order settlement with an agent's write_off refund: the
// platform writes off a diamond the user still holds, and after the order is
// refunded in full (1000 of 1000 fen back) the user keeps 1 diamond that no
// payment backs. R1 (user, 333 fen) holds 34; R2 (agent, write_off, the rest
// 667 fen) holds 66. R2 confirmed first takes ceil(66.7) = 67: 66 from its
// hold, 0 available (R1 holds the rest), so 1 is written off. R1 confirmed
// next completes the order and takes the 33 left, releasing 1 to available.
func TestOutOfOrderWriteOffTakesFromSiblingHolds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	r1 := f.refund(t, f.user, "zz-r1", map[string]any{"order_id": order, "amount_fen": 333, "reason_code": "other"}).RequireStatus(t, 201).JSON()
	r2 := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "zz-a2",
		Body: map[string]any{"order_id": order, "user_id": "u1", "reason_code": "other", "clawback": "write_off"}}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 66, r2["diamonds"])
	require.EqualValues(t, 66, r2["held"])
	id1, id2 := r1["id"].(string), r2["id"].(string)

	f.Do("POST", "/v1/admin/refunds/"+id2+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-s2", "type": "refund.succeeded", "refund_id": id2}).Status)
	f.Do("POST", "/v1/admin/refunds/"+id1+"/approve", apptest.Req{Token: f.agent, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-s1", "type": "refund.succeeded", "refund_id": id1}).Status)
	require.Equal(t, "refunded", f.orderStatus(t, order))
	require.EqualValues(t, 1000, f.bank.applied[id1]+f.bank.applied[id2], "all the money went back")

	var writeoff int64
	require.NoError(t, f.Pool.QueryRow(context.Background(), `SELECT coalesce(-sum(amount), 0) FROM postings WHERE account = 'writeoff'`).Scan(&writeoff))
	w := f.wallet(t)
	t.Logf("R2 took %v, R1 took %v; written off %d; wallet available=%d held=%d debt=%d",
		f.admin(t, id2)["diamonds"], f.admin(t, id1)["diamonds"], writeoff, w[0], w[1], w[2])
	assert.Zero(t, writeoff, "nothing was spent: nothing should be written off")
	assert.Equal(t, [3]int64{0, 0, 0}, w, "the order was refunded in full: the user should keep none of its diamonds")
}

// Regression (a bug found in review, now fixed), as first reported:
// Amplified: the user opens 20 one-fen refunds (each holds ceil(0.1) = 1
// diamond), support refunds the rest with write_off (held: the 80 left), the
// rest settles at ceil(98) = 98 (18 beyond its hold, available 0: written
// off), then the user withdraws the 20 tiny requests. 980 fen go back, the
// user keeps 20 diamonds for the 20 fen left (their worth: 2), and the
// platform has written off 18 diamonds that were never spent.
func TestWriteOffWithTinySiblings(t *testing.T) {
	t.Parallel()
	f := setup(t)
	order := f.paidOrder(t, 1000) // 100 diamonds
	var tiny []string
	for i := range 20 {
		r := f.refund(t, f.user, "zz-tiny-"+string(rune('a'+i)), map[string]any{"order_id": order, "amount_fen": 1, "reason_code": "other"}).RequireStatus(t, 201).JSON()
		tiny = append(tiny, r["id"].(string))
	}
	rest := f.Do("POST", "/v1/admin/refunds", apptest.Req{Token: f.agent, Key: "zz-rest",
		Body: map[string]any{"order_id": order, "user_id": "u1", "reason_code": "other", "clawback": "write_off"}}).RequireStatus(t, 201).JSON()
	require.EqualValues(t, 980, rest["amount_fen"])
	require.EqualValues(t, 80, rest["held"])
	id := rest["id"].(string)
	f.Do("POST", "/v1/admin/refunds/"+id+"/approve", apptest.Req{Token: f.agent2, Body: map[string]any{"note": "ok"}}).RequireStatus(t, 200)
	require.Equal(t, 200, f.Webhook(map[string]any{"event_id": "zz-rest", "type": "refund.succeeded", "refund_id": id}).Status)
	for _, tid := range tiny {
		f.Do("POST", "/v1/refunds/"+tid+"/cancel", apptest.Req{Token: f.user}).RequireStatus(t, 200)
	}
	var writeoff int64
	require.NoError(t, f.Pool.QueryRow(context.Background(), `SELECT coalesce(-sum(amount), 0) FROM postings WHERE account = 'writeoff'`).Scan(&writeoff))
	w := f.wallet(t)
	t.Logf("rest took %v; written off %d; wallet available=%d held=%d debt=%d", f.admin(t, id)["diamonds"], writeoff, w[0], w[1], w[2])
	assert.Zero(t, writeoff, "nothing was spent: nothing should be written off")
	assert.LessOrEqual(t, w[0], int64(2), "20 fen not refunded buy 2 diamonds")
}
