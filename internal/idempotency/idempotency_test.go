package idempotency_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/idempotency"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var errClient = errors.New("client mistake")

func setup(t *testing.T) *pgxpool.Pool {
	pool := pgtest.Pool(t)
	_, err := pool.Exec(context.Background(), `CREATE TABLE effects (id serial PRIMARY KEY, note text)`)
	require.NoError(t, err)
	return pool
}

func effect(note string, status int) idempotency.Run {
	return func(ctx context.Context, tx pgx.Tx) (idempotency.Outcome, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO effects (note) VALUES ($1)`, note); err != nil {
			return idempotency.Outcome{}, err
		}
		return idempotency.Outcome{Status: status, Body: []byte(`{"note":"` + note + `"}`)}, nil
	}
}

func fail(err error) (idempotency.Outcome, bool) {
	if errors.Is(err, errClient) {
		return idempotency.Outcome{Status: 409, Body: []byte(`{"code":"conflict"}`)}, true
	}
	return idempotency.Outcome{Status: 500, Body: []byte(`{"code":"internal"}`)}, false
}

func count(t *testing.T, pool *pgxpool.Pool) int {
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM effects`).Scan(&n))
	return n
}

func hash(t *testing.T, body string) []byte {
	h, err := idempotency.Hash([]byte(body))
	require.NoError(t, err)
	return h
}

func TestHashIsCanonical(t *testing.T) {
	require.Equal(t, hash(t, `{"a":1,"b":[1,2]}`), hash(t, "{ \"b\": [1, 2],\n \"a\": 1 }"))
	require.NotEqual(t, hash(t, `{"a":1}`), hash(t, `{"a":1.0}`))
	require.NotEqual(t, hash(t, `{"a":1}`), hash(t, `{"a":2}`))
}

func TestReplayAndReuse(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := context.Background()
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/spends", Key: "k1"}

	out, replayed, err := idempotency.Do(ctx, pool, s, hash(t, `{"x":1}`), effect("first", 201), fail)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, 201, out.Status)

	out, replayed, err = idempotency.Do(ctx, pool, s, hash(t, `{ "x": 1 }`), effect("second", 201), fail)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, `{"note":"first"}`, string(out.Body))
	require.Equal(t, 1, count(t, pool))

	_, _, err = idempotency.Do(ctx, pool, s, hash(t, `{"x":2}`), effect("third", 201), fail)
	require.ErrorIs(t, err, idempotency.ErrKeyReused)
	require.Equal(t, 1, count(t, pool))

	// the same key on another route or for another principal is another key
	other := s
	other.Principal = "u2"
	_, replayed, err = idempotency.Do(ctx, pool, other, hash(t, `{"x":1}`), effect("other", 201), fail)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, 2, count(t, pool))

	_, _, err = idempotency.Do(ctx, pool, idempotency.Scope{Key: ""}, nil, effect("x", 201), fail)
	require.ErrorIs(t, err, idempotency.ErrInvalidKey)
	_, _, err = idempotency.Do(ctx, pool, idempotency.Scope{Key: "bad\nkey"}, nil, effect("x", 201), fail)
	require.ErrorIs(t, err, idempotency.ErrInvalidKey)
}

func TestClientErrorsStoredServerErrorsNot(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := context.Background()
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/spends", Key: "k4xx"}
	failing := func(err error) idempotency.Run {
		return func(ctx context.Context, tx pgx.Tx) (idempotency.Outcome, error) {
			_, _ = tx.Exec(ctx, `INSERT INTO effects (note) VALUES ('rolled back')`)
			return idempotency.Outcome{}, err
		}
	}
	out, _, err := idempotency.Do(ctx, pool, s, hash(t, `{}`), failing(errClient), fail)
	require.NoError(t, err)
	require.Equal(t, 409, out.Status)
	// the retry replays the refusal even though it would now succeed
	out, replayed, err := idempotency.Do(ctx, pool, s, hash(t, `{}`), effect("late", 201), fail)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, 409, out.Status)
	require.Equal(t, 0, count(t, pool))

	s.Key = "k5xx"
	out, _, err = idempotency.Do(ctx, pool, s, hash(t, `{}`), failing(errors.New("database on fire")), fail)
	require.Error(t, err)
	require.Equal(t, 500, out.Status)
	out, replayed, err = idempotency.Do(ctx, pool, s, hash(t, `{}`), effect("retried", 201), fail)
	require.NoError(t, err)
	require.False(t, replayed, "a 5xx is not stored: the retry runs")
	require.Equal(t, 201, out.Status)
	require.Equal(t, 1, count(t, pool))
}

// Many requests with one key at once: exactly one effect; the others are
// either told it is in progress or get the replay.
func TestConcurrentSameKey(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/spends", Key: "race"}
	slow := func(ctx context.Context, tx pgx.Tx) (idempotency.Outcome, error) {
		time.Sleep(20 * time.Millisecond) // keep the first request in flight while others arrive
		return effect("once", 201)(ctx, tx)
	}
	race(t, pool, `{"note":"once"}`, func(ctx context.Context) (idempotency.Outcome, bool, error) {
		return idempotency.Do(ctx, pool, s, hash(t, `{"x":1}`), slow, fail)
	})
}

