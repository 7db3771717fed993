package postgres_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

// google/uuid values go in and come out as uuids, alone, in arrays and as
// NULL-able pointers, with the pool's codec.
func TestUUIDRoundTrip(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	var back uuid.UUID
	var text string
	require.NoError(t, pool.QueryRow(ctx, `SELECT $1::uuid, $1::uuid::text`, id).Scan(&back, &text))
	require.Equal(t, id, back)
	require.Equal(t, id.String(), text)

	ids := []uuid.UUID{id, uuid.New()}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::uuid[]) u WHERE u = ANY($2)`, ids, ids[1:]).Scan(&n))
	require.Equal(t, 1, n)

	var none *uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `SELECT NULL::uuid`).Scan(&none))
	require.Nil(t, none)
	require.Error(t, pool.QueryRow(ctx, `SELECT NULL::uuid`).Scan(&back))
	require.NoError(t, pool.QueryRow(ctx, `SELECT $1::uuid`, ids[1].String()).Scan(&back))
	require.Equal(t, ids[1], back)
}
