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

// Release returns held diamonds (a hold voided). Like a credit, they pay the
// user's debt first: a user who owes diamonds never has any available, or
// they could be refunded for money while the debt stays unpaid.
func (l *Ledger) Release(ctx context.Context, tx pgx.Tx, userID string, diamonds int64, reference, memo string) (Balance, error) {
	if diamonds <= 0 {
		return Balance{}, fmt.Errorf("%w: release of %d diamonds", ErrInvalid, diamonds)
	}
	bal, err := l.Lock(ctx, tx, userID)
	if err != nil {
		return Balance{}, err
	}
	repay := min(bal.Debt, diamonds)
	ps := []Posting{{Held, -diamonds}}
	if repay > 0 {
		ps = append(ps, Posting{Debt, repay})
	}
	if rest := diamonds - repay; rest > 0 {
		ps = append(ps, Posting{Available, rest})
	}
	return l.Post(ctx, tx, Journal{UserID: userID, Kind: "release", Reference: reference, Memo: memo, Postings: ps})
}

// Shortfall says who bears the diamonds a refund claws back beyond its hold.
type Shortfall string

const (
	// ShortfallDebt: the user owes them; the next recharge pays them first.
	ShortfallDebt Shortfall = "debt"
	// ShortfallWriteOff: the platform absorbs them.
	ShortfallWriteOff Shortfall = "writeoff"
)

// Settlement is how a refund's clawback was taken.
type Settlement struct {
	FromHeld      int64 // out of the refund's own hold
	Released      int64 // of that hold, given back (the clawback came out smaller)
	FromOthers    int64 // beyond it, out of other holds the caller allowed (the order's other refunds)
	FromAvailable int64 // beyond those, out of available
	Shortfall     int64 // already spent: debt or written off
	Repaid        int64 // of Released, what paid the user's debt instead of going to available
	Balance       Balance
}

// Settle takes a refund's clawback for good when the refund succeeds: first
// out of its own hold (any rest goes back, paying debt first), then out of up to
// borrowable diamonds held for other purposes the caller names (the same
// order's other refunds, whose holds it then lowers by FromOthers), then out
// of available; what is still missing was spent, and becomes debt or is
// written off. It is one journal, so it applies once or not at all.
func (l *Ledger) Settle(ctx context.Context, tx pgx.Tx, userID string, held, borrowable, clawback int64, shortfall Shortfall, reference, memo string) (Settlement, error) {
	if held < 0 || borrowable < 0 || clawback < 0 || held+clawback == 0 {
		return Settlement{}, fmt.Errorf("%w: settle %d held, %d to take", ErrInvalid, held, clawback)
	}
	bal, err := l.Lock(ctx, tx, userID)
	if err != nil {
		return Settlement{}, err
	}
	var st Settlement
	st.FromHeld = min(held, clawback)
	st.Released = held - st.FromHeld
	extra := clawback - st.FromHeld
	st.FromOthers = min(extra, borrowable, bal.Held-held)
	extra -= st.FromOthers
	st.FromAvailable = min(extra, bal.Available+st.Released)
	st.Shortfall = extra - st.FromAvailable
	ps := []Posting{}
	add := func(a Account, amount int64) {
		if amount != 0 {
			ps = append(ps, Posting{a, amount})
		}
	}
	back := st.Released - st.FromAvailable // one of them is zero
	if back > 0 {
		st.Repaid = min(back, bal.Debt)
	}
	add(Refunded, clawback)
	add(Held, -held-st.FromOthers)
	add(Available, back-st.Repaid)
	add(Debt, st.Repaid)
	if st.Shortfall > 0 {
		switch shortfall {
		case ShortfallDebt:
			add(Debt, -st.Shortfall)
		case ShortfallWriteOff:
			add(WriteOff, -st.Shortfall)
		default:
			return Settlement{}, fmt.Errorf("%w: shortfall of %d with no policy", ErrInvalid, st.Shortfall)
		}
	}
	kind := "refund"
	if clawback == 0 {
		kind = "release"
	}
	st.Balance, err = l.Post(ctx, tx, Journal{UserID: userID, Kind: kind, Reference: reference, Memo: memo, Postings: ps})
	return st, err
}
