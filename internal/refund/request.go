package refund

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/recharge"
)

// Request asks for a refund of an order.
type Request struct {
	OrderID     uuid.UUID
	AmountFen   *int64 // nil: all that is still refundable
	ReasonCode  string
	Description string
	Evidence    []Evidence
	// Agent-initiated refunds only:
	UserID   string
	Clawback string
}

// live is what an order's refunds that still count add up to.
type live struct{ amountFen, diamonds int64 }

// liveSums adds up the order's refunds still in play (or done), but for
// those in except.
func liveSums(ctx context.Context, tx pgx.Tx, userID string, orderID uuid.UUID, except ...uuid.UUID) (live, error) {
	var l live
	if except == nil {
		except = []uuid.UUID{} // nil would be a NULL array, which excludes every row
	}
	err := tx.QueryRow(ctx, `
		SELECT coalesce(sum(amount_fen), 0), coalesce(sum(diamonds), 0) FROM refunds
		 WHERE user_id = $1 AND order_id = $2 AND id <> ALL($3) AND clawback <> 'none'
		   AND status NOT IN ('failed', 'rejected', 'cancelled')`, userID, orderID, except).Scan(&l.amountFen, &l.diamonds)
	if err != nil {
		return l, fmt.Errorf("sum refunds of %s: %w", orderID, err)
	}
	return l, nil
}

// clawback is the diamonds a refund of amount takes back, given what the
// order's other refunds add up to: proportional to the money, rounded up,
// never more than the order credited over all its refunds, and the refund
// that completes the order takes exactly what is left. At acceptance the
// others are every refund still in play (an estimate, for the hold); at
// settlement, only those that succeeded (final).
func clawback(o recharge.Order, l live, amount int64) int64 {
	left := o.Diamonds - l.diamonds
	if l.amountFen+amount == o.AmountFen {
		return max(left, 0)
	}
	d := (amount*o.Diamonds + o.AmountFen - 1) / o.AmountFen
	return max(min(d, left), 0)
}

// maxRefundable is the largest amount whose clawback fits in available.
func maxRefundable(o recharge.Order, l live, available int64) int64 {
	remaining := o.AmountFen - l.amountFen
	if clawback(o, l, remaining) <= available {
		return remaining
	}
	return min(available*o.AmountFen/o.Diamonds, remaining)
}

// checkEvidence refuses a link support's tools could not safely open: evidence
// of kind url must be an absolute http or https URL (not javascript: or
// data:, which a support page might otherwise render as a live link).
func checkEvidence(ev []Evidence) error {
	for i, e := range ev {
		if e.Kind != "url" {
			continue
		}
		u, err := url.Parse(e.Value)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fault.New(fault.Invalid, "validation_failed", "evidence %d: a url must be an absolute http or https URL", i)
		}
	}
	return nil
}

