package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The movements the services make. Each locks the user's wallet, decides from
// the balance it read, and posts one journal under the given reference.

// Credit issues diamonds bought through a channel. Debt is paid first: only
// what is left over becomes available.
func (l *Ledger) Credit(ctx context.Context, tx pgx.Tx, userID, channel string, diamonds int64, reference, memo string) (Balance, error) {
	bal, err := l.Lock(ctx, tx, userID)
	if err != nil {
		return Balance{}, err
	}
	return l.CreditLocked(ctx, tx, bal, channel, diamonds, reference, memo, nil)
}

// CreditLocked is Credit for a wallet the caller has already locked (see
// QueueLock), with the caller's extra statements in the same round trip.
func (l *Ledger) CreditLocked(ctx context.Context, tx pgx.Tx, bal Balance, channel string, diamonds int64, reference, memo string, extra *pgx.Batch) (Balance, error) {
	if diamonds <= 0 {
		return Balance{}, fmt.Errorf("%w: credit of %d diamonds", ErrInvalid, diamonds)
	}
	userID := bal.UserID
	repay := min(bal.Debt, diamonds)
	ps := []Posting{{Issuance(channel), -diamonds}}
	if repay > 0 {
		ps = append(ps, Posting{Debt, repay})
	}
	if rest := diamonds - repay; rest > 0 {
		ps = append(ps, Posting{Available, rest})
	}
	return l.PostWith(ctx, tx, Journal{UserID: userID, Kind: "recharge", Reference: reference, Memo: memo, Postings: ps}, extra)
}

// Spend takes available diamonds. A user in debt cannot spend at all. extra
// statements of the caller go in the posting's round trip.
func (l *Ledger) Spend(ctx context.Context, tx pgx.Tx, userID string, diamonds int64, reference, memo string, extra *pgx.Batch) (Balance, error) {
	if diamonds <= 0 {
		return Balance{}, fmt.Errorf("%w: spend of %d diamonds", ErrInvalid, diamonds)
	}
	bal, err := l.Lock(ctx, tx, userID)
	if err != nil {
		return Balance{}, err
	}
	if bal.Debt > 0 || bal.Available < diamonds {
		return bal, fmt.Errorf("spend %d of %d available (debt %d): %w", diamonds, bal.Available, bal.Debt, ErrInsufficient)
	}
	return l.PostWith(ctx, tx, Journal{UserID: userID, Kind: "spend", Reference: reference, Memo: memo,
		Postings: []Posting{{Available, -diamonds}, {Spent, diamonds}}}, extra)
}

// Hold moves diamonds from available to held: they can no longer be spent.
func (l *Ledger) Hold(ctx context.Context, tx pgx.Tx, userID string, diamonds int64, reference, memo string) (Balance, error) {
	if diamonds <= 0 {
		return Balance{}, fmt.Errorf("%w: hold of %d diamonds", ErrInvalid, diamonds)
	}
	return l.Post(ctx, tx, Journal{UserID: userID, Kind: "hold", Reference: reference, Memo: memo,
		Postings: []Posting{{Available, -diamonds}, {Held, diamonds}}})
}

// Release returns held diamonds to available (a hold voided).
func (l *Ledger) Release(ctx context.Context, tx pgx.Tx, userID string, diamonds int64, reference, memo string) (Balance, error) {
	if diamonds <= 0 {
		return Balance{}, fmt.Errorf("%w: release of %d diamonds", ErrInvalid, diamonds)
	}
	return l.Post(ctx, tx, Journal{UserID: userID, Kind: "release", Reference: reference, Memo: memo,
		Postings: []Posting{{Held, -diamonds}, {Available, diamonds}}})
}

// Shortfall says who bears the diamonds a refund claws back beyond its hold.
type Shortfall string

const (
	// ShortfallDebt: the user owes them; the next recharge pays them first.
	ShortfallDebt Shortfall = "debt"
	// ShortfallWriteOff: the platform absorbs them.
	ShortfallWriteOff Shortfall = "writeoff"
)

// Settle removes a hold for good when its refund succeeds. clawback is what
// the refund takes back in all; held of it was on hold, and the rest (the
// shortfall, already spent) becomes debt or is written off.
func (l *Ledger) Settle(ctx context.Context, tx pgx.Tx, userID string, held, clawback int64, shortfall Shortfall, reference, memo string) (Balance, error) {
	if held < 0 || clawback <= 0 || held > clawback {
		return Balance{}, fmt.Errorf("%w: settle %d held of %d", ErrInvalid, held, clawback)
	}
	ps := []Posting{{Refunded, clawback}}
	if held > 0 {
		ps = append(ps, Posting{Held, -held})
	}
	if rest := clawback - held; rest > 0 {
		switch shortfall {
		case ShortfallDebt:
			ps = append(ps, Posting{Debt, -rest})
		case ShortfallWriteOff:
			ps = append(ps, Posting{WriteOff, -rest})
		default:
			return Balance{}, fmt.Errorf("%w: shortfall of %d with no policy", ErrInvalid, rest)
		}
	}
	if _, err := l.Lock(ctx, tx, userID); err != nil {
		return Balance{}, err
	}
	return l.Post(ctx, tx, Journal{UserID: userID, Kind: "refund", Reference: reference, Memo: memo, Postings: ps})
}
