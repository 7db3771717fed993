package recharge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Order is a recharge order.
type Order struct {
	ID        uuid.UUID
	UserID    string
	Channel   string
	PackageID *string
	AmountFen int64
	Diamonds  int64
	Status    string
	Minor     bool
	Pay       map[string]any
	TradeNo   *string
	Flags     []string
	Risk      json.RawMessage // risk.Assessment, once paid
	RiskScore int
	ExpiresAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
	PaidAt    *time.Time
	ClosedAt  *time.Time
	// CheckAfter is when the pending-order worker looks at the order next;
	// nil once it no longer watches it (paid, closed, or failed and closed
	// at its channel).
	CheckAfter *time.Time
}

// TimelineEntry is one transition.
type TimelineEntry struct {
	Status string
	Actor  string
	Note   string
	At     time.Time
}

// Payment is a channel trade reported against an order.
type Payment struct {
	Channel   string
	TradeNo   string
	AmountFen int64
	Outcome   string
	RefundID  *uuid.UUID
	CreatedAt time.Time
}

const orderColumns = `user_id, id, channel, package_id, amount_fen, diamonds, status, minor, pay, trade_no,
	flags, risk, risk_score, expires_at, created_at, updated_at, paid_at, closed_at, check_after`

func scanOrder(row pgx.Row) (Order, error) {
	var o Order
	var pay []byte
	err := row.Scan(&o.UserID, &o.ID, &o.Channel, &o.PackageID, &o.AmountFen, &o.Diamonds, &o.Status, &o.Minor,
		&pay, &o.TradeNo, &o.Flags, &o.Risk, &o.RiskScore, &o.ExpiresAt, &o.CreatedAt, &o.UpdatedAt, &o.PaidAt, &o.ClosedAt,
		&o.CheckAfter)
	if err != nil {
		return o, err
	}
	if len(pay) > 0 {
		if err := json.Unmarshal(pay, &o.Pay); err != nil {
			return o, fmt.Errorf("decode pay of %s: %w", o.ID, err)
		}
	}
	return o, nil
}

// Owner returns the user an order or refund belongs to.
func Owner(ctx context.Context, db postgres.DBTX, id uuid.UUID) (string, error) {
	var user string
	err := db.QueryRow(ctx, `SELECT user_id FROM owners WHERE object_id = $1`, id).Scan(&user)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errNotFound
	}
	if err != nil {
		return "", fmt.Errorf("owner of %s: %w", id, err)
	}
	return user, nil
}

// Get reads an order. userID "" reads any user's (support); otherwise an
// order of another user is not found, so its existence is not confirmed.
func (s *Service) Get(ctx context.Context, userID string, id uuid.UUID) (Order, error) {
	owner, err := Owner(ctx, s.pool, id)
	if err != nil {
		return Order{}, err
	}
	if userID != "" && owner != userID {
		return Order{}, errNotFound
	}
	return get(ctx, s.pool, owner, id, false)
}

// Lock reads an order FOR UPDATE in the caller's transaction.
func Lock(ctx context.Context, tx pgx.Tx, userID string, id uuid.UUID) (Order, error) {
	return get(ctx, tx, userID, id, true)
}

func get(ctx context.Context, db postgres.DBTX, userID string, id uuid.UUID, lock bool) (Order, error) {
	q := `SELECT ` + orderColumns + ` FROM orders WHERE user_id = $1 AND id = $2`
	if lock {
		q += ` FOR UPDATE`
	}
	o, err := scanOrder(db.QueryRow(ctx, q, userID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, errNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("read order %s: %w", id, err)
	}
	return o, nil
}

// List returns a user's orders newest first, after the cursor order id.
func (s *Service) List(ctx context.Context, userID string, after *uuid.UUID, limit int) ([]Order, error) {
	args := []any{userID, limit}
	cond := ""
	if after != nil {
		cond = " AND id < $3"
		args = append(args, *after)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE user_id = $1`+cond+` ORDER BY id DESC LIMIT $2`, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders of %s: %w", userID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, fmt.Errorf("list orders of %s: %w", userID, err)
	}
	return out, nil
}

// Timeline reads the transitions of an order or refund, oldest first.
func Timeline(ctx context.Context, db postgres.DBTX, userID string, objectID uuid.UUID) ([]TimelineEntry, error) {
	rows, err := db.Query(ctx, `SELECT status, actor, note, at FROM timeline WHERE user_id = $1 AND object_id = $2 ORDER BY at, id`, userID, objectID)
	if err != nil {
		return nil, fmt.Errorf("timeline of %s: %w", objectID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TimelineEntry, error) {
		var e TimelineEntry
		err := r.Scan(&e.Status, &e.Actor, &e.Note, &e.At)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("timeline of %s: %w", objectID, err)
	}
	return out, nil
}

// Payments lists the channel trades reported against an order.
func Payments(ctx context.Context, db postgres.DBTX, userID string, orderID uuid.UUID) ([]Payment, error) {
	rows, err := db.Query(ctx, `SELECT channel, trade_no, amount_fen, outcome, refund_id, created_at
		FROM payments WHERE user_id = $1 AND order_id = $2 ORDER BY created_at`, userID, orderID)
	if err != nil {
		return nil, fmt.Errorf("payments of %s: %w", orderID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payment, error) {
		var p Payment
		err := r.Scan(&p.Channel, &p.TradeNo, &p.AmountFen, &p.Outcome, &p.RefundID, &p.CreatedAt)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("payments of %s: %w", orderID, err)
	}
	return out, nil
}

// FlaggedCursor is where a page of Flagged ends (exclusive): the sort key of
// its last order, so that orders flagged while support pages through the
// list never push one onto the next page again.
type FlaggedCursor struct {
	PaidAt time.Time
	ID     uuid.UUID
}

// Flagged lists paid orders the risk rules flagged, newest first; code
// filters by one flag code when set, after is the previous page's cursor.
// A flagged order always has paid_at: the payment sets it with the score.
func (s *Service) Flagged(ctx context.Context, code string, after *FlaggedCursor, limit int) ([]Order, error) {
	args := []any{limit}
	q := `SELECT ` + orderColumns + ` FROM orders WHERE risk_score > 0`
	if code != "" {
		args = append(args, code)
		q += fmt.Sprintf(` AND risk->'flags' @> jsonb_build_array(jsonb_build_object('code', $%d::text))`, len(args))
	}
	if after != nil {
		args = append(args, after.PaidAt, after.ID)
		q += fmt.Sprintf(` AND (paid_at, id) < ($%d, $%d)`, len(args)-1, len(args))
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY paid_at DESC, id DESC LIMIT $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("list flagged orders: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, fmt.Errorf("list flagged orders: %w", err)
	}
	return out, nil
}