// Create records a refund request in the caller's transaction: a user's own
// (unspent diamonds only, maybe auto-approved) or an agent's (any clawback
// policy, always reviewed by a second agent). The order is locked, so
// concurrent requests on one order are decided one at a time.
func (s *Service) Create(ctx context.Context, tx pgx.Tx, actor Actor, req Request) (Refund, error) {
	if err := checkEvidence(req.Evidence); err != nil {
		return Refund{}, err
	}
	agent := actor.Role == "support" || actor.Role == "support_lead"
	owner, err := recharge.Owner(ctx, tx, req.OrderID)
	if recharge.IsNotFound(err) {
		return Refund{}, fault.New(fault.NotFound, "not_found", "no such recharge order")
	}
	if err != nil {
		return Refund{}, err
	}
	if (!agent && owner != actor.ID) || (agent && owner != req.UserID) {
		return Refund{}, fault.New(fault.NotFound, "not_found", "no such recharge order")
	}
	o, err := recharge.Lock(ctx, tx, owner, req.OrderID)
	if err != nil {
		return Refund{}, err
	}
	switch o.Status {
	case recharge.StatusPaid, recharge.StatusPartiallyRefunded:
	case recharge.StatusRefunded:
		// nothing left: the sum rule of API.md answers it (refund_exceeds_order, below)
	default:
		// API.md names no code of its own for this: its code for a state
		// that does not allow an action
		return Refund{}, fault.New(fault.Conflict, "invalid_state", "only a paid order can be refunded; this one is %s", o.Status)
	}
	l, err := liveSums(ctx, tx, owner, o.ID)
	if err != nil {
		return Refund{}, err
	}
	remaining := o.AmountFen - l.amountFen
	amount := remaining
	if req.AmountFen != nil {
		amount = *req.AmountFen
	}
	if remaining <= 0 || amount > remaining {
		return Refund{}, fault.New(fault.Conflict, "refund_exceeds_order",
			"the order has %d fen left to refund", max(remaining, 0)).With("max_refundable_fen", max(remaining, 0))
	}
	diamonds := clawback(o, l, amount)

	policy := ClawbackUnspentOnly
	if agent && req.Clawback != "" {
		policy = req.Clawback
	}
	bal, err := s.ledger.Lock(ctx, tx, owner)
	if err != nil {
		return Refund{}, err
	}
	held := diamonds
	if bal.Available < diamonds {
		if policy == ClawbackUnspentOnly {
			return Refund{}, fault.New(fault.Conflict, "diamonds_already_spent",
				"%d diamonds would be taken back but only %d are available", diamonds, bal.Available).
				With("max_refundable_fen", maxRefundable(o, l, bal.Available))
		}
		held = bal.Available
	}

	now := s.now().UTC()
	r := Refund{
		ID: s.newID(), UserID: owner, OrderID: o.ID, Channel: o.Channel, TradeNo: deref(o.TradeNo),
		Kind: KindUser, Status: StatusPendingReview, AmountFen: amount, Diamonds: diamonds, Held: held,
		Clawback: policy, ReasonCode: req.ReasonCode, Description: req.Description, Evidence: req.Evidence,
		CreatedBy: actor.ID, CreatedByRole: actor.Role, CreatedAt: now, UpdatedAt: now,
	}
	if r.Evidence == nil {
		r.Evidence = []Evidence{}
	}
	if agent {
		r.Kind = KindAgent
	}
	if req.ReasonCode == "minor_recharge" && o.Minor {
		r.Priority = 1 // a minor's recharge goes to the top of the queue
	}
	note := "refund requested"
	fast, why := s.fastPath(o, r, l.amountFen+amount, bal.Available, now)
	if !agent && fast {
		r.Status, r.AutoApproved = StatusApproved, true
		system := "system"
		r.DecidedBy = &system
		note = "auto-approved: " + why
	} else {
		deadline := now.Add(s.cfg.SLA)
		r.SLADeadline = &deadline
		if agent {
			note = fmt.Sprintf("refund opened by %s with clawback %s; another agent must approve it", actor.ID, policy)
		} else if why != "" {
			note = "sent to review: " + why
		}
	}
	if err := s.insert(ctx, tx, r); err != nil {
		return Refund{}, err
	}
	if held > 0 {
		if _, err := s.ledger.Hold(ctx, tx, owner, held, holdRef(r), "refund "+r.ID.String()); err != nil {
			return Refund{}, fmt.Errorf("hold diamonds for refund %s: %w", r.ID, err)
		}
	}
	if err := s.timeline(ctx, tx, r, StatusPendingReview, actor, note); err != nil {
		return Refund{}, err
	}
	if r.Status == StatusApproved {
		if err := s.timeline(ctx, tx, r, StatusApproved, Actor{ID: "auto-approval", Role: "system"}, note); err != nil {
			return Refund{}, err
		}
	}
	if agent {
		if err := s.audit(ctx, tx, actor, "refund.create", "refund", r.ID.String(), owner, "", r.Status, req.Description); err != nil {
			return Refund{}, err
		}
	}
	return r, nil
}

