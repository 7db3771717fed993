// Package idempotency stores the outcome of requests made with an
// Idempotency-Key so that a retry replays it instead of running again.
//
// The record is written in the same transaction as the effect it guards, so
// an effect and its record commit or vanish together. While a request runs it
// holds a transaction-scoped advisory lock on its key: a concurrent request
// with the same key sees the lock and is told to retry later, and the unique
// key of the table settles any race the lock does not see.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/diamondd/diamondd/internal/platform/postgres"
)

// Scope identifies a key: keys are scoped by (principal, method, route).
type Scope struct {
	Principal string
	Method    string
	Route     string
	Key       string
}

// Outcome is a response as stored and replayed.
type Outcome struct {
	Status int
	Body   []byte
}

var (
	// ErrInProgress: a request with the same key is still running.
	ErrInProgress = errors.New("idempotency: a request with this key is in progress")
	// ErrKeyReused: the key was used for a different request.
	ErrKeyReused = errors.New("idempotency: key reused with a different request")
	// ErrInvalidKey: the key is not 1–255 printable ASCII characters.
	ErrInvalidKey = errors.New("idempotency: invalid key")
)

// ValidKey reports whether a key is 1–255 printable ASCII characters.
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Hash is the canonical hash of a JSON request body: object members sorted,
// insignificant white space dropped, numbers kept exactly as written.
func Hash(body []byte) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		sum := sha256.Sum256(nil)
		return sum[:], nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonicalize body: %w", err)
	}
	canon, err := json.Marshal(v) // maps marshal with sorted keys
	if err != nil {
		return nil, fmt.Errorf("canonicalize body: %w", err)
	}
	sum := sha256.Sum256(canon)
	return sum[:], nil
}

// Run is the guarded effect: it runs inside the transaction and returns the
// response to store, or an error that rolls the effect back.
type Run func(ctx context.Context, tx pgx.Tx) (Outcome, error)

// Failure turns an error of Run into the response to send, and says whether
// it may be stored (client errors are; server errors are not, so a retry
// runs again).
type Failure func(err error) (out Outcome, store bool)

// Do runs the effect once per key. It returns the outcome to send and whether
// it is a replay of an earlier request. ErrInProgress and ErrKeyReused come
// back as errors, as does anything Failure declines to store.
func Do(ctx context.Context, pool *pgxpool.Pool, s Scope, hash []byte, run Run, fail Failure) (Outcome, bool, error) {
	if !ValidKey(s.Key) {
		return Outcome{}, false, ErrInvalidKey
	}
	// Two rounds at most: the second only when a concurrent request with the
	// same key committed between our lookup and our insert, and then the
	// lookup finds its record.
	for range 2 {
		var out Outcome
		var replayed bool
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			rec, err := begin(ctx, tx, s, hash)
			if err != nil || rec != nil {
				out, replayed = deref(rec), rec != nil
				return err
			}
			if out, err = run(ctx, tx); err != nil {
				return err
			}
			return save(ctx, tx, s, hash, out)
		})
		if errors.Is(err, errRace) {
			continue
		}
		if err == nil || errors.Is(err, ErrInProgress) || errors.Is(err, ErrKeyReused) {
			return out, replayed, err
		}
		failed, store := fail(err)
		if !store {
			return failed, false, err
		}
		// The effect rolled back; store the refusal so a retry gets the same
		// answer, unless another request with this key finished meanwhile.
		err = postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			rec, err := begin(ctx, tx, s, hash)
			if err != nil || rec != nil {
				out, replayed = deref(rec), rec != nil
				return err
			}
			out = failed
			return save(ctx, tx, s, hash, failed)
		})
		if errors.Is(err, errRace) {
			continue
		}
		return out, replayed, err
	}
	return Outcome{}, false, ErrInProgress
}

// Effect queues the statements of an effect whose response is known before
// it runs. It is called once per attempt, so the batch is always fresh.
type Effect func(b *pgx.Batch)

