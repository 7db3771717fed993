package refund

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/recharge"
	"github.com/diamondd/diamondd/internal/recovery"
)

// submitLease is how long a claimed refund is left to the replica working on
// it before another may pick it up; a channel call (30 s at most) and the
// recording of its answer have to finish within it.
const submitLease = time.Minute

// Submit sends an approved refund to its channel now, outside any
// transaction, and records the answer. It is safe to call any number of
// times and from any replica: it acts only if it can take the refund's
// lease (see claim), and the refund id is the channel's idempotent refund
// number.
func (s *Service) Submit(ctx context.Context, userID string, id uuid.UUID) error {
	r, lease, ok, err := s.claim(ctx, userID, id, time.Time{})
	if err != nil || !ok {
		return err
	}
	return s.work(ctx, r, lease)
}

// ProcessDue submits approved refunds a crash or a channel error left
// behind and polls those the channel is still processing. Refunds are
// claimed with a lease under SKIP LOCKED so replicas share the work; each is
// claimed again, as it stands then, right before its own call.
func (s *Service) ProcessDue(ctx context.Context, batch int) (int, bool, error) {
	now := s.now().UTC()
	lease := leaseFrom(now)
	rows, err := s.pool.Query(ctx, `
		WITH due AS (
			SELECT user_id AS due_user, id AS due_id FROM refunds
			 WHERE status IN ('approved', 'processing') AND next_attempt_at <= $1
			 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED
		)
		UPDATE refunds SET next_attempt_at = $2 FROM due
		 WHERE user_id = due_user AND id = due_id
		RETURNING user_id, id`, now, lease, batch)
	if err != nil {
		return 0, false, fmt.Errorf("claim due refunds: %w", err)
	}
	type key struct {
		userID string
		id     uuid.UUID
	}
	due, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (key, error) {
		var k key
		return k, r.Scan(&k.userID, &k.id)
	})
	if err != nil {
		return 0, false, fmt.Errorf("claim due refunds: %w", err)
	}
	var errs []error
	for _, k := range due {
		if err := s.processDue(ctx, k.userID, k.id, lease); err != nil {
			errs = append(errs, fmt.Errorf("refund %s: %w", k.id, err))
		}
	}
	return len(due), len(due) == batch, errors.Join(errs...)
}

// processDue claims one refund of a batch claimed under lease and works on
// it. A panic in it is that refund's error: the rest of the batch goes on,
// and the refund keeps its lease, so it is not tried again before it ends.
func (s *Service) processDue(ctx context.Context, userID string, id uuid.UUID, lease time.Time) (err error) {
	defer recovery.Catch(&err)
	r, mine, ok, err := s.claim(ctx, userID, id, lease)
	if err != nil || !ok {
		return err
	}
	return s.work(ctx, r, mine)
}

// leaseFrom is the end of a lease taken at now, as the database stores it.
func leaseFrom(now time.Time) time.Time { return postgres.Stamp(now.Add(submitLease)) }

// claim takes a refund's lease for one channel call, from the refund as it
// stands now, never from an earlier read: a refund that ended meanwhile
// (refused and failed through another path, its hold released) must not be
// sent again, or the money could go out for a refund recorded as failed.
// The refund must still be live and either due or leased to the caller
// already (held, from ProcessDue's batch; zero for none). ok is false when
// it is final or another replica holds it, which then does the work.
func (s *Service) claim(ctx context.Context, userID string, id uuid.UUID, held time.Time) (Refund, time.Time, bool, error) {
	now := s.now().UTC()
	lease := leaseFrom(now)
	r, err := scanRefund(s.pool.QueryRow(ctx, `
		UPDATE refunds SET next_attempt_at = $3
		 WHERE user_id = $1 AND id = $2 AND status IN ('approved', 'processing')
		   AND (next_attempt_at <= $4 OR next_attempt_at = $5)
		RETURNING `+refundColumns, userID, id, lease, now, held))
	if errors.Is(err, pgx.ErrNoRows) {
		return Refund{}, time.Time{}, false, nil
	}
	if err != nil {
		return Refund{}, time.Time{}, false, fmt.Errorf("claim refund %s: %w", id, err)
	}
	return r, lease, true, nil
}

