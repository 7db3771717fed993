// Package refund takes diamonds back for money: refund requests and their
// policy (amounts, proportional clawback, auto-approval), support review,
// and the submission of approved refunds to the original channel.
//
// Diamonds are held (available → held) when a refund is accepted, removed
// for good when the channel confirms it, and returned when it is rejected,
// cancelled or fails. Every ledger step has a unique reference
// (refund-hold:{id}:{n}, refund-release:{id}:{n}, refund-post:{id}), so no
// retry applies one twice.
package refund

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/recharge"
)

// Statuses.
const (
	StatusPendingReview = "pending_review"
	StatusApproved      = "approved"
	StatusProcessing    = "processing"
	StatusSucceeded     = "succeeded"
	StatusFailed        = "failed"
	StatusRejected      = "rejected"
	StatusCancelled     = "cancelled"
)

// Kinds.
const (
	KindUser             = "user"
	KindAgent            = "agent"
	KindDuplicatePayment = "duplicate_payment"
	KindPaymentReturn    = "payment_return" // a payment of the wrong amount, returned by support
)

// Clawback policies.
const (
	ClawbackUnspentOnly = "unspent_only"
	ClawbackAllowDebt   = "allow_debt"
	ClawbackWriteOff    = "write_off"
	ClawbackNone        = "none" // a duplicate payment bought nothing
)

// Config tunes the policy.
type Config struct {
	FastWindow         time.Duration // auto-approval window after payment (24h)
	ReviewThresholdFen int64         // at or above: human review, and a lead to approve (100 000)
	SLA                time.Duration // review deadline (72h)
	MaxResubmissions   int           // rejected → review by new evidence (2)
	PollInterval       time.Duration // how often a processing refund is queried
}

// Evidence supports a request.
type Evidence struct {
	Kind  string `json:"kind"` // text | url
	Value string `json:"value"`
}

