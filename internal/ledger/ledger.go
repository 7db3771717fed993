// Package ledger is the double-entry diamond ledger: journals of postings
// that sum to zero, a per-user balance projection kept in the same
// transaction, holds, and debt. It is the only code that writes the ledger
// tables (wallets, journals, postings).
//
// Sign convention: a posting's amount is what the account's balance moves by.
// A user's available and held accounts are never negative. The user's debt
// account goes negative by what the user owes (the projection shows it as a
// positive debt). System accounts mirror them: issuance:<channel> and
// writeoff go negative (diamonds that came from outside the users), spent and
// refunded go positive (diamonds that left them).
package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Account names a ledger account. The user accounts are relative to the
// journal's user.
type Account string

const (
	Available Account = "available"
	Held      Account = "held"
	Debt      Account = "debt"
	Spent     Account = "spent"
	Refunded  Account = "refunded"
	WriteOff  Account = "writeoff"
)

// Issuance is the system account diamonds bought through a channel come from.
func Issuance(channel string) Account { return Account("issuance:" + channel) }

// IsUser reports whether the account is one of the journal user's own.
func (a Account) IsUser() bool { return a == Available || a == Held || a == Debt }

func (a Account) valid() bool {
	switch a {
	case Available, Held, Debt, Spent, Refunded, WriteOff:
		return true
	}
	return strings.HasPrefix(string(a), "issuance:") && len(a) > len("issuance:")
}

// Posting is one line of a journal.
type Posting struct {
	Account Account
	Amount  int64
}

// Journal is one balanced movement of one user's diamonds.
type Journal struct {
	UserID    string
	Kind      string // recharge, spend, refund_hold, refund_post, refund_void, ...
	Reference string // unique: recharge:{order}, spend:{id}, refund-hold:{refund}, ...
	Memo      string
	Postings  []Posting
}

// Balance is the projection of a user's accounts.
type Balance struct {
	UserID    string
	Available int64
	Held      int64
	Debt      int64 // positive: what the user owes
}

var (
	// ErrUnbalanced: the postings do not sum to zero, or there are fewer than two.
	ErrUnbalanced = errors.New("ledger: journal unbalanced")
	// ErrInvalid: an unknown account, a zero amount, a missing user or reference.
	ErrInvalid = errors.New("ledger: journal invalid")
	// ErrDuplicateReference: a journal with this reference was already applied.
	ErrDuplicateReference = errors.New("ledger: duplicate journal reference")
	// ErrInsufficient: the journal would take a balance below zero.
	ErrInsufficient = errors.New("ledger: insufficient balance")
)

// Ledger writes journals. Build one in main and pass it down.
type Ledger struct {
	newID    func() uuid.UUID
	journals *prometheus.CounterVec
}

// New builds a ledger; newID may be nil (UUIDv7). reg may be nil.
func New(reg prometheus.Registerer, newID func() uuid.UUID) *Ledger {
	if newID == nil {
		newID = func() uuid.UUID { return uuid.Must(uuid.NewV7()) }
	}
	l := &Ledger{
		newID: newID,
		journals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "diamondd_ledger_journals_total",
			Help: "Ledger journals written, by kind (counted when written inside their transaction).",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(l.journals)
	}
	return l
}

// Validate checks a journal without touching the database.
func (j Journal) Validate() error {
	if j.UserID == "" || j.Reference == "" || j.Kind == "" {
		return fmt.Errorf("%w: user, kind and reference are required", ErrInvalid)
	}
	if len(j.Postings) < 2 {
		return fmt.Errorf("%w: %d postings", ErrUnbalanced, len(j.Postings))
	}
	var sum int64
	for _, p := range j.Postings {
		if !p.Account.valid() {
			return fmt.Errorf("%w: unknown account %q", ErrInvalid, p.Account)
		}
		if p.Amount == 0 {
			return fmt.Errorf("%w: zero amount on %s", ErrInvalid, p.Account)
		}
		sum += p.Amount
	}
	if sum != 0 {
		return fmt.Errorf("%w: postings sum to %d", ErrUnbalanced, sum)
	}
	return nil
}

