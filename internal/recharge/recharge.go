// Package recharge sells diamonds: packages and pricing, channel
// eligibility, recharge orders and their state machine, and the payments
// channels report against them. A paid order credits its diamonds exactly
// once, in the transaction that records the payment.
package recharge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/risk"
)

// Order statuses.
const (
	StatusPending           = "pending"
	StatusPaid              = "paid"
	StatusClosed            = "closed"
	StatusFailed            = "failed"
	StatusPartiallyRefunded = "partially_refunded"
	StatusRefunded          = "refunded"
)

// Order flags for support.
const (
	FlagAmountMismatch   = "amount_mismatch"
	FlagLatePayment      = "late_payment"
	FlagDuplicatePayment = "duplicate_payment"
)

// Package is a fixed offer.
type Package struct {
	ID        string
	Diamonds  int64
	AmountFen int64
	Label     string
}

// DefaultPackages are the offers when none are configured.
func DefaultPackages() []Package {
	return []Package{
		{"p60", 60, 600, "60 diamonds"},
		{"p300", 300, 3000, "300 diamonds"},
		{"p980", 980, 9800, "980 diamonds"},
		{"p2980", 2980, 29800, "2980 diamonds"},
		{"p6480", 6480, 64800, "6480 diamonds"},
	}
}

// Pricing turns a request into an amount and diamonds.
type Pricing struct {
	DiamondsPerYuan int64 // 10: one diamond is 10 fen
	MinFen, MaxFen  int64 // custom amounts
	Packages        []Package
}