// fastPath decides auto-approval: a flagged (accidental) order, within the
// window of its payment, diamonds unspent, below the review threshold.
// orderTotal is what the order's refunds in play add up to with this one: the
// threshold applies to it, so splitting a refund does not avoid review.
func (s *Service) fastPath(o recharge.Order, r Refund, orderTotal, available int64, now time.Time) (bool, string) {
	switch {
	case o.RiskScore <= 0:
		return false, ""
	case o.PaidAt == nil || now.Sub(*o.PaidAt) > s.cfg.FastWindow:
		return false, fmt.Sprintf("requested more than %s after payment", s.cfg.FastWindow)
	case orderTotal >= s.cfg.ReviewThresholdFen:
		return false, fmt.Sprintf("the order's refunds reach the review threshold of %d fen", s.cfg.ReviewThresholdFen)
	case r.Diamonds > available:
		return false, "diamonds already spent"
	}
	var flags struct {
		Flags []struct {
			Code string `json:"code"`
		} `json:"flags"`
	}
	_ = json.Unmarshal(o.Risk, &flags)
	codes := ""
	for i, f := range flags.Flags {
		if i > 0 {
			codes += ", "
		}
		codes += f.Code
	}
	return true, fmt.Sprintf("the order was flagged as an accidental recharge (%s), the request came within %s of payment, the diamonds are unspent and the amount is below %d fen",
		codes, s.cfg.FastWindow, s.cfg.ReviewThresholdFen)
}

func holdRef(r Refund) string    { return fmt.Sprintf("refund-hold:%s:%d", r.ID, r.Resubmissions) }
func releaseRef(r Refund) string { return fmt.Sprintf("refund-release:%s:%d", r.ID, r.Resubmissions) }
func postRef(r Refund) string    { return "refund-post:" + r.ID.String() }