// work submits an approved refund or polls a processing one, under the lease
// claim took.
func (s *Service) work(ctx context.Context, r Refund, lease time.Time) error {
	ch, err := s.channels.Get(r.Channel)
	if err != nil {
		return fmt.Errorf("channel %s: %w", r.Channel, err)
	}
	if stopped, err := s.firstSubmission(ctx, r); err != nil || stopped {
		return err
	}
	o, err := s.recharges.Get(ctx, "", r.OrderID)
	if err != nil {
		return err
	}
	req := channel.RefundRequest{OrderID: r.OrderID.String(), TradeNo: r.TradeNo, RefundID: r.ID.String(),
		AmountFen: r.AmountFen, TotalFen: o.AmountFen, Reason: r.ReasonCode}
	if r.returnsPayment() {
		req.TotalFen = r.AmountFen // the duplicate payment is refunded whole
	}

	if inDB, ok := ch.(channel.InDatabase); ok {
		// The credit line is ours: restoring it and settling the refund
		// happen in one transaction.
		return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
			cur, o, err := s.lockForSettlement(ctx, tx, r.UserID, r.ID)
			if err != nil || (cur.Status != StatusApproved && cur.Status != StatusProcessing) {
				return err
			}
			if err := inDB.RefundInTx(ctx, tx, r.UserID, req); err != nil {
				return err
			}
			return s.settle(ctx, tx, &cur, o, channel.RefundStatus{State: channel.RefundSucceeded, ChannelRefundID: "mp-" + r.ID.String()},
				Actor{ID: r.Channel, Role: "channel"})
		})
	}

	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var st channel.RefundStatus
	if r.Status == StatusApproved {
		st, err = ch.Refund(callCtx, req)
	} else {
		st, err = ch.QueryRefund(callCtx, r.OrderID.String(), r.ID.String())
		if err == nil && st.State == channel.RefundNotFound {
			// The channel never saw it (a submission lost on the way):
			// submitting again is safe under the same refund number.
			st, err = ch.Refund(callCtx, req)
		}
	}
	if err != nil {
		// Outcome unknown: never treated as failed. Try again later with
		// the same refund number, backing off, unless the lease was lost.
		s.log.WarnContext(ctx, "refund call failed; will retry", "refund", r.ID, "channel", r.Channel, "error", err)
		_, uerr := s.pool.Exec(ctx, `UPDATE refunds SET attempts = attempts + 1, next_attempt_at = $3
			WHERE user_id = $1 AND id = $2 AND status IN ('approved', 'processing') AND next_attempt_at = $4`,
			r.UserID, r.ID, s.now().UTC().Add(backoff(r.Attempts+1)), lease)
		return uerr
	}
	return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		cur, o, err := s.lockForSettlement(ctx, tx, r.UserID, r.ID)
		if err != nil || (cur.Status != StatusApproved && cur.Status != StatusProcessing) {
			return err
		}
		if st.State != channel.RefundSucceeded {
			// Past the lease another replica may be calling the channel
			// for this refund; only a success is a fact whoever learns it.
			// A refusal acted on now could release the hold while the
			// other call pays out.
			var mine bool
			err := tx.QueryRow(ctx, `SELECT coalesce(next_attempt_at = $3, false) FROM refunds WHERE user_id = $1 AND id = $2`,
				r.UserID, r.ID, lease).Scan(&mine)
			if err != nil || !mine {
				return err
			}
		}
		return s.settle(ctx, tx, &cur, o, st, Actor{ID: r.Channel, Role: "channel"})
	})
}

