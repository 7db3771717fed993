package recharge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/recovery"
	"github.com/diamondd/diamondd/internal/risk"
)

// RecordEvent records a verified notification under its unique (channel,
// event key) in the caller's transaction. It returns false when the event
// was recorded before: a redelivery, to acknowledge and ignore. A concurrent
// delivery of the same event waits here until the first one commits.
func RecordEvent(ctx context.Context, tx pgx.Tx, chName string, ev channel.Event, objectID string, at time.Time) (bool, error) {
	payload, _ := json.Marshal(ev) // an Event always encodes
	tag, err := tx.Exec(ctx, `
		INSERT INTO webhook_events (channel, event_key, type, object_id, outcome, payload, received_at)
		VALUES ($1, $2, $3, $4, 'received', $5, $6)
		ON CONFLICT (channel, event_key) DO NOTHING`,
		chName, ev.Key, string(ev.Type), objectID, payload, at)
	if err != nil {
		return false, fmt.Errorf("record event %s/%s: %w", chName, ev.Key, err)
	}
	return tag.RowsAffected() == 1, nil
}

// SetEventOutcome notes what an event did (for support and debugging).
func SetEventOutcome(ctx context.Context, tx pgx.Tx, chName, key, userID, outcome string) error {
	_, err := tx.Exec(ctx, `UPDATE webhook_events SET outcome = $3, user_id = nullif($4, '') WHERE channel = $1 AND event_key = $2`,
		chName, key, outcome, userID)
	if err != nil {
		return fmt.Errorf("event outcome %s/%s: %w", chName, key, err)
	}
	return nil
}

// HandleEvent applies a payment notification: recorded once, then acted on
// in the same transaction. Every outcome that cannot improve by redelivery
// (unknown order, stale event, amount mismatch) is acknowledged.
//
// The transaction takes three round trips: BEGIN, lock the order and check
// the event is new; record the trade (with the wallet lock and the risk
// rules' read); then the ledger posting with every closing write, the
// event's record and COMMIT.
func (s *Service) HandleEvent(ctx context.Context, chName string, ev channel.Event) error {
	return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		var o Order
		found, fresh := false, false
		b := &pgx.Batch{}
		if id, err := uuid.Parse(ev.OrderID); err == nil {
			b.Queue(`SELECT `+orderColumns+` FROM orders
				WHERE id = $1 AND user_id = (SELECT user_id FROM owners WHERE object_id = $1) FOR UPDATE`, id).
				QueryRow(func(row pgx.Row) error {
					var err error
					o, err = scanOrder(row)
					if errors.Is(err, pgx.ErrNoRows) {
						return nil
					}
					found = err == nil
					return err
				})
		}
		// Read after the order's lock (a statement of its own sees what the
		// lock waited for): a delivery of this event that held the lock
		// before us has committed its record by now.
		b.Queue(`SELECT NOT EXISTS (SELECT FROM webhook_events WHERE channel = $1 AND event_key = $2)`, chName, ev.Key).
			QueryRow(func(row pgx.Row) error { return row.Scan(&fresh) })
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("lock order of event %s/%s: %w", chName, ev.Key, err)
		}
		if !fresh {
			return nil // a redelivery
		}
		// Every branch ends with one batch holding these statements: the
		// event's record, written once with what it did, and the commit.
		// Deliveries of an event for an existing order are serialised by
		// the order's lock; for an unknown order nothing happens, so a
		// concurrent duplicate's record is simply not written twice.
		received := s.now().UTC()
		closing := func(fin *pgx.Batch, outcome string) {
			queueEvent(fin, chName, ev, ev.OrderID, o.UserID, outcome, received)
			postgres.QueueCommit(tx, fin)
		}
		switch {
		case !found:
			s.log.WarnContext(ctx, "payment event for an unknown order", "channel", chName, "order", ev.OrderID, "event", ev.Key)
			return send(ctx, tx, closing, "unknown_order")
		case o.Channel != chName:
			s.log.WarnContext(ctx, "payment event from another channel", "channel", chName, "order", o.ID, "order_channel", o.Channel)
			return send(ctx, tx, closing, "wrong_channel")
		}
		switch ev.Type {
		case channel.EventPaymentSucceeded, channel.EventPaymentRefunded:
			t := trade{no: ev.TradeNo, amountFen: ev.AmountFen,
				refunded: ev.Type == channel.EventPaymentRefunded, refundedFen: ev.RefundedFen}
			_, err := s.applyPayment(ctx, tx, &o, t, "channel:"+chName, closing)
			return err
		case channel.EventPaymentFailed, channel.EventPaymentClosed:
			if o.Status == StatusFailed && ev.Type == channel.EventPaymentClosed && o.CheckAfter != nil {
				// The channel closed what the failed attempt left open.
				fin := &pgx.Batch{}
				s.queueUnwatch(fin, &o, "channel:"+chName, "closed at the channel")
				closing(fin, StatusClosed)
				return tx.SendBatch(ctx, fin).Close()
			}
			if o.Status != StatusPending {
				return send(ctx, tx, closing, "stale") // forward only: a failure after payment changes nothing
			}
			status, note := StatusFailed, "payment failed at the channel"
			if ev.Type == channel.EventPaymentClosed {
				status, note = StatusClosed, "closed at the channel"
			}
			if ev.Reason != "" {
				note += ": " + ev.Reason
			}
			fin := &pgx.Batch{}
			s.queueFinish(fin, &o, status, "channel:"+chName, note)
			closing(fin, status)
			return tx.SendBatch(ctx, fin).Close()
		}
		return send(ctx, tx, closing, "ignored")
	})
}