func (s *Service) insert(ctx context.Context, tx pgx.Tx, r Refund) error {
	evidence, err := json.Marshal(r.Evidence)
	if err != nil {
		return fmt.Errorf("encode evidence: %w", err)
	}
	var next *time.Time
	if r.Status == StatusApproved {
		next = &r.CreatedAt
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO owners (object_id, user_id) VALUES ($1, $2)`, r.ID, r.UserID)
	b.Queue(`INSERT INTO refunds (user_id, id, order_id, channel, trade_no, kind, status, amount_fen, diamonds, held,
		clawback, reason_code, description, evidence, priority, created_by, created_by_role, decided_by, auto_approved,
		sla_deadline, next_attempt_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $22)`,
		r.UserID, r.ID, r.OrderID, r.Channel, r.TradeNo, r.Kind, r.Status, r.AmountFen, r.Diamonds, r.Held,
		r.Clawback, r.ReasonCode, r.Description, evidence, r.Priority, r.CreatedBy, r.CreatedByRole, r.DecidedBy,
		r.AutoApproved, r.SLADeadline, next, r.CreatedAt)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("insert refund %s: %w", r.ID, err)
	}
	return nil
}

// RefundDuplicatePayment refunds a second payment of a paid order in full:
// approved at once, nothing clawed back (it bought nothing), submitted to
// the channel by the refund worker.
func (s *Service) RefundDuplicatePayment(ctx context.Context, tx pgx.Tx, o recharge.Order, tradeNo string, amountFen int64) (uuid.UUID, error) {
	now := s.now().UTC()
	system := "system"
	r := Refund{
		ID: s.newID(), UserID: o.UserID, OrderID: o.ID, Channel: o.Channel, TradeNo: tradeNo,
		Kind: KindDuplicatePayment, Status: StatusApproved, AmountFen: amountFen, Clawback: ClawbackNone,
		ReasonCode: "duplicate_charge", Description: "automatic refund of a second payment of a paid order",
		Evidence: []Evidence{}, CreatedBy: "system", CreatedByRole: "system", DecidedBy: &system,
		AutoApproved: true, CreatedAt: now, UpdatedAt: now,
	}
	if err := s.insert(ctx, tx, r); err != nil {
		return uuid.Nil, err
	}
	return r.ID, s.timeline(ctx, tx, r, StatusApproved, Actor{ID: "duplicate-payment", Role: "system"},
		fmt.Sprintf("second payment %s of order %s refunded automatically", tradeNo, o.ID))
}

// ReturnPayment gives back in full a payment of the wrong amount, which was
// never credited and so bought nothing: support's decision on an order
// flagged amount_mismatch. It goes the way of a second payment's automatic
// refund (nothing clawed back, submitted and retried by the refund worker)
// and is audited.
func (s *Service) ReturnPayment(ctx context.Context, tx pgx.Tx, actor Actor, orderID uuid.UUID, tradeNo, note string) (Refund, error) {
	owner, err := recharge.Owner(ctx, tx, orderID)
	if recharge.IsNotFound(err) {
		return Refund{}, fault.New(fault.NotFound, "not_found", "no such recharge order")
	}
	if err != nil {
		return Refund{}, err
	}
	o, err := recharge.Lock(ctx, tx, owner, orderID)
	if err != nil {
		return Refund{}, err
	}
	var amount int64
	var outcome string
	var returned *uuid.UUID
	err = tx.QueryRow(ctx, `SELECT amount_fen, outcome, refund_id FROM payments
		WHERE user_id = $1 AND channel = $2 AND trade_no = $3 AND order_id = $4 FOR UPDATE`,
		owner, o.Channel, tradeNo, o.ID).Scan(&amount, &outcome, &returned)
	if errors.Is(err, pgx.ErrNoRows) {
		return Refund{}, fault.New(fault.NotFound, "not_found", "order %s has no payment %q", o.ID, tradeNo)
	}
	if err != nil {
		return Refund{}, fmt.Errorf("read payment %s: %w", tradeNo, err)
	}
	switch {
	case returned != nil:
		return Refund{}, invalidState("payment %s is already being returned by refund %s", tradeNo, *returned)
	case outcome != "amount_mismatch":
		return Refund{}, invalidState("only a payment of the wrong amount is returned this way; payment %s was %s", tradeNo, outcome)
	}
	now := s.now().UTC()
	r := Refund{
		ID: s.newID(), UserID: owner, OrderID: o.ID, Channel: o.Channel, TradeNo: tradeNo,
		Kind: KindPaymentReturn, Status: StatusApproved, AmountFen: amount, Clawback: ClawbackNone,
		ReasonCode: "other", Description: "return of a payment of the wrong amount: " + note,
		Evidence: []Evidence{}, CreatedBy: actor.ID, CreatedByRole: actor.Role, DecidedBy: &actor.ID,
		CreatedAt: now, UpdatedAt: now,
	}
	if err := s.insert(ctx, tx, r); err != nil {
		return Refund{}, err
	}
	if _, err := tx.Exec(ctx, `UPDATE payments SET refund_id = $4 WHERE user_id = $1 AND channel = $2 AND trade_no = $3`,
		owner, o.Channel, tradeNo, r.ID); err != nil {
		return Refund{}, fmt.Errorf("mark payment %s returned: %w", tradeNo, err)
	}
	if err := s.timeline(ctx, tx, r, StatusApproved, actor,
		fmt.Sprintf("payment %s of %d fen (order of %d fen) returned in full: %s", tradeNo, amount, o.AmountFen, note)); err != nil {
		return Refund{}, err
	}
	return r, s.audit(ctx, tx, actor, "payment.return", "refund", r.ID.String(), owner, "", StatusApproved,
		fmt.Sprintf("order %s payment %s: %s", o.ID, tradeNo, note))
}

// Approve approves a refund in review. Nobody approves a refund they opened,
// and at or above the review threshold only a lead may.
func (s *Service) Approve(ctx context.Context, tx pgx.Tx, actor Actor, id uuid.UUID, note string) (Refund, error) {
	r, err := s.lockForSupport(ctx, tx, id)
	if err != nil {
		return Refund{}, err
	}
	if r.Status != StatusPendingReview {
		return Refund{}, invalidState("only a refund in review can be approved; this one is %s", r.Status)
	}
	if r.CreatedBy == actor.ID {
		return Refund{}, fault.New(fault.Forbidden, "four_eyes_required", "a refund must be approved by someone other than who opened it")
	}
	if actor.Role != "support_lead" {
		// The threshold is on the order's refunds together, so splitting a
		// refund does not avoid the lead.
		others, err := liveSums(ctx, tx, r.UserID, r.OrderID, r.ID)
		if err != nil {
			return Refund{}, err
		}
		if others.amountFen+r.AmountFen >= s.cfg.ReviewThresholdFen {
			return Refund{}, fault.New(fault.Forbidden, "lead_approval_required",
				"refunds of an order reaching %d fen need a support lead's approval", s.cfg.ReviewThresholdFen)
		}
	}
	now := s.now().UTC()
	_, err = tx.Exec(ctx, `UPDATE refunds SET status = 'approved', decided_by = $3, next_attempt_at = $4, updated_at = $4
		WHERE user_id = $1 AND id = $2`, r.UserID, r.ID, actor.ID, now)
	if err != nil {
		return Refund{}, fmt.Errorf("approve refund %s: %w", r.ID, err)
	}
	if err := s.timeline(ctx, tx, r, StatusApproved, actor, note); err != nil {
		return Refund{}, err
	}
	if err := s.audit(ctx, tx, actor, "refund.approve", "refund", r.ID.String(), r.UserID, r.Status, StatusApproved, note); err != nil {
		return Refund{}, err
	}
	r.Status, r.DecidedBy, r.UpdatedAt = StatusApproved, &actor.ID, now
	return r, nil
}

// Reject rejects a refund in review and returns its held diamonds.
func (s *Service) Reject(ctx context.Context, tx pgx.Tx, actor Actor, id uuid.UUID, note, reasonCode string) (Refund, error) {
	owner, err := s.owner(ctx, tx, "", id)
	if err != nil {
		return Refund{}, err
	}
	r, _, err := s.lockForSettlement(ctx, tx, owner, id) // the order first: end may top up its other refunds
	if err != nil {
		return Refund{}, err
	}
	if r.Status != StatusPendingReview {
		return Refund{}, invalidState("only a refund in review can be rejected; this one is %s", r.Status)
	}
	if err := s.end(ctx, tx, &r, StatusRejected, actor, fmt.Sprintf("rejected (%s): %s", reasonCode, note), &actor.ID); err != nil {
		return Refund{}, err
	}
	if err := s.audit(ctx, tx, actor, "refund.reject", "refund", r.ID.String(), r.UserID, StatusPendingReview, StatusRejected,
		reasonCode+": "+note); err != nil {
		return Refund{}, err
	}
	return r, nil
}

// Cancel withdraws a user's own refund still in review.
func (s *Service) Cancel(ctx context.Context, tx pgx.Tx, actor Actor, id uuid.UUID) (Refund, error) {
	owner, err := s.owner(ctx, tx, actor.ID, id)
	if err != nil {
		return Refund{}, err
	}
	r, _, err := s.lockForSettlement(ctx, tx, owner, id) // the order first: end may top up its other refunds
	if err != nil {
		return Refund{}, err
	}
	if r.Status != StatusPendingReview {
		return Refund{}, invalidState("only a refund in review can be cancelled; this one is %s", r.Status)
	}
	return r, s.end(ctx, tx, &r, StatusCancelled, actor, "withdrawn by the user", nil)
}

// end moves a refund to a final status that gives its held diamonds back,
// its order and the refund locked (see lockForSettlement). The order's other
// live refunds are first held up to what they are now estimated to take
// without this one; only the rest is released.
func (s *Service) end(ctx context.Context, tx pgx.Tx, r *Refund, status string, actor Actor, note string, decidedBy *string) error {
	release := r.Held
	if release > 0 && r.Clawback != ClawbackNone {
		given, err := s.topUpSiblings(ctx, tx, r)
		if err != nil {
			return err
		}
		release -= given
		if given > 0 {
			note += fmt.Sprintf("; %d of its held diamonds now held for the order's other refunds", given)
		}
	}
	if release > 0 {
		if _, err := s.ledger.Release(ctx, tx, r.UserID, release, releaseRef(*r), "refund "+r.ID.String()+" "+status); err != nil {
			return fmt.Errorf("release diamonds of refund %s: %w", r.ID, err)
		}
	}
	now := s.now().UTC()
	_, err := tx.Exec(ctx, `UPDATE refunds SET status = $3, decided_by = coalesce($4, decided_by), next_attempt_at = NULL,
		failure_reason = CASE WHEN $3 = 'failed' THEN $5 ELSE failure_reason END, updated_at = $6
		WHERE user_id = $1 AND id = $2`, r.UserID, r.ID, status, decidedBy, note, now)
	if err != nil {
		return fmt.Errorf("end refund %s: %w", r.ID, err)
	}
	r.Status, r.UpdatedAt = status, now
	if decidedBy != nil {
		r.DecidedBy = decidedBy
	}
	return s.timeline(ctx, tx, *r, status, actor, note)
}

// AddEvidence adds evidence to a user's refund in review, or returns a
// rejected one to review (at most MaxResubmissions times), holding its
// diamonds again.
func (s *Service) AddEvidence(ctx context.Context, tx pgx.Tx, actor Actor, id uuid.UUID, ev []Evidence) (Refund, error) {
	if err := checkEvidence(ev); err != nil {
		return Refund{}, err
	}
	owner, err := s.owner(ctx, tx, actor.ID, id)
	if err != nil {
		return Refund{}, err
	}
	r, _, err := s.lockForSettlement(ctx, tx, owner, id) // the order first, as every path that may reopen or end it
	if err != nil {
		return Refund{}, err
	}
	now := s.now().UTC()
	switch r.Status {
	case StatusPendingReview:
	case StatusRejected:
		if r.Resubmissions >= s.cfg.MaxResubmissions {
			return Refund{}, invalidState("this refund was already returned to review %d times", r.Resubmissions)
		}
		if err := s.reopen(ctx, tx, &r, now); err != nil {
			return Refund{}, err
		}
	default:
		return Refund{}, invalidState("evidence can be added only to a refund in review or rejected; this one is %s", r.Status)
	}
	r.Evidence = append(r.Evidence, ev...)
	evidence, _ := json.Marshal(r.Evidence)
	if _, err := tx.Exec(ctx, `UPDATE refunds SET evidence = $3, updated_at = $4 WHERE user_id = $1 AND id = $2`,
		r.UserID, r.ID, evidence, now); err != nil {
		return Refund{}, fmt.Errorf("add evidence to %s: %w", r.ID, err)
	}
	r.UpdatedAt = now
	return r, s.timeline(ctx, tx, r, r.Status, actor, fmt.Sprintf("%d piece(s) of evidence added", len(ev)))
}

// reopen returns a rejected refund to review: the order is locked again, the
// refund must still fit in it, and its diamonds must still be unspent.
func (s *Service) reopen(ctx context.Context, tx pgx.Tx, r *Refund, now time.Time) error {
	o, err := recharge.Lock(ctx, tx, r.UserID, r.OrderID)
	if err != nil {
		return err
	}
	l, err := liveSums(ctx, tx, r.UserID, r.OrderID, r.ID)
	if err != nil {
		return err
	}
	if l.amountFen+r.AmountFen > o.AmountFen || o.Status == recharge.StatusRefunded {
		return fault.New(fault.Conflict, "refund_exceeds_order", "the order has %d fen left to refund", max(o.AmountFen-l.amountFen, 0)).
			With("max_refundable_fen", max(o.AmountFen-l.amountFen, 0))
	}
	// The clawback is estimated again against the refunds that count now.
	r.Diamonds = clawback(o, l, r.AmountFen)
	bal, err := s.ledger.Lock(ctx, tx, r.UserID)
	if err != nil {
		return err
	}
	held := r.Diamonds
	if bal.Available < r.Diamonds {
		if r.Clawback == ClawbackUnspentOnly {
			return fault.New(fault.Conflict, "diamonds_already_spent", "%d diamonds would be taken back but only %d are available",
				r.Diamonds, bal.Available).With("max_refundable_fen", maxRefundable(o, l, bal.Available))
		}
		held = bal.Available
	}
	r.Resubmissions++
	r.Held = held
	if held > 0 {
		if _, err := s.ledger.Hold(ctx, tx, r.UserID, held, holdRef(*r), "refund "+r.ID.String()+" back in review"); err != nil {
			return fmt.Errorf("hold diamonds for refund %s: %w", r.ID, err)
		}
	}
	deadline := now.Add(s.cfg.SLA)
	r.Status, r.SLADeadline = StatusPendingReview, &deadline
	_, err = tx.Exec(ctx, `UPDATE refunds SET status = 'pending_review', resubmissions = $3, held = $4, sla_deadline = $5,
		decided_by = NULL, diamonds = $7, updated_at = $6 WHERE user_id = $1 AND id = $2`, r.UserID, r.ID, r.Resubmissions, held, deadline, now, r.Diamonds)
	if err != nil {
		return fmt.Errorf("reopen refund %s: %w", r.ID, err)
	}
	return s.timeline(ctx, tx, *r, StatusPendingReview, Actor{ID: r.UserID, Role: "user"}, "returned to review with new evidence")
}

// topUpSiblings passes diamonds held by r, which is ending, to the order's
// other live refunds, each up to its clawback estimated again without r, and
// returns how many it passed: they stay held, for the same order. Without
// it a refund holding "what is left" of an order would, once its siblings
// end and their diamonds are spent, find its larger share missing at
// settlement, and the user could make the platform write that off.
func (s *Service) topUpSiblings(ctx context.Context, tx pgx.Tx, r *Refund) (int64, error) {
	o, err := recharge.Lock(ctx, tx, r.UserID, r.OrderID) // already locked: a read
	if err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `SELECT id, amount_fen, held, diamonds, clawback FROM refunds
		WHERE user_id = $1 AND order_id = $2 AND id <> $3 AND clawback <> 'none'
		  AND status IN ('pending_review', 'approved', 'processing')
		ORDER BY id FOR UPDATE`, r.UserID, r.OrderID, r.ID)
	if err != nil {
		return 0, fmt.Errorf("live refunds of %s: %w", r.OrderID, err)
	}
	type sibling struct {
		id                     uuid.UUID
		amount, held, diamonds int64
		clawback               string
	}
	siblings, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (sibling, error) {
		var x sibling
		return x, row.Scan(&x.id, &x.amount, &x.held, &x.diamonds, &x.clawback)
	})
	if err != nil {
		return 0, fmt.Errorf("live refunds of %s: %w", r.OrderID, err)
	}
	left := r.Held
	for _, x := range siblings {
		if left == 0 {
			break
		}
		others, err := liveSums(ctx, tx, r.UserID, r.OrderID, r.ID, x.id)
		if err != nil {
			return 0, err
		}
		estimate := clawback(o, others, x.amount)
		need := estimate - x.held
		if x.clawback != ClawbackUnspentOnly {
			// An agent's refund planned its shortfall at acceptance
			// (held < diamonds): that follows its own policy, as at
			// settlement, so only the growth of its estimate is passed.
			need = estimate - x.diamonds
		}
		top := min(max(need, 0), left)
		if top == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE refunds SET held = held + $3, diamonds = greatest(diamonds, $4), updated_at = $5
			WHERE user_id = $1 AND id = $2`, r.UserID, x.id, top, estimate, s.now().UTC()); err != nil {
			return 0, fmt.Errorf("raise the hold of refund %s: %w", x.id, err)
		}
		left -= top
	}
	return r.Held - left, nil
}

func (s *Service) lockForSupport(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Refund, error) {
	owner, err := s.owner(ctx, tx, "", id)
	if err != nil {
		return Refund{}, err
	}
	return get(ctx, tx, owner, id, true)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