// Once is Do for an effect known in full before it runs: its statements and
// its response. The common case, a fresh key, costs one round trip and one
// commit: the key's claim (its lock and record, one statement), then the
// effect, in one implicit transaction. Anything else fails the
// claim or the effect, which rolls the round trip back, and Once falls back
// to Do: a retry is replayed, a busy key refused, and an effect that fails
// runs again in a transaction so that its refusal is stored as Do stores it.
func Once(ctx context.Context, pool *pgxpool.Pool, s Scope, hash []byte, out Outcome, effect Effect, fail Failure) (Outcome, bool, error) {
	if !ValidKey(s.Key) {
		return Outcome{}, false, ErrInvalidKey
	}
	// The claim: the key's record, inserted under the lock Do takes. A
	// record that exists fails the insert (unique key); a busy lock inserts
	// a NULL status, which the NOT NULL constraint refuses. A request in
	// flight always holds the lock, so the insert never waits on another.
	b := &pgx.Batch{}
	b.Queue(`
		INSERT INTO idempotency_keys (principal, method, route, key, request_hash, status, body)
		VALUES ($1, $2, $3, $4, $5,
		        CASE WHEN `+tryKeyLock+` THEN $6::int END,
		        $7)`,
		s.Principal, s.Method, s.Route, s.Key, hash, out.Status, out.Body)
	effect(b)
	if err := pool.SendBatch(ctx, b).Close(); err == nil {
		return out, false, nil
	} else if ctx.Err() != nil {
		return Outcome{}, false, err
	}
	return Do(ctx, pool, s, hash, func(ctx context.Context, tx pgx.Tx) (Outcome, error) {
		b := &pgx.Batch{}
		effect(b)
		return out, tx.SendBatch(ctx, b).Close()
	}, fail)
}

// Lookup reads a stored outcome without taking the key's lock: a fast path
// that lets a retry be answered before any work (or channel call) starts.
// nil means nothing is stored yet; Do still decides.
func Lookup(ctx context.Context, db postgres.DBTX, s Scope, hash []byte) (*Outcome, error) {
	if !ValidKey(s.Key) {
		return nil, ErrInvalidKey
	}
	var storedHash, body []byte
	var status int
	err := db.QueryRow(ctx, `SELECT request_hash, status, body FROM idempotency_keys
		WHERE principal = $1 AND method = $2 AND route = $3 AND key = $4`,
		s.Principal, s.Method, s.Route, s.Key).Scan(&storedHash, &status, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up idempotency key: %w", err)
	}
	if !bytes.Equal(storedHash, hash) {
		return nil, ErrKeyReused
	}
	return &Outcome{Status: status, Body: body}, nil
}

var errRace = errors.New("idempotency: concurrent insert")

// tryKeyLock takes the key's transaction-scoped advisory lock, the key's
// scope being $1–$4 (principal, method, route, key). Do and Once must take
// the same lock: it is what tells a request that another with its key is in
// flight.
const tryKeyLock = `pg_try_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3 || chr(31) || $4, 0))`

func deref(r *Outcome) Outcome {
	if r == nil {
		return Outcome{}
	}
	return *r
}

// begin takes the key's advisory lock for this transaction and reads the
// stored outcome. A record that exists wins over a busy lock: it is final.
func begin(ctx context.Context, tx pgx.Tx, s Scope, hash []byte) (*Outcome, error) {
	var (
		got        bool
		storedHash []byte
		status     *int
		body       []byte
	)
	err := tx.QueryRow(ctx, `
		SELECT `+tryKeyLock+`,
		       k.request_hash, k.status, k.body
		  FROM (SELECT 1) one
		  LEFT JOIN idempotency_keys k
		    ON k.principal = $1 AND k.method = $2 AND k.route = $3 AND k.key = $4`,
		s.Principal, s.Method, s.Route, s.Key).Scan(&got, &storedHash, &status, &body)
	if err != nil {
		return nil, fmt.Errorf("look up idempotency key: %w", err)
	}
	if status != nil {
		if !bytes.Equal(storedHash, hash) {
			return nil, ErrKeyReused
		}
		return &Outcome{Status: *status, Body: body}, nil
	}
	if !got {
		return nil, ErrInProgress
	}
	return nil, nil
}

func save(ctx context.Context, tx pgx.Tx, s Scope, hash []byte, out Outcome) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO idempotency_keys (principal, method, route, key, request_hash, status, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		s.Principal, s.Method, s.Route, s.Key, hash, out.Status, out.Body)
	if postgres.IsUniqueViolation(err, "idempotency_keys_pkey") {
		return errRace
	}
	if err != nil {
		return fmt.Errorf("save idempotency key: %w", err)
	}
	return nil
}

// Cleanup deletes records older than ttl, a batch at a time so it never
// holds many locks, and returns how many it deleted.
func Cleanup(ctx context.Context, db postgres.DBTX, ttl time.Duration, batch int) (int64, error) {
	var total int64
	for {
		tag, err := db.Exec(ctx, `
			DELETE FROM idempotency_keys
			 WHERE ctid IN (SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1::interval LIMIT $2)`,
			ttl, batch)
		if err != nil {
			return total, fmt.Errorf("delete old idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}