// Refund is a refund.
type Refund struct {
	ID              uuid.UUID
	UserID          string
	OrderID         uuid.UUID
	Channel         string
	TradeNo         string
	Kind            string
	Status          string
	AmountFen       int64
	Diamonds        int64 // clawed back in all
	Held            int64 // of which held; the rest is the shortfall
	Clawback        string
	ReasonCode      string
	Description     string
	Evidence        []Evidence
	Resubmissions   int
	Priority        int
	CreatedBy       string
	CreatedByRole   string
	DecidedBy       *string
	AutoApproved    bool
	SLADeadline     *time.Time
	ChannelRefundID *string
	FailureReason   *string
	Attempts        int
	// SubmittedAt: when a call that may reach the channel was first
	// started; nil while the channel cannot have the refund.
	SubmittedAt *time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Actor is who acts: a user, a support agent, or the system.
type Actor struct {
	ID   string
	Role string // user | support | support_lead | service | system
}

func (a Actor) label() string { return a.Role + ":" + a.ID }

// returnsPayment reports a refund that gives back a payment which bought
// nothing (a second payment, one of the wrong amount): it claws nothing
// back, does not count against the order's own money, and is never left
// failed.
func (r Refund) returnsPayment() bool { return r.Clawback == ClawbackNone }

// Service runs refunds.
type Service struct {
	cfg       Config
	pool      *pgxpool.Pool
	ledger    *ledger.Ledger
	recharges *recharge.Service
	channels  *channel.Registry
	now       func() time.Time
	newID     func() uuid.UUID
	log       *slog.Logger
}

// New builds the service.
func New(cfg Config, pool *pgxpool.Pool, l *ledger.Ledger, rs *recharge.Service, chs *channel.Registry,
	now func() time.Time, newID func() uuid.UUID, log *slog.Logger) *Service {
	return &Service{cfg: cfg, pool: pool, ledger: l, recharges: rs, channels: chs, now: now, newID: newID, log: log}
}

var errNotFound = fault.New(fault.NotFound, "not_found", "no such refund")

func invalidState(format string, args ...any) error {
	return fault.New(fault.Conflict, "invalid_state", format, args...)
}

const refundColumns = `user_id, id, order_id, channel, trade_no, kind, status, amount_fen, diamonds, held, clawback,
	reason_code, description, evidence, resubmissions, priority, created_by, created_by_role, decided_by,
	auto_approved, sla_deadline, channel_refund_id, failure_reason, attempts, submitted_at, created_at, updated_at`

func scanRefund(row pgx.Row) (Refund, error) {
	var r Refund
	var evidence []byte
	err := row.Scan(&r.UserID, &r.ID, &r.OrderID, &r.Channel, &r.TradeNo, &r.Kind, &r.Status, &r.AmountFen,
		&r.Diamonds, &r.Held, &r.Clawback, &r.ReasonCode, &r.Description, &evidence, &r.Resubmissions, &r.Priority,
		&r.CreatedBy, &r.CreatedByRole, &r.DecidedBy, &r.AutoApproved, &r.SLADeadline, &r.ChannelRefundID,
		&r.FailureReason, &r.Attempts, &r.SubmittedAt, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(evidence, &r.Evidence); err != nil {
		return r, fmt.Errorf("decode evidence of %s: %w", r.ID, err)
	}
	return r, nil
}

func get(ctx context.Context, db postgres.DBTX, userID string, id uuid.UUID, lock bool) (Refund, error) {
	q := `SELECT ` + refundColumns + ` FROM refunds WHERE user_id = $1 AND id = $2`
	if lock {
		q += ` FOR UPDATE`
	}
	r, err := scanRefund(db.QueryRow(ctx, q, userID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Refund{}, errNotFound
	}
	if err != nil {
		return Refund{}, fmt.Errorf("read refund %s: %w", id, err)
	}
	return r, nil
}

// owner finds a refund's user; userID "" means any (support), otherwise a
// refund of another user is not found.
func (s *Service) owner(ctx context.Context, db postgres.DBTX, userID string, id uuid.UUID) (string, error) {
	owner, err := recharge.Owner(ctx, db, id)
	if recharge.IsNotFound(err) || (err == nil && userID != "" && owner != userID) {
		return "", errNotFound
	}
	return owner, err
}

// Get reads a refund (userID "" for support).
func (s *Service) Get(ctx context.Context, userID string, id uuid.UUID) (Refund, error) {
	owner, err := s.owner(ctx, s.pool, userID, id)
	if err != nil {
		return Refund{}, err
	}
	return get(ctx, s.pool, owner, id, false)
}

// List returns a user's refunds newest first.
func (s *Service) List(ctx context.Context, userID string, after *uuid.UUID, limit int) ([]Refund, error) {
	args := []any{userID, limit}
	cond := ""
	if after != nil {
		cond = " AND id < $3"
		args = append(args, *after)
	}
	return s.query(ctx, `SELECT `+refundColumns+` FROM refunds WHERE user_id = $1`+cond+` ORDER BY id DESC LIMIT $2`, args...)
}

// QueueCursor is where a page of Queue ends (exclusive): the sort key of
// its last refund. Keys, not offsets: agents take refunds out of the review
// queue as they page through it, and new refunds arrive at the head of the
// other listings; neither may make a page skip or repeat a refund.
type QueueCursor struct {
	Priority    int        // review queue
	SLADeadline *time.Time // review queue
	CreatedAt   time.Time  // other listings
	ID          uuid.UUID
}

// Queue lists refunds for support: with status pending_review, the review
// queue (minors' refunds first, then the oldest deadline); otherwise newest
// first. after, when set, is the cursor of the previous page.
func (s *Service) Queue(ctx context.Context, status string, after *QueueCursor, limit int) ([]Refund, error) {
	args := []any{limit}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if status == StatusPendingReview {
		cond := ""
		if after != nil {
			// Every refund in review has a deadline; were one missing, the
			// row comparison would drop it for good, so it counts as the
			// latest, which is where ORDER BY puts a NULL.
			p, d, id := arg(after.Priority), arg(after.SLADeadline), arg(after.ID)
			cond = ` AND (priority < ` + p + ` OR (priority = ` + p + ` AND
				(coalesce(sla_deadline, 'infinity'), id) > (coalesce(` + d + `::timestamptz, 'infinity'), ` + id + `)))`
		}
		return s.query(ctx, `SELECT `+refundColumns+` FROM refunds WHERE status = 'pending_review'`+cond+`
			ORDER BY priority DESC, sla_deadline, id LIMIT $1`, args...)
	}
	var conds []string
	if status != "" {
		conds = append(conds, `status = `+arg(status))
	}
	if after != nil {
		conds = append(conds, `(created_at, id) < (`+arg(after.CreatedAt)+`, `+arg(after.ID)+`)`)
	}
	where := ""
	if len(conds) > 0 {
		where = ` WHERE ` + strings.Join(conds, ` AND `)
	}
	return s.query(ctx, `SELECT `+refundColumns+` FROM refunds`+where+` ORDER BY created_at DESC, id DESC LIMIT $1`, args...)
}

func (s *Service) query(ctx context.Context, q string, args ...any) ([]Refund, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list refunds: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Refund, error) { return scanRefund(r) })
	if err != nil {
		return nil, fmt.Errorf("list refunds: %w", err)
	}
	return out, nil
}

// Overdue reports a refund still in review past its deadline.
func (s *Service) Overdue(r Refund) bool {
	return r.Status == StatusPendingReview && r.SLADeadline != nil && s.now().After(*r.SLADeadline)
}

func (s *Service) timeline(ctx context.Context, tx pgx.Tx, r Refund, status string, actor Actor, note string) error {
	return recharge.AddTimeline(ctx, tx, s.newID(), r.UserID, r.ID, status, actor.label(), note, s.now().UTC())
}

func (s *Service) audit(ctx context.Context, tx pgx.Tx, actor Actor, action, objectType, objectID, userID, before, after, note string) error {
	_, err := tx.Exec(ctx, `INSERT INTO audit_log (id, actor, actor_role, action, object_type, object_id, user_id, before, after, note, at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), nullif($9, ''), $10, $11)`,
		s.newID(), actor.ID, actor.Role, action, objectType, objectID, userID, before, after, note, s.now().UTC())
	if err != nil {
		return fmt.Errorf("audit %s of %s: %w", action, objectID, err)
	}
	return nil
}

// Audit records a support action on another object (the credit line).
func (s *Service) Audit(ctx context.Context, tx pgx.Tx, actor Actor, action, objectType, objectID, userID, before, after, note string) error {
	return s.audit(ctx, tx, actor, action, objectType, objectID, userID, before, after, note)
}

// AuditEntry is one support action.
type AuditEntry struct {
	ID         uuid.UUID
	Actor      string
	ActorRole  string
	Action     string
	ObjectType string
	ObjectID   string
	UserID     string
	Before     *string
	After      *string
	Note       string
	At         time.Time
}

// AuditCursor is where a page of AuditLog ends (exclusive): the sort key of
// its last entry, so that actions recorded while support pages through the
// log never push an entry onto the next page again.
type AuditCursor struct {
	At time.Time
	ID uuid.UUID
}

// AuditLog lists support actions newest first, after the cursor when set.
func (s *Service) AuditLog(ctx context.Context, after *AuditCursor, limit int) ([]AuditEntry, error) {
	args := []any{limit}
	cond := ""
	if after != nil {
		cond = ` WHERE (at, id) < ($2, $3)`
		args = append(args, after.At, after.ID)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, actor, actor_role, action, object_type, object_id, user_id, before, after, note, at
		FROM audit_log`+cond+` ORDER BY at DESC, id DESC LIMIT $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.ID, &e.Actor, &e.ActorRole, &e.Action, &e.ObjectType, &e.ObjectID, &e.UserID, &e.Before, &e.After, &e.Note, &e.At)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}