// send sends a batch holding only the closing statements.
func send(ctx context.Context, tx pgx.Tx, closing func(*pgx.Batch, string), outcome string) error {
	fin := &pgx.Batch{}
	closing(fin, outcome)
	return tx.SendBatch(ctx, fin).Close()
}

// queueEvent records a notification with its outcome in one statement.
func queueEvent(b *pgx.Batch, chName string, ev channel.Event, objectID, userID, outcome string, at time.Time) {
	payload, _ := json.Marshal(ev) // an Event always encodes
	b.Queue(`
		INSERT INTO webhook_events (channel, event_key, type, object_id, outcome, user_id, payload, received_at)
		VALUES ($1, $2, $3, $4, $5, nullif($6, ''), $7, $8)
		ON CONFLICT (channel, event_key) DO NOTHING`,
		chName, ev.Key, string(ev.Type), objectID, outcome, userID, payload, at)
}

// finish moves a pending order to closed or failed.
func (s *Service) finish(ctx context.Context, tx pgx.Tx, o *Order, status, actor, note string) error {
	b := &pgx.Batch{}
	s.queueFinish(b, o, status, actor, note)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("close order %s: %w", o.ID, err)
	}
	return nil
}

func (s *Service) queueFinish(b *pgx.Batch, o *Order, status, actor, note string) {
	now := s.now().UTC()
	// A failed payment attempt leaves the order open at its channel, where
	// the payer may still pay it (another card, say): the worker goes on
	// querying it, and closes it there at its expiry, so that a payment
	// whose notification is lost is still found.
	var checkAfter *time.Time
	if status == StatusFailed {
		next := minTime(now.Add(s.cfg.QueryAfter), o.ExpiresAt)
		checkAfter = &next
	}
	b.Queue(`UPDATE orders SET status = $3, closed_at = $4, updated_at = $4, check_after = $5
		WHERE user_id = $1 AND id = $2`, o.UserID, o.ID, status, now, checkAfter)
	queueTimeline(b, s.newID(), o.UserID, o.ID, status, actor, note, now)
	o.Status, o.ClosedAt, o.UpdatedAt, o.CheckAfter = status, &now, now, checkAfter
}

// watched reports whether the pending-order worker still looks at an order
// in this status: one that can still be paid at its channel.
func watched(status string) bool { return status == StatusPending || status == StatusFailed }

