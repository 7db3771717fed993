package httpapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/httpapi/oapi"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/spend"
)

func (s *Server) GetWallet(ctx context.Context, _ oapi.GetWalletRequestObject) (oapi.GetWalletResponseObject, error) {
	w, err := s.wallet(ctx, principal(ctx).Subject)
	return oapi.GetWallet200JSONResponse(w), err
}

func (s *Server) GetUserWallet(ctx context.Context, r oapi.GetUserWalletRequestObject) (oapi.GetUserWalletResponseObject, error) {
	w, err := s.wallet(ctx, r.UserId)
	return oapi.GetUserWallet200JSONResponse(w), err
}

func (s *Server) wallet(ctx context.Context, userID string) (oapi.Wallet, error) {
	b, err := ledger.Get(ctx, s.Pool, userID)
	if err != nil {
		return oapi.Wallet{}, err
	}
	return oapi.Wallet{UserId: userID, Available: b.Available, Held: b.Held, Debt: b.Debt}, nil
}

func (s *Server) ListWalletEntries(ctx context.Context, r oapi.ListWalletEntriesRequestObject) (oapi.ListWalletEntriesResponseObject, error) {
	l, err := s.entries(ctx, principal(ctx).Subject, r.Params.Limit, r.Params.Cursor)
	return oapi.ListWalletEntries200JSONResponse(l), err
}

func (s *Server) ListUserEntries(ctx context.Context, r oapi.ListUserEntriesRequestObject) (oapi.ListUserEntriesResponseObject, error) {
	l, err := s.entries(ctx, r.UserId, r.Params.Limit, r.Params.Cursor)
	return oapi.ListUserEntries200JSONResponse(l), err
}

// ListUserWalletEntries serves the other path API.md can be read to give
// (GET /v1/admin/users/{user_id}/wallet, /entries, ...).
func (s *Server) ListUserWalletEntries(ctx context.Context, r oapi.ListUserWalletEntriesRequestObject) (oapi.ListUserWalletEntriesResponseObject, error) {
	l, err := s.entries(ctx, r.UserId, r.Params.Limit, r.Params.Cursor)
	return oapi.ListUserWalletEntries200JSONResponse(l), err
}

func (s *Server) entries(ctx context.Context, userID string, limit *int, cursor *string) (oapi.EntryList, error) {
	n := pageSize(limit)
	var after *ledger.Cursor
	if cursor != nil && *cursor != "" {
		c, err := decodeEntryCursor(*cursor)
		if err != nil {
			return oapi.EntryList{}, err
		}
		after = &c
	}
	// One more than asked tells whether there is a next page.
	list, err := ledger.Entries(ctx, s.Pool, userID, after, n+1)
	if err != nil {
		return oapi.EntryList{}, err
	}
	out := oapi.EntryList{Items: make([]oapi.Entry, 0, min(n, len(list)))}
	for i, e := range list {
		if i == n {
			next := encodeEntryCursor(list[n-1])
			out.NextCursor = &next
			break
		}
		memo := e.Memo
		out.Items = append(out.Items, oapi.Entry{
			Id:        fmt.Sprintf("%s:%d", e.JournalID, e.Line),
			JournalId: e.JournalID.String(),
			Account:   oapi.EntryAccount(e.Account),
			Amount:    e.Amount,
			Kind:      e.Kind,
			Reference: e.Reference,
			Memo:      &memo,
			CreatedAt: e.CreatedAt.UTC(),
		})
	}
	return out, nil
}

func pageSize(limit *int) int {
	if limit == nil {
		return 20
	}
	return *limit
}

func encodeEntryCursor(e ledger.Entry) string {
	return base64.RawURLEncoding.EncodeToString([]byte(e.JournalID.String() + ":" + strconv.Itoa(int(e.Line))))
}

func decodeEntryCursor(s string) (ledger.Cursor, error) {
	bad := fault.New(fault.Invalid, "invalid_cursor", "the cursor is not one this API returned")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return ledger.Cursor{}, bad
	}
	id, line, ok := strings.Cut(string(raw), ":")
	if !ok {
		return ledger.Cursor{}, bad
	}
	jid, err1 := uuid.Parse(id)
	n, err2 := strconv.ParseInt(line, 10, 16)
	if err1 != nil || err2 != nil {
		return ledger.Cursor{}, bad
	}
	return ledger.Cursor{JournalID: jid, Line: int16(n)}, nil
}

func (r stored) VisitCreateSpendResponse(w http.ResponseWriter) error { return r.write(w) }

func (s *Server) CreateSpend(ctx context.Context, r oapi.CreateSpendRequestObject) (oapi.CreateSpendResponseObject, error) {
	body := *r.Body
	return s.idempotent(ctx, "/v1/spends", deref(r.Params.IdempotencyKey), body, http.StatusCreated,
		func(ctx context.Context, tx pgx.Tx) (any, error) {
			sp, err := s.Spends.Spend(ctx, tx, spend.Request{
				UserID: body.UserId, Service: principal(ctx).Subject, Diamonds: body.Diamonds,
				Reference: body.Reference, Description: deref(body.Description),
			})
			if err != nil {
				return nil, err
			}
			return oapi.Spend{Id: sp.ID.String(), UserId: sp.UserID, Diamonds: sp.Diamonds,
				AvailableAfter: sp.AvailableAfter, Reference: sp.Reference, Description: body.Description,
				CreatedAt: sp.CreatedAt}, nil
		})
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