// race sends 20 requests with one key at once and requires exactly one
// effect, every other request being told it is in progress or replayed.
func race(t *testing.T, pool *pgxpool.Pool, body string, send func(context.Context) (idempotency.Outcome, bool, error)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, replayed, err := send(context.Background())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, idempotency.ErrInProgress):
				results["in progress"]++
			case err != nil:
				t.Errorf("unexpected: %v", err)
			default:
				require.Equal(t, body, string(out.Body))
				results[map[bool]string{true: "replayed", false: "ran"}[replayed]]++
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, results["ran"], "%v", results)
	require.Equal(t, 1, count(t, pool))
}

func insertEffect(note string) idempotency.Effect {
	return func(b *pgx.Batch) { b.Queue(`INSERT INTO effects (note) VALUES ($1)`, note) }
}

// Once: a fresh key runs its effect in one round trip; everything else takes
// Do's path and answers as Do does.
func TestOnce(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := context.Background()
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/recharges", Key: "once"}
	ok := idempotency.Outcome{Status: 201, Body: []byte(`{"note":"first"}`)}

	out, replayed, err := idempotency.Once(ctx, pool, s, hash(t, `{"x":1}`), ok, insertEffect("first"), fail)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, ok, out)
	require.Equal(t, 1, count(t, pool))

	// a retry is replayed, by Once and by Do alike, and runs nothing
	again := idempotency.Outcome{Status: 201, Body: []byte(`{"note":"second"}`)}
	out, replayed, err = idempotency.Once(ctx, pool, s, hash(t, `{ "x": 1 }`), again, insertEffect("second"), fail)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, ok, out)
	out, replayed, err = idempotency.Do(ctx, pool, s, hash(t, `{"x":1}`), effect("third", 201), fail)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, ok, out)
	require.Equal(t, 1, count(t, pool))

	// the key with another request
	_, _, err = idempotency.Once(ctx, pool, s, hash(t, `{"x":2}`), again, insertEffect("other"), fail)
	require.ErrorIs(t, err, idempotency.ErrKeyReused)
	require.Equal(t, 1, count(t, pool))

	// a key held by a request in flight is refused, and nothing runs
	s.Key = "busy"
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3 || chr(31) || $4, 0))`,
		s.Principal, s.Method, s.Route, s.Key)
	require.NoError(t, err)
	_, _, err = idempotency.Once(ctx, pool, s, hash(t, `{}`), ok, insertEffect("busy"), fail)
	require.ErrorIs(t, err, idempotency.ErrInProgress)
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, 1, count(t, pool))
}

// An effect that fails rolls back the claim with it: the stored answer is the
// refusal (a client error) or nothing (a server error), never the success
// response computed beforehand.
func TestOnceEffectFails(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `ALTER TABLE effects ADD CONSTRAINT note_short CHECK (length(note) < 10)`)
	require.NoError(t, err)
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/recharges", Key: "fails"}
	ok := idempotency.Outcome{Status: 201, Body: []byte(`{"note":"never"}`)}
	clientFail := func(err error) (idempotency.Outcome, bool) {
		if postgres.IsCheckViolation(err, "note_short") {
			return idempotency.Outcome{Status: 422, Body: []byte(`{"code":"too_long"}`)}, true
		}
		return fail(err)
	}

	out, replayed, err := idempotency.Once(ctx, pool, s, hash(t, `{}`), ok, insertEffect("far too long"), clientFail)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, 422, out.Status)
	out, replayed, err = idempotency.Once(ctx, pool, s, hash(t, `{}`), ok, insertEffect("short"), clientFail)
	require.NoError(t, err)
	require.True(t, replayed, "the refusal is stored")
	require.Equal(t, 422, out.Status)
	require.Equal(t, 0, count(t, pool))

	s.Key = "fails5xx"
	_, _, err = idempotency.Once(ctx, pool, s, hash(t, `{}`), ok, insertEffect("far too long"), fail)
	require.Error(t, err)
	out, replayed, err = idempotency.Once(ctx, pool, s, hash(t, `{}`), ok, insertEffect("short"), fail)
	require.NoError(t, err)
	require.False(t, replayed, "a server error is not stored: the retry runs")
	require.Equal(t, ok, out)
	require.Equal(t, 1, count(t, pool))
}

// Many requests with one key at once through Once: exactly one effect.
func TestOnceConcurrentSameKey(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/recharges", Key: "race"}
	ok := idempotency.Outcome{Status: 201, Body: []byte(`{"note":"once"}`)}
	slow := func(b *pgx.Batch) {
		b.Queue(`SELECT pg_sleep(0.02)`) // keep the first request in flight while others arrive
		b.Queue(`INSERT INTO effects (note) VALUES ('once')`)
	}
	race(t, pool, `{"note":"once"}`, func(ctx context.Context) (idempotency.Outcome, bool, error) {
		return idempotency.Once(ctx, pool, s, hash(t, `{"x":1}`), ok, slow, fail)
	})
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		_, _, err := idempotency.Do(ctx, pool, idempotency.Scope{Principal: "u", Method: "POST", Route: "/r", Key: k},
			hash(t, `{}`), effect(k, 201), fail)
		require.NoError(t, err)
	}
	_, err := pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '8 days' WHERE key <> 'c'`)
	require.NoError(t, err)
	n, err := idempotency.Cleanup(ctx, pool, 7*24*time.Hour, 1)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&left))
	require.Equal(t, 1, left)
}