// closeUnpaid records that an unpaid order is closed at its channel: a
// pending one closes here too; a failed one stays failed, and is no longer
// watched.
func (s *Service) closeUnpaid(ctx context.Context, tx pgx.Tx, o *Order, actor, note string) error {
	if o.Status == StatusPending {
		return s.finish(ctx, tx, o, StatusClosed, actor, note)
	}
	if o.CheckAfter == nil {
		return nil // its channel's own close notification came first
	}
	if !strings.HasPrefix(note, "closed at the channel") {
		note = "closed at the channel: " + note
	}
	b := &pgx.Batch{}
	s.queueUnwatch(b, o, actor, note)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("stop watching order %s: %w", o.ID, err)
	}
	return nil
}

// queueUnwatch ends the worker's watch of a failed order.
func (s *Service) queueUnwatch(b *pgx.Batch, o *Order, actor, note string) {
	now := s.now().UTC()
	b.Queue(`UPDATE orders SET check_after = NULL, updated_at = $3 WHERE user_id = $1 AND id = $2`, o.UserID, o.ID, now)
	queueTimeline(b, s.newID(), o.UserID, o.ID, o.Status, actor, note, now)
	o.UpdatedAt, o.CheckAfter = now, nil
}

// FlagExternalRefund marks an order whose payment the channel reports
// refunded before diamondd credited it (a refund made outside diamondd,
// e.g. from the merchant console, while the payment notification was lost):
// the money went back, so the order is not credited and support decides.
const FlagExternalRefund = "external_refund"

// trade is a channel transaction reported paid for an order.
type trade struct {
	no        string
	amountFen int64
	// refunded: the channel reports money of it returned since, in part or
	// in full; refundedFen is how much, when it says.
	refunded    bool
	refundedFen int64
}

