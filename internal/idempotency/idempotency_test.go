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
	ctx := context.Background()
	s := idempotency.Scope{Principal: "u1", Method: http.MethodPost, Route: "/v1/spends", Key: "race"}
	slow := func(ctx context.Context, tx pgx.Tx) (idempotency.Outcome, error) {
		time.Sleep(20 * time.Millisecond) // keep the first request in flight while others arrive
		return effect("once", 201)(ctx, tx)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, replayed, err := idempotency.Do(ctx, pool, s, hash(t, `{"x":1}`), slow, fail)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, idempotency.ErrInProgress):
				results["in progress"]++
			case err != nil:
				t.Errorf("unexpected: %v", err)
			case replayed:
				require.Equal(t, `{"note":"once"}`, string(out.Body))
				results["replayed"]++
			default:
				results["ran"]++
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, results["ran"], "%v", results)
	require.Equal(t, 1, count(t, pool))
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
