// Package spend takes diamonds out of a user's wallet for a service (the
// gift service): the only way diamonds are used up.
package spend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/ledger"
)

// Request is one spend.
type Request struct {
	UserID      string
	Service     string // the calling principal
	Diamonds    int64
	Reference   string
	Description string
}

// Spend is a recorded spend.
type Spend struct {
	ID             uuid.UUID
	UserID         string
	Diamonds       int64
	AvailableAfter int64
	Reference      string
	Description    string
	CreatedAt      time.Time
}

// Service records spends.
type Service struct {
	ledger *ledger.Ledger
	newID  func() uuid.UUID
	now    func() time.Time
}

// New builds the service.
func New(l *ledger.Ledger, newID func() uuid.UUID, now func() time.Time) *Service {
	return &Service{ledger: l, newID: newID, now: now}
}

// Spend takes the diamonds in the caller's transaction. Not enough available,
// or any debt, is insufficient_diamonds.
func (s *Service) Spend(ctx context.Context, tx pgx.Tx, r Request) (Spend, error) {
	if r.Diamonds <= 0 {
		return Spend{}, fault.New(fault.Invalid, "validation_failed", "diamonds must be positive")
	}
	sp := Spend{ID: s.newID(), UserID: r.UserID, Diamonds: r.Diamonds, Reference: r.Reference,
		Description: r.Description, CreatedAt: s.now().UTC()}
	// The spend's own record goes in the ledger posting's round trip.
	record := &pgx.Batch{}
	record.Queue(`
		INSERT INTO spends (user_id, id, service, reference, diamonds, description, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		sp.UserID, sp.ID, r.Service, sp.Reference, sp.Diamonds, sp.Description, sp.CreatedAt)
	bal, err := s.ledger.Spend(ctx, tx, r.UserID, r.Diamonds, "spend:"+sp.ID.String(), r.Reference, record)
	if errors.Is(err, ledger.ErrInsufficient) {
		if bal.Debt > 0 {
			return Spend{}, fault.New(fault.Conflict, "insufficient_diamonds",
				"the user owes %d diamonds; spending is blocked until the debt is repaid", bal.Debt)
		}
		return Spend{}, fault.New(fault.Conflict, "insufficient_diamonds",
			"%d diamonds requested, %d available", r.Diamonds, bal.Available)
	}
	if err != nil {
		return Spend{}, fmt.Errorf("spend for %s: %w", r.UserID, err)
	}
	sp.AvailableAfter = bal.Available
	return sp, nil
}
