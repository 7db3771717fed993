package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Several processes migrating one empty database at once: one applies, the
// others wait on the lock and find nothing to do; a second run is a no-op.
func TestMigrateConcurrently(t *testing.T) {
	ctx := context.Background()
	admin, err := postgres.Open(ctx, pgtest.URL(t), 2)
	require.NoError(t, err)
	defer admin.Close()
	name := "migrate_" + uuid.NewString()[:8]
	_, err = admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %q`, name))
	require.NoError(t, err)
	u, err := url.Parse(pgtest.URL(t))
	require.NoError(t, err)
	u.Path = "/" + name

	// Before anyone migrates: everything is pending, and asking writes
	// nothing (a readiness probe must not create goose's table).
	fresh, err := postgres.Open(ctx, u.String(), 2)
	require.NoError(t, err)
	pending, err := postgres.Pending(ctx, fresh)
	require.NoError(t, err)
	require.True(t, pending)
	var tables int
	require.NoError(t, fresh.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables))
	require.Zero(t, tables)
	fresh.Close()

	var wg sync.WaitGroup
	applied := make([][]string, 4)
	errs := make([]error, 4)
	for i := range applied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := postgres.Open(ctx, u.String(), 2)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			applied[i], errs[i] = postgres.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	total := 0
	for i := range applied {
		require.NoError(t, errs[i])
		total += len(applied[i])
	}
	pool, err := postgres.Open(ctx, u.String(), 2)
	require.NoError(t, err)
	defer pool.Close()
	status, err := postgres.MigrationStatus(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, len(status), total, "each migration applied exactly once")
	again, err := postgres.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Empty(t, again)
	pending, err = postgres.Pending(ctx, pool)
	require.NoError(t, err)
	require.False(t, pending)
}
