// Package monthlypay is the monthly credit-line channel: a support lead
// opens a line (limit, status) for a user, payments raise its use at once
// inside the order's transaction, and refunds lower it again.
package monthlypay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Name is the channel's name.
const Name = "monthly_pay"

// Line is a user's credit line.
type Line struct {
	UserID    string
	LimitFen  int64
	UsedFen   int64
	Status    string // active | frozen | overdue
	UpdatedAt time.Time
}

// Channel is the credit line.
type Channel struct {
	db  postgres.DBTX
	now func() time.Time
}

// New builds the channel over the database holding the credit lines.
func New(db postgres.DBTX, now func() time.Time) *Channel {
	return &Channel{db: db, now: now}
}

func (c *Channel) Name() string { return Name }

// Get reads a user's line; ok is false when none was opened.
func Get(ctx context.Context, db postgres.DBTX, userID string) (Line, bool, error) {
	l := Line{UserID: userID}
	err := db.QueryRow(ctx, `SELECT limit_fen, used_fen, status, updated_at FROM credit_lines WHERE user_id = $1`, userID).
		Scan(&l.LimitFen, &l.UsedFen, &l.Status, &l.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("read credit line of %s: %w", userID, err)
	}
	return l, true, nil
}

// Set opens or changes a line and returns it before (ok false: none) and after.
// Of two first openings at once, exactly one finds no line: the other waits
// for it and changes the line it opened, so the audit's "before" is true.
func Set(ctx context.Context, tx pgx.Tx, userID string, limitFen int64, status string, now time.Time) (before Line, existed bool, after Line, err error) {
	before.UserID = userID
	after = Line{UserID: userID, LimitFen: limitFen, Status: status, UpdatedAt: now}
	lock := func() error {
		err := tx.QueryRow(ctx, `SELECT limit_fen, used_fen, status, updated_at FROM credit_lines WHERE user_id = $1 FOR UPDATE`, userID).
			Scan(&before.LimitFen, &before.UsedFen, &before.Status, &before.UpdatedAt)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("lock credit line of %s: %w", userID, err)
		}
		existed = err == nil
		return nil
	}
	if err := lock(); err != nil {
		return before, false, after, err
	}
	if !existed {
		// DO NOTHING waits for a concurrent opening to end; then that line
		// is the one before this change.
		err := tx.QueryRow(ctx, `
			INSERT INTO credit_lines (user_id, limit_fen, used_fen, status, updated_at) VALUES ($1, $2, 0, $3, $4)
			ON CONFLICT (user_id) DO NOTHING RETURNING used_fen`, userID, limitFen, status, now).Scan(&after.UsedFen)
		if err == nil {
			return before, false, after, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return before, false, after, fmt.Errorf("open credit line of %s: %w", userID, err)
		}
		if err := lock(); err != nil || !existed {
			return before, false, after, cmp.Or(err, fmt.Errorf("credit line of %s vanished while opening it", userID))
		}
	}
	err = tx.QueryRow(ctx, `UPDATE credit_lines SET limit_fen = $2, status = $3, updated_at = $4 WHERE user_id = $1 RETURNING used_fen`,
		userID, limitFen, status, now).Scan(&after.UsedFen)
	if err != nil {
		return before, existed, after, fmt.Errorf("set credit line of %s: %w", userID, err)
	}
	return before, existed, after, nil
}

// Eligibility applies the line's own rules; the generic ones (switched off,
// single-payment limit, minors) are the recharge service's.
func (c *Channel) Eligibility(ctx context.Context, p channel.Payer, amountFen int64) (channel.Eligibility, error) {
	l, ok, err := Get(ctx, c.db, p.UserID)
	if err != nil {
		return channel.Eligibility{}, err
	}
	return check(l, ok, amountFen), nil
}

