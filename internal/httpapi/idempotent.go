package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

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
	body := r.out.Body
	if r.out.Status >= 400 {
		ct = "application/problem+json"
		if r.replayed {
			// the request ID middleware has set the header already
			body = withRequestID(body, w.Header().Get(echo.HeaderXRequestID))
		}
	}
	w.Header().Set("Content-Type", ct)
	if r.replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(r.out.Status)
	_, err := w.Write(body)
	return err
}

// withRequestID gives a replayed problem the request_id of the request it
// answers, the one its X-Request-ID header carries: the stored one names the
// first request, which this one is not.
func withRequestID(problem []byte, id string) []byte {
	var m map[string]any
	if id == "" || json.Unmarshal(problem, &m) != nil {
		return problem
	}
	m["request_id"] = id
	b, err := json.Marshal(m)
	if err != nil {
		return problem
	}
	return b
}

// idempotent runs an effect at most once per Idempotency-Key: the effect,
// its response and the key's record commit in one transaction. Client errors
// are stored as problems and replayed; server errors are not stored.
func (s *Server) idempotent(ctx context.Context, route, key string, body any, status int,
	run func(ctx context.Context, tx pgx.Tx) (any, error)) (stored, error) {
	scope, hash, err := s.keyed(ctx, route, key, body)
	if err != nil {
		return stored{}, err
	}
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
		}, s.storable(ctx))
	if err != nil && out.Status == 0 {
		return stored{}, err
	}
	return stored{out: out, replayed: replayed}, nil
}

// once is idempotent for an effect whose statements and response are known
// before it runs (idempotency.Once): a fresh key costs one round trip.
func (s *Server) once(ctx context.Context, route, key string, body any, status int, resp any,
	effect idempotency.Effect) (stored, error) {
	scope, hash, err := s.keyed(ctx, route, key, body)
	if err != nil {
		return stored{}, err
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return stored{}, fmt.Errorf("encode response: %w", err)
	}
	out, replayed, err := idempotency.Once(ctx, s.Pool, scope, hash,
		idempotency.Outcome{Status: status, Body: b}, effect, s.storable(ctx))
	if err != nil && out.Status == 0 {
		return stored{}, err
	}
	return stored{out: out, replayed: replayed}, nil
}

// keyed scopes an Idempotency-Key to the caller and hashes the request.
func (s *Server) keyed(ctx context.Context, route, key string, body any) (idempotency.Scope, []byte, error) {
	if key == "" {
		return idempotency.Scope{}, nil, fault.New(fault.Invalid, "idempotency_key_required", "this request needs an Idempotency-Key header")
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return idempotency.Scope{}, nil, fmt.Errorf("encode request for hashing: %w", err)
	}
	hash, err := idempotency.Hash(raw)
	if err != nil {
		return idempotency.Scope{}, nil, err
	}
	return idempotency.Scope{Principal: principal(ctx).Subject, Method: http.MethodPost, Route: route, Key: key}, hash, nil
}

// storable stores client errors as problems, so a retry gets the same
// answer; server errors are not stored, so a retry runs again.
func (s *Server) storable(ctx context.Context) idempotency.Failure {
	return func(err error) (idempotency.Outcome, bool) {
		p := problemFor(err)
		if p.status >= 500 {
			return idempotency.Outcome{}, false
		}
		p.body["request_id"] = requestIDFrom(ctx)
		b, _ := json.Marshal(p.body)
		return idempotency.Outcome{Status: p.status, Body: b}, true
	}
}

type requestIDKey struct{}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
