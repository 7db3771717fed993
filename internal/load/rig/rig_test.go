package rig

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/platform/postgres/pgserver"
)

func TestEffectiveEnv(t *testing.T) {
	env := EffectiveEnv("RATE_LIMIT_RECHARGE_PER_MIN=100000", "EXTRA=1")
	joined := strings.Join(env, " ")
	require.Contains(t, joined, "RATE_LIMIT_RECHARGE_PER_MIN=100000")
	require.NotContains(t, joined, "RATE_LIMIT_RECHARGE_PER_MIN=0")
	require.Contains(t, joined, "RATE_LIMIT_REFUND_PER_MIN=0")
	require.True(t, strings.HasSuffix(joined, "EXTRA=1"))
}

func TestCPU(t *testing.T) {
	m := startCPU(os.Getpid(), os.Getpid())
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = n * n
	}
	c := m.stop()
	require.GreaterOrEqual(t, c.Driver, 0.0)
	require.GreaterOrEqual(t, c.Server, 0.0)
	require.Positive(t, c.Wall)
	require.Zero(t, procCPU(-1))
}

func TestTopWaits(t *testing.T) {
	s := DBStats{Waits: map[string]int64{"CPU": 30, "LWLock:WALWrite": 60, "IO:WALSync": 10}, Samples: 10}
	require.Equal(t, "LWLock:WALWrite 60%, CPU 30% (avg 10.0 active backends)", s.TopWaits(2))
}

// TestPGRestart is the restart chaos does: data survives a fast shutdown
// and the server comes back on the same port.
func TestPGRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg, err := StartPG(ctx, PGOptions{Fast: true})
	if errors.Is(err, pgserver.ErrNoBinaries) {
		t.Skip(err)
	}
	require.NoError(t, err)
	defer pg.Destroy()
	require.NoError(t, pg.CreateDB(ctx, "d"))
	exec := func(sql string) {
		c, err := pgx.Connect(ctx, pg.URL("d"))
		require.NoError(t, err)
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		require.NoError(t, err)
	}
	exec(`CREATE TABLE t (x int); INSERT INTO t VALUES (42)`)
	pid := pg.PID()
	require.Positive(t, pid)
	pg.Stop()
	require.Zero(t, pg.PID())
	_, err = pgx.Connect(ctx, pg.URL("d"))
	require.Error(t, err)
	require.NoError(t, pg.Start(ctx))
	require.NotEqual(t, pid, pg.PID())
	c, err := pgx.Connect(ctx, pg.URL("d"))
	require.NoError(t, err)
	defer c.Close(ctx)
	var x int
	require.NoError(t, c.QueryRow(ctx, `SELECT x FROM t`).Scan(&x))
	require.Equal(t, 42, x)
}