func check(l Line, ok bool, amountFen int64) channel.Eligibility {
	switch {
	case !ok:
		return channel.Eligibility{ReasonCode: "credit_not_opened", Reason: "You have not opened a monthly credit line."}
	case l.Status == "frozen":
		return channel.Eligibility{ReasonCode: "credit_frozen", Reason: "Your monthly credit line is frozen."}
	case l.Status == "overdue":
		return channel.Eligibility{ReasonCode: "credit_overdue", Reason: "Your monthly credit line has an overdue bill; pay it to use the line again."}
	}
	// A lead may lower a limit below what is used: nothing is left then.
	// Without an amount, a line with nothing left cannot pay any order.
	if left := max(l.LimitFen-l.UsedFen, 0); left < max(amountFen, 1) {
		return channel.Eligibility{ReasonCode: "credit_insufficient",
			Reason: fmt.Sprintf("Your monthly credit line has ¥%d.%02d left.", left/100, left%100)}
	}
	return channel.Eligibility{Available: true}
}

// PayInTx takes the amount from the line. The conditional update is what
// keeps concurrent orders from overdrawing it.
func (c *Channel) PayInTx(ctx context.Context, tx pgx.Tx, p channel.Payer, o channel.Order) (string, error) {
	tag, err := tx.Exec(ctx, `
		UPDATE credit_lines SET used_fen = used_fen + $2, updated_at = $3
		 WHERE user_id = $1 AND status = 'active' AND used_fen + $2 <= limit_fen`,
		p.UserID, o.AmountFen, c.now())
	if err != nil {
		return "", fmt.Errorf("charge credit line of %s: %w", p.UserID, err)
	}
	if tag.RowsAffected() == 0 {
		// Tell the caller which rule refused it, as eligibility would.
		l, ok, err := Get(ctx, tx, p.UserID)
		if err != nil {
			return "", err
		}
		e := check(l, ok, o.AmountFen)
		if e.Available {
			e = channel.Eligibility{ReasonCode: "credit_insufficient", Reason: "Your monthly credit line does not cover this amount."}
		}
		return "", fault.New(fault.Unprocessable, "channel_unavailable", "%s", e.Reason).With("reason_code", e.ReasonCode)
	}
	return "mp-" + o.ID, nil
}

// RefundInTx gives the amount back to the line.
func (c *Channel) RefundInTx(ctx context.Context, tx pgx.Tx, userID string, r channel.RefundRequest) error {
	_, err := tx.Exec(ctx, `
		UPDATE credit_lines SET used_fen = greatest(used_fen - $2, 0), updated_at = $3 WHERE user_id = $1`,
		userID, r.AmountFen, c.now())
	if err != nil {
		return fmt.Errorf("restore credit line of %s: %w", userID, err)
	}
	return nil
}

var errInDatabase = errors.New("monthly_pay settles in the database: use PayInTx and RefundInTx")

func (c *Channel) CreatePayment(context.Context, channel.Order) (channel.Payment, error) {
	return channel.Payment{}, errInDatabase
}

// ParseWebhook: the credit line sends no notifications.
func (c *Channel) ParseWebhook(context.Context, http.Header, []byte) ([]channel.Event, error) {
	return nil, fmt.Errorf("%w: monthly_pay has no webhooks", channel.ErrBadSignature)
}

// WebhookResponse refuses anything posted to it in the API's own error
// format: nothing can be signed by a channel that never notifies.
func (c *Channel) WebhookResponse(error) channel.Response {
	return channel.Response{Status: http.StatusUnauthorized, Code: "invalid_signature", Detail: "monthly_pay sends no notifications"}
}

// QueryPayment: credit-line orders are paid when created, never pending.
func (c *Channel) QueryPayment(context.Context, string) (channel.PaymentStatus, error) {
	return channel.PaymentStatus{State: channel.PaymentNotFound}, nil
}

func (c *Channel) ClosePayment(context.Context, string) error { return nil }

func (c *Channel) Refund(context.Context, channel.RefundRequest) (channel.RefundStatus, error) {
	return channel.RefundStatus{}, errInDatabase
}

func (c *Channel) QueryRefund(context.Context, string, string) (channel.RefundStatus, error) {
	return channel.RefundStatus{}, errInDatabase
}