// deltas is how the journal moves the user's projection.
func (j Journal) deltas() (available, held, debt int64) {
	for _, p := range j.Postings {
		switch p.Account {
		case Available:
			available += p.Amount
		case Held:
			held += p.Amount
		case Debt:
			debt -= p.Amount // the debt account goes negative as the debt grows
		}
	}
	return
}

// Post writes the journal and moves the user's projection in the caller's
// transaction, in one round trip. The database refuses a duplicate reference
// and a balance below zero; both come back as errors of this package.
func (l *Ledger) Post(ctx context.Context, tx pgx.Tx, j Journal) (Balance, error) {
	return l.PostWith(ctx, tx, j, nil)
}

// PostWith is Post with the caller's own statements sent in the same round
// trip, after the ledger's (their callbacks run as the batch is read).
func (l *Ledger) PostWith(ctx context.Context, tx pgx.Tx, j Journal, extra *pgx.Batch) (Balance, error) {
	if err := j.Validate(); err != nil {
		return Balance{}, err
	}
	id := l.newID()
	accounts := make([]string, len(j.Postings))
	amounts := make([]int64, len(j.Postings))
	for i, p := range j.Postings {
		accounts[i], amounts[i] = string(p.Account), p.Amount
	}
	da, dh, dd := j.deltas()

	// One statement: the projection, the journal and its postings. A
	// negative balance fails the wallets' CHECK constraints. A missing
	// wallet (the user's first movement) returns no row and leaves the
	// journal without postings, which the balance trigger refuses at commit:
	// so even a caller that commits in this round trip (postgres.QueueCommit)
	// can never commit a journal its wallet did not see.
	b := &pgx.Batch{}
	b.Queue(`
		WITH w AS (
			UPDATE wallets
			   SET available = available + $8, held = held + $9, debt = debt + $10, updated_at = now()
			 WHERE user_id = $1
			RETURNING available, held, debt
		), j AS (
			INSERT INTO journals (user_id, id, kind, reference, memo) VALUES ($1, $2, $3, $4, $5)
		), p AS (
			INSERT INTO postings (user_id, journal_id, line, account, amount)
			SELECT $1, $2, p.line, p.account, p.amount
			  FROM unnest($6::text[], $7::bigint[]) WITH ORDINALITY AS p(account, amount, line)
			 WHERE EXISTS (SELECT FROM w)
		)
		SELECT available, held, debt FROM w`,
		j.UserID, id, j.Kind, j.Reference, j.Memo, accounts, amounts, da, dh, dd)
	if extra != nil {
		b.QueuedQueries = append(b.QueuedQueries, extra.QueuedQueries...)
	}

	br := tx.SendBatch(ctx, b)
	bal := Balance{UserID: j.UserID}
	err := br.QueryRow().Scan(&bal.Available, &bal.Held, &bal.Debt)
	// Close reads the rest, running the callbacks of the caller's statements;
	// their errors are theirs, never a sign that the wallet is missing.
	closeErr := br.Close()
	switch {
	case errors.Is(err, pgx.ErrNoRows) && closeErr == nil:
		// The user's first movement: create the wallet, then the postings.
		if _, err = tx.Exec(ctx, lockWallet, j.UserID); err == nil {
			err = tx.QueryRow(ctx, postAfterLock, j.UserID, id, accounts, amounts, da, dh, dd).
				Scan(&bal.Available, &bal.Held, &bal.Debt)
		}
	case err == nil || errors.Is(err, pgx.ErrNoRows):
		err = closeErr
	}
	switch {
	case err == nil:
		l.journals.WithLabelValues(j.Kind).Inc()
		return bal, nil
	case postgres.IsUniqueViolation(err, "journals_reference_key"):
		return Balance{}, fmt.Errorf("post %s: %w", j.Reference, ErrDuplicateReference)
	case postgres.IsCheckViolation(err, "wallets_available_nonnegative"),
		postgres.IsCheckViolation(err, "wallets_held_nonnegative"),
		postgres.IsCheckViolation(err, "wallets_debt_nonnegative"):
		return Balance{}, fmt.Errorf("post %s: %w", j.Reference, ErrInsufficient)
	default:
		return Balance{}, fmt.Errorf("post %s: %w", j.Reference, err)
	}
}