// applyPayment records a channel trade against the locked order and credits
// the order if this trade pays it. The (channel, trade_no) key makes a
// repeated report of the same trade a no-op; the ledger's unique reference
// makes a second credit of the order impossible. closing, when set, adds the
// caller's last statements to the final round trip.
func (s *Service) applyPayment(ctx context.Context, tx pgx.Tx, o *Order, t trade, actor string,
	closing func(*pgx.Batch, string)) (string, error) {
	now := s.now().UTC()
	tradeNo, amountFen := t.no, t.amountFen
	uncredited := o.Status == StatusPending || o.Status == StatusClosed || o.Status == StatusFailed
	// A diamond is never created without a payment: a trade refunded before
	// it was credited buys nothing, nor does any payment of an order already
	// flagged so (the refund's notification can come before a redelivery of
	// the payment's). For a credited order it changes nothing (the trade is
	// known, or it is a second payment, refunded as such).
	external := uncredited && (t.refunded || slices.Contains(o.Flags, FlagExternalRefund))
	credit := amountFen == o.AmountFen && uncredited && !external

	// Record the trade; when it is to be credited, lock the wallet and read
	// what the risk rules need in the same round trip.
	inserted := false
	var bal ledger.Balance
	var recent []risk.Paid
	b := &pgx.Batch{}
	b.Queue(`
		INSERT INTO payments (user_id, channel, trade_no, order_id, amount_fen, outcome, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, channel, trade_no) DO NOTHING`,
		o.UserID, o.Channel, tradeNo, o.ID, amountFen, paymentOutcome(credit, external, uncredited), now).
		Exec(func(ct pgconn.CommandTag) error { inserted = ct.RowsAffected() == 1; return nil })
	if credit {
		th := s.cfg.Risk
		ledger.QueueLock(b, o.UserID, &bal)
		risk.QueueRecent(b, o.UserID, o.ID.String(), th.MedianSample, &recent)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return "", fmt.Errorf("record payment %s of %s: %w", tradeNo, o.ID, err)
	}
	fin := &pgx.Batch{}
	done := func(outcome string) (string, error) {
		if closing != nil {
			closing(fin, outcome)
		}
		if err := tx.SendBatch(ctx, fin).Close(); err != nil {
			return "", fmt.Errorf("apply payment %s of %s: %w", tradeNo, o.ID, err)
		}
		return outcome, nil
	}
	if !inserted {
		return done("duplicate_trade")
	}

	if external {
		refunded := "refunded at the channel"
		if t.refundedFen > 0 {
			refunded = fmt.Sprintf("%d fen of it refunded at the channel", t.refundedFen)
		}
		s.queueFlag(fin, o, FlagExternalRefund, now)
		note := fmt.Sprintf("trade %s paid %d fen, %s before it was credited: not credited, left to support",
			tradeNo, amountFen, refunded)
		queueTimeline(fin, s.newID(), o.UserID, o.ID, o.Status, actor, note, now)
		// Error level: money moved outside diamondd, and only a person can
		// tell whether the payer is owed anything.
		s.log.ErrorContext(ctx, "payment refunded at the channel before it was credited", "order", o.ID, "status", o.Status,
			"trade", tradeNo, "paid", amountFen, "refunded", t.refundedFen)
		return done(FlagExternalRefund)
	}

	if amountFen != o.AmountFen && uncredited {
		// Not credited: support decides what the payment buys. The order
		// still expires on time.
		s.queueFlag(fin, o, FlagAmountMismatch, now)
		note := fmt.Sprintf("trade %s paid %d fen for an order of %d fen: not credited, left to support", tradeNo, amountFen, o.AmountFen)
		queueTimeline(fin, s.newID(), o.UserID, o.ID, o.Status, actor, note, now)
		s.log.WarnContext(ctx, "payment amount mismatch", "order", o.ID, "trade", tradeNo, "paid", amountFen, "expected", o.AmountFen)
		return done(FlagAmountMismatch)
	}

	if !credit {
		// A second successful payment of a paid order, of any amount:
		// refund it in full, credit nothing.
		if s.refunder == nil {
			return "", errors.New("no refunder configured for duplicate payments")
		}
		refundID, err := s.refunder.RefundDuplicatePayment(ctx, tx, *o, tradeNo, amountFen)
		if err != nil {
			return "", fmt.Errorf("refund duplicate payment %s of %s: %w", tradeNo, o.ID, err)
		}
		fin.Queue(`UPDATE payments SET refund_id = $4 WHERE user_id = $1 AND channel = $2 AND trade_no = $3`,
			o.UserID, o.Channel, tradeNo, refundID)
		s.queueFlag(fin, o, FlagDuplicatePayment, now)
		note := fmt.Sprintf("second payment %s of %d fen: refunded in full by refund %s", tradeNo, amountFen, refundID)
		queueTimeline(fin, s.newID(), o.UserID, o.ID, o.Status, actor, note, now)
		return done("duplicate_payment")
	}

	// pending, or closed/failed: money received buys what it paid for.
	late := o.Status != StatusPending
	if late {
		o.Flags = appendFlag(o.Flags, FlagLatePayment)
	}
	a := risk.Assess(risk.Input{
		Order:  risk.Paid{OrderID: o.ID.String(), Channel: o.Channel, AmountFen: o.AmountFen, PaidAt: now},
		Minor:  o.Minor,
		Recent: recent,
	}, s.cfg.Risk)
	if a.Flags == nil {
		a.Flags = []risk.Flag{}
	}
	riskJSON, err := json.Marshal(a)
	if err != nil {
		return "", fmt.Errorf("encode risk of %s: %w", o.ID, err)
	}
	note := fmt.Sprintf("paid by %s trade %s; %d diamonds credited", o.Channel, tradeNo, o.Diamonds)
	outcome := "credited"
	if late {
		note += fmt.Sprintf(" (payment arrived after the order was %s)", o.Status)
		outcome = "credited_late"
	}
	fin.Queue(`
		WITH paid AS (
			UPDATE orders SET status = 'paid', trade_no = $3, paid_at = $4, updated_at = $4, flags = $5,
			                  risk = $6, risk_score = $7, check_after = NULL
			 WHERE user_id = $1 AND id = $2
		)
		INSERT INTO timeline (user_id, object_id, id, status, actor, note, at) VALUES ($1, $2, $8, 'paid', $9, $10, $4)`,
		o.UserID, o.ID, tradeNo, now, o.Flags, riskJSON, a.Score, s.newID(), actor, note)
	o.Status, o.TradeNo, o.PaidAt, o.UpdatedAt, o.Risk, o.RiskScore, o.CheckAfter = StatusPaid, &tradeNo, &now, now, riskJSON, a.Score, nil
	if closing != nil {
		closing(fin, outcome)
	}
	memo := fmt.Sprintf("%s trade %s", o.Channel, tradeNo)
	if _, err := s.ledger.CreditLocked(ctx, tx, bal, o.Channel, o.Diamonds, "recharge:"+o.ID.String(), memo, fin); err != nil {
		return "", fmt.Errorf("credit order %s: %w", o.ID, err)
	}
	return outcome, nil
}

