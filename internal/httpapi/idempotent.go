package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/idempotency"
)

// stored is a response as the idempotency record keeps it: written verbatim,
// with Idempotent-Replayed on a replay. It satisfies each idempotent
// operation's response interface.
type stored struct {
	out      idempotency.Outcome
	replayed bool
}

func (r stored) write(w http.ResponseWriter) error {
	ct := "application/json"
	if r.out.Status >= 400 {
		ct = "application/problem+json"
	}
	w.Header().Set("Content-Type", ct)
	if r.replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(r.out.Status)
	_, err := w.Write(r.out.Body)
	return err
}

// idempotent runs an effect at most once per Idempotency-Key: the effect,
// its response and the key's record commit in one transaction. Client errors
// are stored as problems and replayed; server errors are not stored.
func (s *Server) idempotent(ctx context.Context, route, key string, body any, status int,
	run func(ctx context.Context, tx pgx.Tx) (any, error)) (stored, error) {
	if key == "" {
		return stored{}, fault.New(fault.Invalid, "idempotency_key_required", "this request needs an Idempotency-Key header")
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return stored{}, fmt.Errorf("encode request for hashing: %w", err)
	}
	hash, err := idempotency.Hash(raw)
	if err != nil {
		return stored{}, err
	}
	scope := idempotency.Scope{Principal: principal(ctx).Subject, Method: http.MethodPost, Route: route, Key: key}
	out, replayed, err := idempotency.Do(ctx, s.Pool, scope, hash,
		func(ctx context.Context, tx pgx.Tx) (idempotency.Outcome, error) {
			resp, err := run(ctx, tx)
			if err != nil {
				return idempotency.Outcome{}, err
			}
			b, err := json.Marshal(resp)
			if err != nil {
				return idempotency.Outcome{}, fmt.Errorf("encode response: %w", err)
			}
			return idempotency.Outcome{Status: status, Body: b}, nil
		},
		func(err error) (idempotency.Outcome, bool) {
			p := problemFor(err)
			if p.status >= 500 {
				return idempotency.Outcome{}, false
			}
			p.body["request_id"] = requestIDFrom(ctx)
			b, _ := json.Marshal(p.body)
			return idempotency.Outcome{Status: p.status, Body: b}, true
		})
	if err != nil && out.Status == 0 {
		return stored{}, err
	}
	return stored{out: out, replayed: replayed}, nil
}

type requestIDKey struct{}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
