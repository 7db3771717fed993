package load

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diamondd/diamondd/internal/auth"
)

// Principals the tool acts as besides its users.
const (
	giftService = "load-gifts"   // role service: spends
	leadAgent   = "load-lead"    // role support_lead: approves refunds
	agent       = "load-support" // role support: reads wallets and refunds for the checks
)

// fundFen is what a spend flow recharges when its user runs short: enough
// for a few hundred spends, so funding stays a small share of the flow.
const fundFen = 50000

type orderBody struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	AmountFen int64  `json:"amount_fen"`
	Diamonds  int64  `json:"diamonds"`
}

type refundBody struct {
	ID        string `json:"id"`
	OrderID   string `json:"order_id"`
	Status    string `json:"status"`
	AmountFen int64  `json:"amount_fen"`
	Diamonds  int64  `json:"diamonds"`
}

// event is a sandbox channel notification (API.md, "The sandbox channel").
type event struct {
	EventID   string `json:"event_id"`
	Type      string `json:"type"`
	OrderID   string `json:"order_id,omitempty"`
	RefundID  string `json:"refund_id,omitempty"`
	TradeNo   string `json:"trade_no,omitempty"`
	AmountFen int64  `json:"amount_fen,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// create asks for a recharge order.
func (w *worker) create(ctx context.Context, user string, amountFen int64) (Order, bool) {
	r := w.r
	r.model.Touch(user)
	req := request{method: "POST", path: "/v1/recharges", token: r.cl.token(user, auth.RoleUser),
		key: r.key("order"), body: mustJSON(map[string]any{"channel": "sandbox", "amount_fen": amountFen})}
	accept := func(rep *reply) (Order, bool) {
		var b orderBody
		if rep.status != 201 || json.Unmarshal(rep.body, &b) != nil || b.ID == "" {
			return Order{}, false
		}
		// The order is what the tool asked for at the service's rate; the
		// reply is kept only to be checked against it.
		o := Order{ID: b.ID, UserID: user, AmountFen: amountFen, Diamonds: r.diamondsFor(amountFen),
			Reply: &Price{AmountFen: b.AmountFen, Diamonds: b.Diamonds}}
		r.model.OrderCreated(o)
		return o, true
	}
	rep, err := r.call(ctx, StepCreateOrder, req)
	if err != nil {
		// The order may exist: replaying the key later tells.
		r.later(func(ctx context.Context) bool {
			rep, err := r.call(ctx, StepCreateOrder, req)
			if err == nil {
				accept(rep)
			}
			return err == nil
		})
		return Order{}, false
	}
	return accept(rep)
}

// pay has the channel notify a successful payment, redelivered until
// acknowledged. reserve keeps the credited diamonds for what the flow does
// next (a refund) when the acknowledgement comes inline.
func (w *worker) pay(ctx context.Context, o Order, reserve bool) bool {
	r := w.r
	r.model.PaymentSent(o.ID)
	n := &notification{step: StepWebhookPay,
		body: mustJSON(event{EventID: "e-" + o.ID, Type: "payment.succeeded", OrderID: o.ID,
			TradeNo: "T-" + o.ID, AmountFen: o.AmountFen}),
		onAck: func(inline bool) { r.model.PaymentAcked(o.ID, reserve && inline) }}
	return r.ch.deliver(ctx, n)
}

func (w *worker) recharge(ctx context.Context, user string, amountFen int64, reserve bool) (Order, bool) {
	o, ok := w.create(ctx, user, amountFen)
	if !ok {
		return o, false
	}
	return o, w.pay(ctx, o, reserve)
}

// storm pays an order with StormFanout notifications at once: half of them
// redeliveries of one event, half the same payment under other event ids,
// shuffled; some orders also get a payment.failed for an earlier attempt
// (another trade number) in the middle of them. The order must be credited
// once whatever arrives first.
func (w *worker) storm(ctx context.Context, user string) bool {
	r := w.r
	o, ok := w.create(ctx, user, w.amount())
	if !ok {
		return false
	}
	r.model.PaymentSent(o.ID)
	type note struct {
		body    []byte
		success bool
	}
	var notes []note
	for i := range r.opt.StormFanout {
		id := "e-" + o.ID
		if i%2 == 1 {
			id = fmt.Sprintf("e-%s-%d", o.ID, i)
		}
		notes = append(notes, note{success: true, body: mustJSON(event{EventID: id, Type: "payment.succeeded",
			OrderID: o.ID, TradeNo: "T-" + o.ID, AmountFen: o.AmountFen})})
	}
	if w.rng.Float64() < r.opt.StormStaleFailed {
		notes = append(notes, note{body: mustJSON(event{EventID: "e-" + o.ID + "-failed", Type: "payment.failed",
			OrderID: o.ID, TradeNo: "T-" + o.ID + "-attempt0"})})
	}
	w.rng.Shuffle(len(notes), func(i, j int) { notes[i], notes[j] = notes[j], notes[i] })
	var acked atomic.Bool
	var wg sync.WaitGroup
	for _, nt := range notes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := &notification{step: StepWebhookPay, body: nt.body, onAck: func(bool) {
				if nt.success {
					r.model.PaymentAcked(o.ID, false)
				}
			}}
			if r.ch.deliver(ctx, n) && nt.success {
				acked.Store(true)
			}
		}()
	}
	wg.Wait()
	return acked.Load()
}

// spend has the gift service take 1 to 20 diamonds; a user short of
// diamonds is funded first with a recharge (part of the flow).
func (w *worker) spend(ctx context.Context, user string) bool {
	r := w.r
	want := int64(1 + w.rng.IntN(20))
	got := r.model.Reserve(user, want)
	if got < want {
		r.model.Release(user, got)
		if _, ok := w.recharge(ctx, user, fundFen, false); !ok {
			return false
		}
		if got = r.model.Reserve(user, want); got < want {
			r.model.Release(user, got)
			return false
		}
	}
	key := r.key("spend")
	req := request{method: "POST", path: "/v1/spends", token: r.cl.token(giftService, auth.RoleService), key: key,
		body: mustJSON(map[string]any{"user_id": user, "diamonds": got, "reference": "gift-" + key})}
	settle := func(rep *reply) bool {
		if rep.status == 201 {
			r.model.Spent(user, got)
			return true
		}
		r.model.Release(user, got)
		return false
	}
	rep, err := r.call(ctx, StepSpend, req)
	if err != nil {
		r.later(func(ctx context.Context) bool {
			rep, err := r.call(ctx, StepSpend, req)
			if err == nil {
				settle(rep)
			}
			return err == nil
		})
		return false
	}
	return settle(rep)
}

// wallet reads the user's own wallet.
func (w *worker) wallet(ctx context.Context, user string) bool {
	rep, err := w.r.call(ctx, StepWalletRead, request{method: "GET", path: "/v1/wallet", token: w.r.cl.token(user, auth.RoleUser)})
	return err == nil && rep.status == 200
}

// refund recharges, asks for a full refund, has a support lead approve it
// when it waits for review, waits until the refund reaches the channel, and
// has the channel report it succeeded.
func (w *worker) refund(ctx context.Context, user string) bool {
	r := w.r
	o, ok := w.recharge(ctx, user, w.amount(), true)
	if !ok {
		return false
	}
	reserved := o.Diamonds
	req := request{method: "POST", path: "/v1/refunds", token: r.cl.token(user, auth.RoleUser), key: r.key("refund"),
		body: mustJSON(map[string]any{"order_id": o.ID, "reason_code": "other", "description": "load test refund"})}
	accept := func(rep *reply) (refundBody, bool) {
		var b refundBody
		if rep.status != 201 || json.Unmarshal(rep.body, &b) != nil || b.ID == "" {
			r.model.Release(user, reserved)
			return b, false
		}
		// A full refund (no amount_fen asked) of an order whose diamonds are
		// reserved for it: the checks hold the reply's amount and diamonds
		// against the order's.
		r.model.RefundAccepted(Refund{ID: b.ID, OrderID: o.ID, UserID: user, AmountFen: b.AmountFen, Diamonds: b.Diamonds}, reserved)
		return b, true
	}
	rep, err := r.call(ctx, StepRefundRequest, req)
	if err != nil {
		r.later(func(ctx context.Context) bool {
			rep, err := r.call(ctx, StepRefundRequest, req)
			if err == nil {
				accept(rep)
			}
			return err == nil
		})
		return false
	}
	b, ok := accept(rep)
	if !ok {
		return false
	}
	return r.finishRefund(ctx, b, r.opt.RefundWait)
}

// finishRefund takes an accepted refund to the end: approval when it waits
// for review, then, once it is with the channel, the channel's success.
func (r *Runner) finishRefund(ctx context.Context, b refundBody, wait time.Duration) bool {
	status := b.Status
	if status == "pending_review" {
		rep, err := r.call(ctx, StepRefundApprove, request{method: "POST", path: "/v1/admin/refunds/" + b.ID + "/approve",
			token: r.cl.token(leadAgent, auth.RoleSupportLead), body: mustJSON(map[string]any{"note": "load test"})})
		if err != nil {
			return false
		}
		switch {
		case rep.status == 200:
			var a refundBody
			if json.Unmarshal(rep.body, &a) == nil {
				status = a.Status
			}
		case rep.code == "invalid_state": // approved by an earlier attempt
			status = ""
		default:
			return false
		}
	}
	deadline := time.Now().Add(wait)
	for attempt := 1; status != "processing"; attempt++ {
		switch status {
		case "succeeded":
			return true
		case "failed", "rejected", "cancelled":
			return false
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		sleepCtx(ctx, min(10*time.Millisecond<<min(attempt, 5), 250*time.Millisecond))
		rep, err := r.call(ctx, StepRefundPoll, request{method: "GET", path: "/v1/admin/refunds/" + b.ID,
			token: r.cl.token(agent, auth.RoleSupport)})
		if err != nil || rep.status != 200 {
			continue
		}
		var a refundBody
		if json.Unmarshal(rep.body, &a) == nil {
			status = a.Status
		}
	}
	n := &notification{step: StepWebhookRefund,
		body:  mustJSON(event{EventID: "e-" + b.ID, Type: "refund.succeeded", RefundID: b.ID, AmountFen: b.AmountFen}),
		onAck: func(bool) { r.model.RefundWebhookAcked(b.ID) }}
	// From here the channel has paid the money back: the refund must end
	// succeeded and its notification be acknowledged.
	r.model.RefundSent(b.ID)
	return r.ch.deliver(ctx, n)
}