// postAfterLock completes a posting whose wallet was missing: the postings
// and the projection, once the wallet exists.
const postAfterLock = `
	WITH p AS (
		INSERT INTO postings (user_id, journal_id, line, account, amount)
		SELECT $1, $2, p.line, p.account, p.amount
		  FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS p(account, amount, line)
	)
	UPDATE wallets
	   SET available = available + $5, held = held + $6, debt = debt + $7, updated_at = now()
	 WHERE user_id = $1
	RETURNING available, held, debt`

// lockWallet creates an empty wallet when the user has none, and locks it
// either way. It writes a row version even when the wallet exists, so Lock
// tries selectWallet, which does not, first.
const lockWallet = `
	INSERT INTO wallets AS w (user_id) VALUES ($1)
	ON CONFLICT (user_id) DO UPDATE SET user_id = w.user_id
	RETURNING available, held, debt`

const selectWallet = `SELECT available, held, debt FROM wallets WHERE user_id = $1 FOR UPDATE`

// Lock reads a user's balance and locks the wallet row until the transaction
// ends, creating an empty wallet when the user has none. Every movement of a
// user's diamonds that depends on the balance locks it first, so they apply
// one at a time; one row per user means there is no lock order to get wrong.
func (l *Ledger) Lock(ctx context.Context, tx pgx.Tx, userID string) (Balance, error) {
	b := Balance{UserID: userID}
	err := tx.QueryRow(ctx, selectWallet, userID).Scan(&b.Available, &b.Held, &b.Debt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = tx.QueryRow(ctx, lockWallet, userID).Scan(&b.Available, &b.Held, &b.Debt)
	}
	if err != nil {
		return Balance{}, fmt.Errorf("lock wallet %s: %w", userID, err)
	}
	return b, nil
}

// QueueLock is Lock as a statement of the caller's batch: the balance is
// read into into when the batch's results are read.
func QueueLock(b *pgx.Batch, userID string, into *Balance) {
	b.Queue(lockWallet, userID).QueryRow(func(row pgx.Row) error {
		into.UserID = userID
		if err := row.Scan(&into.Available, &into.Held, &into.Debt); err != nil {
			return fmt.Errorf("lock wallet %s: %w", userID, err)
		}
		return nil
	})
}

// Get reads a user's balance; a user with no wallet has zero everywhere.
func Get(ctx context.Context, db postgres.DBTX, userID string) (Balance, error) {
	b := Balance{UserID: userID}
	err := db.QueryRow(ctx, `SELECT available, held, debt FROM wallets WHERE user_id = $1`, userID).
		Scan(&b.Available, &b.Held, &b.Debt)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, nil
	}
	if err != nil {
		return Balance{}, fmt.Errorf("read wallet %s: %w", userID, err)
	}
	return b, nil
}

// Entry is one posting on a user's own account, as the user sees it.
type Entry struct {
	JournalID uuid.UUID
	Line      int16
	Account   Account
	Amount    int64
	Kind      string
	Reference string
	Memo      string
	CreatedAt time.Time
}

// Cursor is where a page of entries ends (exclusive).
type Cursor struct {
	JournalID uuid.UUID
	Line      int16
}

// Entries lists a user's ledger lines newest first. Journal ids are UUIDv7,
// so their order is time order and the primary key serves the scan.
func Entries(ctx context.Context, db postgres.DBTX, userID string, after *Cursor, limit int) ([]Entry, error) {
	args := []any{userID, limit}
	cond := ""
	if after != nil {
		cond = "AND (p.journal_id, p.line) < ($3, $4)"
		args = append(args, after.JournalID, after.Line)
	}
	rows, err := db.Query(ctx, `
		SELECT p.journal_id, p.line, p.account, p.amount, j.kind, j.reference, j.memo, j.created_at
		  FROM postings p
		  JOIN journals j ON j.user_id = p.user_id AND j.id = p.journal_id
		 WHERE p.user_id = $1 AND p.account IN ('available', 'held', 'debt') `+cond+`
		 ORDER BY p.journal_id DESC, p.line DESC
		 LIMIT $2`, args...)
	if err != nil {
		return nil, fmt.Errorf("list entries of %s: %w", userID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		err := r.Scan(&e.JournalID, &e.Line, &e.Account, &e.Amount, &e.Kind, &e.Reference, &e.Memo, &e.CreatedAt)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list entries of %s: %w", userID, err)
	}
	return out, nil
}