// firstSubmission records, before the first call that may reach the
// channel, that the channel may now have the refund (submitted_at). Until
// then an unspent_only refund that holds diamonds is failed instead, if its
// user owes diamonds by now (an agent's allow_debt refund of another order
// settled since this one was accepted): those diamonds pay the debt first,
// as a recharge's would (end releases them, and a release repays debt
// first); sent, they would go back for money while the debt stayed. Once
// submitted, a refund is never stopped: a call may have reached the channel
// whatever became of its answer. A debt that arises after the mark waits
// for a recharge, as it does when a refund is already paid.
func (s *Service) firstSubmission(ctx context.Context, r Refund) (stopped bool, err error) {
	if r.Status != StatusApproved || r.submitted() {
		return false, nil
	}
	err = postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		stopped = false // the transaction may be run again
		cur, _, err := s.lockForSettlement(ctx, tx, r.UserID, r.ID)
		if err != nil || cur.Status != StatusApproved || cur.submitted() {
			return err
		}
		if cur.Clawback == ClawbackUnspentOnly && cur.Held > 0 {
			// Read, not locked: the wallet comes after sibling refunds in
			// the lock order, and end may lock those.
			var debt int64
			err := tx.QueryRow(ctx, `SELECT coalesce((SELECT debt FROM wallets WHERE user_id = $1), 0)`, r.UserID).Scan(&debt)
			if err != nil {
				return fmt.Errorf("read the debt of %s: %w", r.UserID, err)
			}
			if debt > 0 {
				stopped = true
				note := fmt.Sprintf("not sent to the channel: the user owes %d diamonds, which the %d held for this refund pay first",
					debt, cur.Held)
				return s.end(ctx, tx, &cur, StatusFailed, Actor{ID: "debt", Role: "system"}, note, nil)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE refunds SET submitted_at = $3 WHERE user_id = $1 AND id = $2`, r.UserID, r.ID, s.now().UTC())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("submit refund %s: %w", r.ID, err)
	}
	return stopped, nil
}

// submitted reports whether a call may have reached the channel: marked so,
// or, from a binary that did not mark it (a rolling deploy), a call made or
// answered.
func (r Refund) submitted() bool {
	return r.SubmittedAt != nil || r.Attempts > 0 || r.ChannelRefundID != nil
}

// lockForSettlement locks a refund's order, then the refund. Every
// settlement takes the order first, so one that reaches into a sibling
// refund's hold never waits on that sibling settling the other way round.
func (s *Service) lockForSettlement(ctx context.Context, tx pgx.Tx, userID string, id uuid.UUID) (Refund, recharge.Order, error) {
	var orderID uuid.UUID
	err := tx.QueryRow(ctx, `SELECT order_id FROM refunds WHERE user_id = $1 AND id = $2`, userID, id).Scan(&orderID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Refund{}, recharge.Order{}, errNotFound
	}
	if err != nil {
		return Refund{}, recharge.Order{}, fmt.Errorf("read refund %s: %w", id, err)
	}
	o, err := recharge.Lock(ctx, tx, userID, orderID)
	if err != nil {
		return Refund{}, recharge.Order{}, err
	}
	r, err := get(ctx, tx, userID, id, true)
	return r, o, err
}

type hold struct {
	id   uuid.UUID
	held int64
}

// liveHolds locks the order's other live refunds that hold diamonds, newest
// first (the order is locked already, so this never waits on a settlement).
func liveHolds(ctx context.Context, tx pgx.Tx, userID string, orderID, except uuid.UUID) ([]hold, error) {
	rows, err := tx.Query(ctx, `SELECT id, held FROM refunds
		WHERE user_id = $1 AND order_id = $2 AND id <> $3 AND clawback <> 'none' AND held > 0
		  AND status IN ('pending_review', 'approved', 'processing')
		ORDER BY id DESC FOR UPDATE`, userID, orderID, except)
	if err != nil {
		return nil, fmt.Errorf("holds of order %s: %w", orderID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (hold, error) {
		var h hold
		err := r.Scan(&h.id, &h.held)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("holds of order %s: %w", orderID, err)
	}
	return out, nil
}

// backoff grows from 5 s to 10 min.
func backoff(attempt int) time.Duration {
	d := 5 * time.Second << min(attempt, 7)
	return min(d, 10*time.Minute)
}

// HandleEvent applies a refund notification: recorded once under its event
// key, then the refund settles; an event for a refund already final is
// recorded and ignored.
func (s *Service) HandleEvent(ctx context.Context, chName string, ev channel.Event) error {
	return postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		fresh, err := recharge.RecordEvent(ctx, tx, chName, ev, ev.RefundID, s.now().UTC())
		if err != nil || !fresh {
			return err
		}
		outcome, userID, err := s.applyEvent(ctx, tx, chName, ev)
		if err != nil {
			return err
		}
		return recharge.SetEventOutcome(ctx, tx, chName, ev.Key, userID, outcome)
	})
}

func (s *Service) applyEvent(ctx context.Context, tx pgx.Tx, chName string, ev channel.Event) (string, string, error) {
	id, err := uuid.Parse(ev.RefundID)
	if err != nil {
		return s.unknownRefund(ctx, tx, chName, ev, ev.OrderID)
	}
	owner, err := s.owner(ctx, tx, "", id)
	if errors.Is(err, errNotFound) {
		return s.unknownRefund(ctx, tx, chName, ev, ev.OrderID)
	}
	if err != nil {
		return "", "", err
	}
	r, o, err := s.lockForSettlement(ctx, tx, owner, id)
	if errors.Is(err, errNotFound) {
		// The id is an order's: Alipay numbers a refund made without a
		// refund number (from the merchant console) after its order.
		return s.unknownRefund(ctx, tx, chName, ev, cmp.Or(ev.OrderID, ev.RefundID))
	}
	if err != nil {
		return "", "", err
	}
	if r.Channel != chName {
		return "wrong_channel", owner, nil
	}
	if r.Status != StatusApproved && r.Status != StatusProcessing {
		return "stale", owner, nil
	}
	// A verified notification that names another order, or less money than
	// this refund (for channels that report a cumulative amount, as Alipay
	// does, the total can only be larger), is a mix-up somewhere: it
	// settles nothing. The worker's query of the refund, which checks the
	// order, settles it instead.
	if (ev.OrderID != "" && ev.OrderID != r.OrderID.String()) ||
		(ev.Type == channel.EventRefundSucceeded && ev.AmountFen > 0 && ev.AmountFen < r.AmountFen) {
		s.log.ErrorContext(ctx, "refund notification does not match the refund; not applied",
			"channel", chName, "refund", r.ID, "order", r.OrderID, "event_order", ev.OrderID,
			"amount_fen", r.AmountFen, "event_amount_fen", ev.AmountFen)
		return "refund_mismatch", owner, nil
	}
	st := channel.RefundStatus{State: channel.RefundSucceeded, AmountFen: ev.AmountFen}
	if ev.Type == channel.EventRefundFailed {
		st = channel.RefundStatus{State: channel.RefundFailed, Reason: ev.Reason}
	}
	return string(st.State), owner, s.settle(ctx, tx, &r, o, st, Actor{ID: chName, Role: "channel"})
}

// unknownRefund answers a notification of a refund that is not ours, most
// likely made outside diamondd (the merchant console): it is recorded and
// acknowledged, since redelivering it changes nothing, and the order it
// names, if it is ours, is flagged for support (whose diamonds no one has
// taken back, or which must never be credited now) and logged.
func (s *Service) unknownRefund(ctx context.Context, tx pgx.Tx, chName string, ev channel.Event, orderID string) (string, string, error) {
	s.log.ErrorContext(ctx, "refund notification for a refund diamondd did not make",
		"channel", chName, "refund", ev.RefundID, "order", orderID, "type", ev.Type, "amount_fen", ev.AmountFen)
	oid, err := uuid.Parse(orderID)
	if err != nil || ev.Type != channel.EventRefundSucceeded {
		return "unknown_refund", "", nil
	}
	owner, err := recharge.Owner(ctx, tx, oid)
	if recharge.IsNotFound(err) {
		return "unknown_refund", "", nil
	}
	if err != nil {
		return "", "", err
	}
	note := fmt.Sprintf("%s reports a refund %s of %d fen that diamondd did not make: left to support", chName, ev.RefundID, ev.AmountFen)
	ours, err := s.recharges.FlagRefundedOutside(ctx, tx, chName, owner, oid, note)
	switch {
	case recharge.IsNotFound(err):
		return "unknown_refund", owner, nil // a refund's id, not an order's
	case err != nil:
		return "", "", err
	case !ours:
		return "wrong_channel", owner, nil
	}
	return "unknown_refund", owner, nil
}

// settle records what the channel said of a live refund, its order and the
// refund locked (see lockForSettlement).
func (s *Service) settle(ctx context.Context, tx pgx.Tx, r *Refund, o recharge.Order, st channel.RefundStatus, actor Actor) error {
	now := s.now().UTC()
	switch st.State {
	case channel.RefundProcessing:
		if r.Status == StatusProcessing {
			_, err := tx.Exec(ctx, `UPDATE refunds SET next_attempt_at = $3 WHERE user_id = $1 AND id = $2`,
				r.UserID, r.ID, now.Add(s.cfg.PollInterval))
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE refunds SET status = 'processing', channel_refund_id = nullif($3, ''),
			next_attempt_at = $4, updated_at = $5 WHERE user_id = $1 AND id = $2`,
			r.UserID, r.ID, st.ChannelRefundID, now.Add(s.cfg.PollInterval), now)
		if err != nil {
			return fmt.Errorf("mark refund %s processing: %w", r.ID, err)
		}
		r.Status = StatusProcessing
		return s.timeline(ctx, tx, *r, StatusProcessing, actor, "submitted to the channel")
	case channel.RefundSucceeded:
		return s.succeed(ctx, tx, r, o, st, actor, now)
	case channel.RefundFailed:
		note := "the channel refused the refund"
		if st.Reason != "" {
			note += ": " + st.Reason
		}
		if r.returnsPayment() {
			return s.retryRefused(ctx, tx, r, actor, note, now)
		}
		return s.end(ctx, tx, r, StatusFailed, actor, note, nil)
	}
	// not_found after a resubmission, or an unknown state: poll again later.
	_, err := tx.Exec(ctx, `UPDATE refunds SET next_attempt_at = $3 WHERE user_id = $1 AND id = $2`,
		r.UserID, r.ID, now.Add(s.cfg.PollInterval))
	return err
}