// paymentOutcome is what a trade is recorded as.
func paymentOutcome(credit, external, uncredited bool) string {
	switch {
	case credit:
		return "credited"
	case external:
		return FlagExternalRefund
	case uncredited:
		return "amount_mismatch"
	}
	return "duplicate"
}

// FlagRefundedOutside marks an order whose money channel chName reports
// refunded by a refund diamondd did not make (from the merchant console):
// for support, who alone can tell what the user keeps, and so that a payment
// of it reported later is never credited. It reports false, changing
// nothing, for an order of another channel, which chName cannot speak for.
func (s *Service) FlagRefundedOutside(ctx context.Context, tx pgx.Tx, chName, userID string, orderID uuid.UUID, note string) (bool, error) {
	o, err := Lock(ctx, tx, userID, orderID)
	if err != nil || o.Channel != chName {
		return false, err
	}
	if slices.Contains(o.Flags, FlagExternalRefund) {
		return true, nil
	}
	now := s.now().UTC()
	b := &pgx.Batch{}
	s.queueFlag(b, &o, FlagExternalRefund, now)
	queueTimeline(b, s.newID(), o.UserID, o.ID, o.Status, "channel:"+chName, note, now)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, fmt.Errorf("flag order %s refunded outside: %w", orderID, err)
	}
	return true, nil
}

func (s *Service) queueFlag(b *pgx.Batch, o *Order, flag string, now time.Time) {
	o.Flags = appendFlag(o.Flags, flag)
	b.Queue(`UPDATE orders SET flags = $3, updated_at = $4 WHERE user_id = $1 AND id = $2`, o.UserID, o.ID, o.Flags, now)
}

func appendFlag(flags []string, f string) []string {
	if slices.Contains(flags, f) {
		return flags
	}
	return append(flags, f)
}

// Cancel closes a pending order at the user's request: first at the channel
// (outside any transaction), then here. If the channel says it was paid,
// the payment is credited instead and the cancel refused.
func (s *Service) Cancel(ctx context.Context, userID string, id uuid.UUID) (Order, error) {
	o, err := s.Get(ctx, userID, id)
	if err != nil {
		return Order{}, err
	}
	if o.Status != StatusPending {
		return Order{}, fault.New(fault.Conflict, "invalid_state", "only a pending order can be cancelled; this one is %s", o.Status)
	}
	if err := s.close(ctx, o, "user:"+userID, "cancelled by the user"); err != nil {
		return Order{}, err
	}
	o, err = s.Get(ctx, userID, id)
	if err != nil {
		return Order{}, err
	}
	if o.Status != StatusClosed {
		return Order{}, fault.New(fault.Conflict, "invalid_state", "the order could not be cancelled: it is %s", o.Status)
	}
	return o, nil
}