// Quote prices a package or a custom amount (whole diamonds only).
func (p Pricing) Quote(packageID string, amountFen int64) (amount, diamonds int64, err error) {
	if packageID != "" {
		for _, pk := range p.Packages {
			if pk.ID == packageID {
				return pk.AmountFen, pk.Diamonds, nil
			}
		}
		return 0, 0, fault.New(fault.Invalid, "unknown_package", "there is no package %q", packageID)
	}
	if amountFen < p.MinFen || amountFen > p.MaxFen {
		return 0, 0, fault.New(fault.Invalid, "invalid_amount", "amount_fen must be between %d and %d", p.MinFen, p.MaxFen)
	}
	if amountFen*p.DiamondsPerYuan%100 != 0 {
		return 0, 0, fault.New(fault.Invalid, "invalid_amount",
			"amount_fen must buy whole diamonds: a multiple of %d fen", 100/gcd(100, p.DiamondsPerYuan))
	}
	return amountFen, amountFen * p.DiamondsPerYuan / 100, nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Policy is the generic availability of a channel.
type Policy struct {
	Maintenance bool
	MinFen      int64
	MaxFen      int64
	AllowMinors bool
}

// Config tunes the service.
type Config struct {
	Pricing    Pricing
	Policies   map[string]Policy // by channel name; every configured channel has one
	OrderTTL   time.Duration     // pending orders expire after this
	QueryAfter time.Duration     // a pending order is queried at the channel after this
	Risk       risk.Thresholds
}

// DuplicateRefunder refunds a second payment of an already paid order in
// full, inside the transaction that records it (the refund service).
type DuplicateRefunder interface {
	RefundDuplicatePayment(ctx context.Context, tx pgx.Tx, o Order, tradeNo string, amountFen int64) (uuid.UUID, error)
}

// Service runs recharges.
type Service struct {
	cfg      Config
	pool     *pgxpool.Pool
	ledger   *ledger.Ledger
	channels *channel.Registry
	refunder DuplicateRefunder
	now      func() time.Time
	newID    func() uuid.UUID
	log      *slog.Logger
}

// New builds the service; SetRefunder completes it once the refund service exists.
func New(cfg Config, pool *pgxpool.Pool, l *ledger.Ledger, chs *channel.Registry, now func() time.Time, newID func() uuid.UUID, log *slog.Logger) *Service {
	return &Service{cfg: cfg, pool: pool, ledger: l, channels: chs, now: now, newID: newID, log: log}
}

// SetRefunder wires the refund service, which itself depends on this one.
func (s *Service) SetRefunder(r DuplicateRefunder) { s.refunder = r }

// Packages lists the offers.
func (s *Service) Packages() []Package { return s.cfg.Pricing.Packages }

// Channels lists the configured channel names.
func (s *Service) Channels() []string { return s.channels.Names() }

// PreparesRemotely reports whether preparing a payment on the channel calls
// the channel (so a retried request should be answered before it does).
func (s *Service) PreparesRemotely(name string) bool {
	ch, err := s.channels.Get(name)
	if err != nil {
		return false
	}
	_, offline := ch.(channel.Offline)
	_, inDB := ch.(channel.InDatabase)
	return !offline && !inDB
}

// Payer is who recharges.
type Payer struct {
	UserID    string
	Birthdate string
}

// china is the time zone ages are counted in (no daylight saving).
var china = time.FixedZone("CST", 8*60*60)

// Minor reports whether the payer is under 18 now. A birthdate that cannot
// be judged (auth refuses such tokens) counts as a minor: the protections
// fail closed.
func (s *Service) Minor(p Payer) bool {
	if p.Birthdate == "" {
		return false
	}
	minor, err := risk.IsMinor(p.Birthdate, s.now().In(china))
	return err != nil || minor
}

// Eligibility is one channel's availability for a payer and amount.
type Eligibility struct {
	Channel    string
	Available  bool
	ReasonCode string
	Reason     string
}

// Eligibility says for every configured channel whether the payer can pay
// amountFen with it (amountFen 0: regardless of amount).
func (s *Service) Eligibility(ctx context.Context, p Payer, amountFen int64) ([]Eligibility, error) {
	out := make([]Eligibility, 0, len(s.channels.Names()))
	for _, name := range s.channels.Names() {
		e, err := s.eligibility(ctx, name, p, amountFen)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Service) eligibility(ctx context.Context, name string, p Payer, amountFen int64) (Eligibility, error) {
	ch, err := s.channels.Get(name)
	if err != nil {
		return Eligibility{Channel: name, ReasonCode: "channel_disabled", Reason: "This payment method is not offered."}, nil
	}
	pol := s.cfg.Policies[name]
	no := func(code, reason string) (Eligibility, error) {
		return Eligibility{Channel: name, ReasonCode: code, Reason: reason}, nil
	}
	switch {
	case pol.Maintenance:
		return no("channel_disabled", "This payment method is under maintenance; please choose another.")
	case amountFen > 0 && amountFen < pol.MinFen:
		return no("amount_below_min", fmt.Sprintf("This payment method needs at least ¥%s.", yuan(pol.MinFen)))
	case amountFen > 0 && pol.MaxFen > 0 && amountFen > pol.MaxFen:
		return no("amount_above_max", fmt.Sprintf("This payment method takes at most ¥%s in one payment.", yuan(pol.MaxFen)))
	case !pol.AllowMinors && s.Minor(p):
		return no("minor_not_allowed", "This payment method is not available to users under 18.")
	}
	if ec, ok := ch.(channel.EligibilityChecker); ok {
		e, err := ec.Eligibility(ctx, channel.Payer{UserID: p.UserID, Minor: s.Minor(p)}, amountFen)
		if err != nil {
			return Eligibility{}, fmt.Errorf("eligibility of %s: %w", name, err)
		}
		if !e.Available {
			return no(e.ReasonCode, e.Reason)
		}
	}
	return Eligibility{Channel: name, Available: true}, nil
}

func yuan(fen int64) string { return fmt.Sprintf("%d.%02d", fen/100, fen%100) }

// CreateRequest asks for an order.
type CreateRequest struct {
	Channel   string
	PackageID string
	AmountFen int64
}

// Draft is an order priced, checked and prepared at its channel, ready to be
// inserted by Insert. Preparing may call the channel, so it happens before
// (never inside) the transaction.
type Draft struct {
	Order   Order
	payment channel.Payment
	inDB    channel.InDatabase
}

// Prepare prices the request, checks the channel's eligibility and asks the
// channel for what the client needs to pay.
func (s *Service) Prepare(ctx context.Context, p Payer, r CreateRequest) (Draft, error) {
	amount, diamonds, quoteErr := s.cfg.Pricing.Quote(r.PackageID, r.AmountFen)
	switch {
	case quoteErr != nil && r.PackageID != "":
		return Draft{}, quoteErr // an unknown package
	case quoteErr != nil:
		// The channel is judged first, as GET /v1/channels judges it: an
		// amount outside a channel's limits (the custom-amount range is
		// every channel's) is 422 channel_unavailable with the reason the
		// list gave; only what no channel decides (whole diamonds, a
		// missing amount) is left to the quote's 400.
		amount = r.AmountFen
	}
	if _, err := s.channels.Get(r.Channel); err != nil {
		return Draft{}, fault.New(fault.Unprocessable, "channel_unavailable", "channel %q is not offered", r.Channel).
			With("reason_code", "channel_disabled")
	}
	e, err := s.eligibility(ctx, r.Channel, p, amount)
	if err != nil {
		return Draft{}, err
	}
	if !e.Available {
		return Draft{}, fault.New(fault.Unprocessable, "channel_unavailable", "%s", e.Reason).With("reason_code", e.ReasonCode)
	}
	if quoteErr != nil {
		return Draft{}, quoteErr
	}
	now := s.now().UTC()
	o := Order{
		ID: s.newID(), UserID: p.UserID, Channel: r.Channel, AmountFen: amount, Diamonds: diamonds,
		Status: StatusPending, Minor: s.Minor(p), CreatedAt: now, UpdatedAt: now,
		ExpiresAt: now.Add(s.cfg.OrderTTL), Flags: []string{},
	}
	if r.PackageID != "" {
		o.PackageID = &r.PackageID
	}
	ch, _ := s.channels.Get(r.Channel)
	d := Draft{Order: o}
	if inDB, ok := ch.(channel.InDatabase); ok {
		d.inDB = inDB
		return d, nil
	}
	d.payment, err = ch.CreatePayment(ctx, channel.Order{ID: o.ID.String(), UserID: o.UserID, AmountFen: amount,
		Diamonds: diamonds, Subject: fmt.Sprintf("%d diamonds", diamonds), ExpiresAt: o.ExpiresAt})
	if err != nil {
		s.log.WarnContext(ctx, "create payment failed", "channel", r.Channel, "order", o.ID, "error", err)
		return Draft{}, fault.New(fault.Unavailable, "channel_error", "the payment channel did not answer; try again")
	}
	d.Order.Pay = d.payment.Pay
	return d, nil
}

// Insert records a prepared order in the caller's transaction. A channel
// that settles in the database (the credit line) is charged here too, and
// the order is paid and credited before the transaction commits.
func (s *Service) Insert(ctx context.Context, tx pgx.Tx, d Draft) (Order, error) {
	o, queue, err := s.inserting(d.Order)
	if err != nil {
		return Order{}, err
	}
	b := &pgx.Batch{}
	queue(b)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Order{}, fmt.Errorf("insert order %s: %w", o.ID, err)
	}
	if d.inDB == nil {
		return o, nil
	}
	payer := channel.Payer{UserID: o.UserID, Minor: o.Minor}
	tradeNo, err := d.inDB.PayInTx(ctx, tx, payer, channel.Order{ID: o.ID.String(), UserID: o.UserID, AmountFen: o.AmountFen, Diamonds: o.Diamonds})
	if err != nil {
		return Order{}, err
	}
	if _, err := s.applyPayment(ctx, tx, &o, trade{no: tradeNo, amountFen: o.AmountFen}, "channel:"+o.Channel, nil); err != nil {
		return Order{}, err
	}
	return o, nil
}

// InsertLater is Insert for a caller that answers before the order is
// stored: it returns the order as it will be stored and queue, which queues
// its insertion (one statement) into a batch, as often as asked. It declines
// (ok false) an order whose channel settles in the database: that takes
// Insert, in a transaction.
func (s *Service) InsertLater(d Draft) (o Order, queue func(*pgx.Batch), ok bool, err error) {
	if d.inDB != nil {
		return Order{}, nil, false, nil
	}
	o, queue, err = s.inserting(d.Order)
	return o, queue, err == nil, err
}

// inserting returns the order as stored and what queues its insertion: the
// owner, the order and its first timeline entry, in one statement.
func (s *Service) inserting(o Order) (Order, func(*pgx.Batch), error) {
	if o.Pay == nil {
		o.Pay = map[string]any{}
	}
	pay, err := json.Marshal(o.Pay)
	if err != nil {
		return Order{}, nil, fmt.Errorf("encode pay of order %s: %w", o.ID, err)
	}
	args := []any{o.UserID, o.ID, o.Channel, o.PackageID, o.AmountFen, o.Diamonds, o.Minor, pay,
		o.ExpiresAt, minTime(o.CreatedAt.Add(s.cfg.QueryAfter), o.ExpiresAt), o.CreatedAt, s.newID()}
	return o, func(b *pgx.Batch) {
		b.Queue(`
			WITH owner AS (
				INSERT INTO owners (object_id, user_id) VALUES ($2, $1)
			), new_order AS (
				INSERT INTO orders (user_id, id, channel, package_id, amount_fen, diamonds, status, minor, pay,
				                    expires_at, check_after, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $11)
			)
			INSERT INTO timeline (user_id, object_id, id, status, actor, note, at)
			VALUES ($1, $2, $12, 'pending', 'user:' || $1, 'order created', $11)`, args...)
	}, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func queueTimeline(b *pgx.Batch, id uuid.UUID, userID string, objectID uuid.UUID, status, actor, note string, at time.Time) {
	b.Queue(`INSERT INTO timeline (user_id, object_id, id, status, actor, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		userID, objectID, id, status, actor, note, at)
}

// AddTimeline appends a transition of an order or refund.
func AddTimeline(ctx context.Context, tx pgx.Tx, id uuid.UUID, userID string, objectID uuid.UUID, status, actor, note string, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO timeline (user_id, object_id, id, status, actor, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		userID, objectID, id, status, actor, note, at)
	if err != nil {
		return fmt.Errorf("timeline of %s: %w", objectID, err)
	}
	return nil
}

var errNotFound = fault.New(fault.NotFound, "not_found", "no such recharge order")

// IsNotFound reports a missing order.
func IsNotFound(err error) bool { return errors.Is(err, errNotFound) }