// retryRefused keeps the automatic refund of a second payment alive when the
// channel refuses it: that money bought nothing and must go back, and no one
// can ask for it again, so the refusal is shown to support (failure_reason,
// timeline) and the refund resubmitted with backoff instead of failing.
func (s *Service) retryRefused(ctx context.Context, tx pgx.Tx, r *Refund, actor Actor, note string, now time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE refunds SET status = 'approved', attempts = attempts + 1, failure_reason = $3,
		next_attempt_at = $4, updated_at = $5 WHERE user_id = $1 AND id = $2`,
		r.UserID, r.ID, note, now.Add(backoff(r.Attempts+1)), now)
	if err != nil {
		return fmt.Errorf("retry refund %s: %w", r.ID, err)
	}
	s.log.ErrorContext(ctx, "channel refused the refund of a duplicate payment; retrying", "refund", r.ID, "reason", note)
	if r.FailureReason != nil && *r.FailureReason == note {
		return nil // already on the timeline
	}
	r.Status, r.FailureReason = StatusApproved, &note
	return s.timeline(ctx, tx, *r, StatusApproved, actor, note+"; the refund will be submitted again")
}

func (s *Service) succeed(ctx context.Context, tx pgx.Tx, r *Refund, o recharge.Order, st channel.RefundStatus, actor Actor, now time.Time) error {
	take := r.Diamonds
	var settled ledger.Settlement
	if !r.returnsPayment() {
		// The clawback is decided now, against the refunds that actually
		// succeeded: the estimate held at acceptance counted siblings that
		// may since have been cancelled, rejected or failed.
		var doneAmount, doneDiamonds int64
		err := tx.QueryRow(ctx, `SELECT coalesce(sum(amount_fen), 0), coalesce(sum(diamonds), 0) FROM refunds
			WHERE user_id = $1 AND order_id = $2 AND id <> $3 AND status = 'succeeded' AND clawback <> 'none'`,
			r.UserID, r.OrderID, r.ID).Scan(&doneAmount, &doneDiamonds)
		if err != nil {
			return fmt.Errorf("sum settled refunds of %s: %w", r.OrderID, err)
		}
		take = clawback(o, live{amountFen: doneAmount, diamonds: doneDiamonds}, r.AmountFen)
		// Beyond its own hold, a refund first takes from the holds of the
		// order's other live refunds: those diamonds are this order's, held
		// for its refunds, not spent.
		siblings, err := liveHolds(ctx, tx, r.UserID, r.OrderID, r.ID)
		if err != nil {
			return err
		}
		// Only the growth of the clawback beyond the refund's own estimate
		// at acceptance is borrowed: a shortfall planned then follows this
		// refund's policy, never a sibling's (a write-off must not become
		// the debt of the user's own refund whose hold it took).
		var borrowable int64
		for _, h := range siblings {
			borrowable += h.held
		}
		borrowable = min(borrowable, max(take-r.Diamonds, 0))
		if r.Held > 0 || take > 0 {
			// Only an agent's allow_debt makes the user owe diamonds. A user
			// refund held all it was estimated to take; what it cannot find
			// now is the rounding of a clawback re-decided at settlement,
			// after siblings ended and their diamonds were spent.
			shortfall := ledger.ShortfallWriteOff
			if r.Clawback == ClawbackAllowDebt {
				shortfall = ledger.ShortfallDebt
			}
			settled, err = s.ledger.Settle(ctx, tx, r.UserID, r.Held, borrowable, take, shortfall, postRef(*r), "refund "+r.ID.String())
			if err != nil {
				return fmt.Errorf("settle refund %s: %w", r.ID, err)
			}
		}
		left := settled.FromOthers
		for _, h := range siblings {
			if left == 0 {
				break
			}
			x := min(left, h.held)
			left -= x
			if _, err := tx.Exec(ctx, `UPDATE refunds SET held = held - $3, diamonds = greatest(diamonds - $3, 0), updated_at = $4
				WHERE user_id = $1 AND id = $2`, r.UserID, h.id, x, now); err != nil {
				return fmt.Errorf("lower the hold of refund %s: %w", h.id, err)
			}
		}
	}
	r.Diamonds = take
	_, err := tx.Exec(ctx, `UPDATE refunds SET status = 'succeeded', diamonds = $5, channel_refund_id = coalesce(nullif($3, ''), channel_refund_id),
		next_attempt_at = NULL, updated_at = $4 WHERE user_id = $1 AND id = $2`, r.UserID, r.ID, st.ChannelRefundID, now, take)
	if err != nil {
		return fmt.Errorf("mark refund %s succeeded: %w", r.ID, err)
	}
	r.Status = StatusSucceeded
	note := fmt.Sprintf("refunded %d fen", r.AmountFen)
	if take > 0 {
		note += fmt.Sprintf("; %d diamonds taken back", take)
	}
	if settled.Released > 0 {
		note += fmt.Sprintf("; %d held diamonds returned", settled.Released)
		if settled.Repaid > 0 {
			note += fmt.Sprintf(" (%d of them paid debt)", settled.Repaid)
		}
	}
	if settled.FromOthers > 0 {
		note += fmt.Sprintf("; %d of them held by the order's other refunds", settled.FromOthers)
	}
	if settled.Shortfall > 0 {
		how := "written off"
		if r.Clawback == ClawbackAllowDebt {
			how = "now owed as debt"
		}
		note += fmt.Sprintf(" (%d already spent: %s)", settled.Shortfall, how)
	}
	if err := s.timeline(ctx, tx, *r, StatusSucceeded, actor, note); err != nil {
		return err
	}
	if r.returnsPayment() {
		return nil
	}
	// The order follows its refunds.
	var refunded, amount int64
	err = tx.QueryRow(ctx, `
		SELECT coalesce(sum(r.amount_fen), 0), o.amount_fen FROM orders o
		  LEFT JOIN refunds r ON r.user_id = o.user_id AND r.order_id = o.id AND r.status = 'succeeded' AND r.clawback <> 'none'
		 WHERE o.user_id = $1 AND o.id = $2 GROUP BY o.amount_fen`, r.UserID, r.OrderID).Scan(&refunded, &amount)
	if err != nil {
		return fmt.Errorf("sum refunds of order %s: %w", r.OrderID, err)
	}
	status := recharge.StatusPartiallyRefunded
	if refunded >= amount {
		status = recharge.StatusRefunded
	}
	if _, err := tx.Exec(ctx, `UPDATE orders SET status = $3, updated_at = $4 WHERE user_id = $1 AND id = $2 AND status <> $3`,
		r.UserID, r.OrderID, status, now); err != nil {
		return fmt.Errorf("update order %s: %w", r.OrderID, err)
	}
	return recharge.AddTimeline(ctx, tx, s.newID(), r.UserID, r.OrderID, status, actor.label(),
		fmt.Sprintf("refund %s of %d fen succeeded (%d of %d fen refunded)", r.ID, r.AmountFen, refunded, amount), now)
}