// close closes an order at its channel and then here, unless the channel
// reports it paid, in which case the payment is applied.
func (s *Service) close(ctx context.Context, o Order, actor, note string) error {
	ch, err := s.channels.Get(o.Channel)
	if err != nil {
		// Taken out of CHANNELS while it still had open orders: only the
		// channel can say whether they were paid, once it is back.
		s.log.ErrorContext(ctx, "the order's channel is not configured", "order", o.ID, "channel", o.Channel)
		return fault.New(fault.Unavailable, "channel_error", "the payment channel of this order is not available; try again later")
	}
	err = ch.ClosePayment(ctx, o.ID.String())
	if errors.Is(err, channel.ErrAlreadyPaid) {
		if err := s.reconcile(ctx, ch, o); err != nil {
			return err
		}
		// Paid, but with the wrong amount or refunded since: nothing was
		// credited, and the order closes like any other; the payment stays
		// with support.
		return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
			cur, err := Lock(ctx, tx, o.UserID, o.ID)
			if err != nil || !watched(cur.Status) {
				return err
			}
			switch {
			case slices.Contains(cur.Flags, FlagAmountMismatch):
				note += "; its payment of the wrong amount is left to support"
			case slices.Contains(cur.Flags, FlagExternalRefund):
				note += "; its payment, refunded at the channel, is left to support"
			default:
				return nil
			}
			return s.closeUnpaid(ctx, tx, &cur, actor, note)
		})
	}
	if err != nil {
		s.log.WarnContext(ctx, "close payment failed", "order", o.ID, "channel", o.Channel, "error", err)
		return fault.New(fault.Unavailable, "channel_error", "the payment channel did not answer; try again")
	}
	return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		cur, err := Lock(ctx, tx, o.UserID, o.ID)
		if err != nil || !watched(cur.Status) {
			return err // paid (or closed) meanwhile: nothing to close
		}
		return s.closeUnpaid(ctx, tx, &cur, actor, note)
	})
}

// reconcile asks the channel for the order's payment and applies what it
// says, under an event key of its own so that a later webhook for the same
// trade is recognised by the payment's natural key.
func (s *Service) reconcile(ctx context.Context, ch channel.Channel, o Order) error {
	st, err := ch.QueryPayment(ctx, o.ID.String())
	if err != nil {
		return fmt.Errorf("query payment of %s: %w", o.ID, err)
	}
	switch st.State {
	case channel.PaymentPaid, channel.PaymentRefunded:
		typ := channel.EventPaymentSucceeded
		if st.State == channel.PaymentRefunded {
			// Paid, and refunded while its notification was lost: recorded
			// and flagged, never credited.
			typ = channel.EventPaymentRefunded
		}
		return s.HandleEvent(ctx, o.Channel, channel.Event{Key: "query:" + st.TradeNo, Type: typ, OrderID: o.ID.String(),
			TradeNo: st.TradeNo, AmountFen: st.AmountFen, RefundedFen: st.RefundedFen, At: st.PaidAt})
	case channel.PaymentClosed:
		return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
			cur, err := Lock(ctx, tx, o.UserID, o.ID)
			if err != nil || !watched(cur.Status) {
				return err
			}
			return s.closeUnpaid(ctx, tx, &cur, "channel:"+o.Channel, "closed at the channel (found by query)")
		})
	}
	return nil
}

// pendingLease is how long a claimed order is left to the replica that
// claimed it before another may look at it: it covers one order's handling
// (30 s at most, see processPending) and the recording of its outcome. An
// order that expires sooner is then looked at again at its expiry.
const pendingLease = time.Minute

// ProcessPending looks at pending orders that are due: an expired one is
// closed at its channel (or credited, if the channel says it was paid), and
// one pending for a while is queried so a lost webhook still ends in a
// credit. Orders are claimed with a lease under SKIP LOCKED, so replicas
// share the work, and no channel is called inside a transaction. Each order
// is claimed again, as it stands then, right before its own channel call:
// with a slow channel a batch takes far longer than one lease, and an order
// late in it would otherwise be handled after another replica had taken it
// over.
func (s *Service) ProcessPending(ctx context.Context, batch int) (int, bool, error) {
	now := s.now().UTC()
	held := pendingLeaseFrom(now)
	rows, err := s.pool.Query(ctx, `
		WITH due AS (
			SELECT user_id AS due_user, id AS due_id FROM orders
			 WHERE check_after <= $1 AND status IN ('pending', 'failed')
			 ORDER BY check_after LIMIT $3 FOR UPDATE SKIP LOCKED
		)
		UPDATE orders SET check_after = $2 FROM due
		 WHERE user_id = due_user AND id = due_id
		RETURNING user_id, id`, now, held, batch)
	if err != nil {
		return 0, false, fmt.Errorf("claim pending orders: %w", err)
	}
	due, err := pgx.CollectRows(rows, pgx.RowToStructByPos[orderKey])
	if err != nil {
		return 0, false, fmt.Errorf("claim pending orders: %w", err)
	}
	var errs []error
	for _, k := range due {
		o, now, lease, ok, err := s.claimPending(ctx, k, held)
		if err == nil && ok {
			err = s.processPending(ctx, o, now, lease)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("order %s: %w", k.ID, err))
		}
	}
	return len(due), len(due) == batch, errors.Join(errs...)
}

type orderKey struct {
	UserID string
	ID     uuid.UUID
}

// pendingLeaseFrom is the end of a lease taken at now, as the database
// stores it.
func pendingLeaseFrom(now time.Time) time.Time { return postgres.Stamp(now.Add(pendingLease)) }

// claimPending takes an order's lease for its handling, at the time it
// returns, from the order as it stands now: still pending, and either due
// or still under the batch's lease (held). ok is false when it was paid or
// closed meanwhile, or when another replica took it over once the batch's
// lease ran out: that replica handles it.
func (s *Service) claimPending(ctx context.Context, k orderKey, held time.Time) (o Order, now, lease time.Time, ok bool, err error) {
	now = s.now().UTC()
	lease = pendingLeaseFrom(now)
	o, err = scanOrder(s.pool.QueryRow(ctx, `
		UPDATE orders SET check_after = $3
		 WHERE user_id = $1 AND id = $2 AND status IN ('pending', 'failed')
		   AND (check_after <= $4 OR check_after = $5)
		RETURNING `+orderColumns, k.UserID, k.ID, lease, now, held))
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, now, lease, false, nil
	}
	if err != nil {
		return Order{}, now, lease, false, fmt.Errorf("claim order %s: %w", k.ID, err)
	}
	return o, now, lease, true, nil
}

// processPending handles one claimed order, as claimed at now under lease.
// What the channel answers (paid, closed) is a fact whoever learns it, and
// is recorded under the order's row lock, so it needs no lease; only the
// rescheduling does. A panic in it (say, on a channel answer no one
// foresaw) is that order's error: the rest of the batch goes on, and the
// order keeps its lease, so it is not looked at again before the lease ends.
func (s *Service) processPending(ctx context.Context, o Order, now, lease time.Time) (err error) {
	defer recovery.Catch(&err)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !now.Before(o.ExpiresAt) {
		err := s.close(ctx, o, "system", "expired unpaid")
		if fe, ok := fault.As(err); ok && fe.Code == "channel_error" {
			return nil // the lease runs out and the next round tries again
		}
		return err
	}
	ch, err := s.channels.Get(o.Channel)
	if err != nil {
		return err
	}
	if err := s.reconcile(ctx, ch, o); err != nil {
		return err
	}
	if !o.ExpiresAt.Before(lease) {
		return nil
	}
	// Still pending, and it expires before the lease ends: look again at
	// its expiry rather than a lease later. Only now that the channel call
	// is done, so the whole lease covered it; and only if the lease is
	// still ours.
	_, err = s.pool.Exec(ctx, `UPDATE orders SET check_after = expires_at
		WHERE user_id = $1 AND id = $2 AND status IN ('pending', 'failed') AND check_after = $3`, o.UserID, o.ID, lease)
	if err != nil {
		return fmt.Errorf("reschedule order %s at its expiry: %w", o.ID, err)
	}
	return nil
}
