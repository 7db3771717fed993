// Package postgres opens the connection pool, runs migrations, and offers the
// transaction helper and error predicates every store uses.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/diamondd/diamondd/migrations"
)

// DBTX is what both a pool and a transaction offer; read paths accept it so
// they can run inside or outside a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Open connects a pool and checks the connection.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		registerUUID(conn.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

// maxTxAttempts bounds the retries of a transaction that lost a
// serialization or deadlock race; the loser of such a race is safe to rerun.
const maxTxAttempts = 5

// WithTx runs fn in a transaction and commits it, retrying the whole function
// on serialization failures and deadlocks. fn must therefore be safe to run
// again: it may not call a payment channel or keep state across attempts.
func WithTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	var err error
	for attempt := 1; attempt <= maxTxAttempts; attempt++ {
		err = run(ctx, pool, fn)
		if err == nil || !IsRetryable(err) {
			return err
		}
		// A short, growing pause lets the winner of the race finish.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * time.Millisecond):
		}
	}
	return err
}

// run runs fn once in a Tx: committed when fn returns nil, rolled back
// otherwise (and on a panic, which then goes on).
func run(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	// The pool closes a connection that comes back inside a transaction
	// (say, when a rollback failed), so a broken one is never reused.
	defer conn.Release()
	tx := &Tx{conn: conn}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// IsRetryable reports a serialization failure or a deadlock.
func IsRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		(pgErr.Code == pgerrcode.SerializationFailure || pgErr.Code == pgerrcode.DeadlockDetected)
}

// Stamp is t at PostgreSQL's timestamp precision (microseconds), so that a
// time written, such as a lease's end, compares equal to what is read back.
func Stamp(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

// IsBadText reports text PostgreSQL cannot store: a NUL character, or bytes
// that are not valid in the database's encoding. It comes from what a client
// sent, so it is the client's mistake.
func IsBadText(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		(pgErr.Code == pgerrcode.CharacterNotInRepertoire || pgErr.Code == pgerrcode.UntranslatableCharacter)
}

// IsUniqueViolation reports a unique violation of the named constraint (any
// unique constraint when constraint is empty).
func IsUniqueViolation(err error, constraint string) bool {
	return isConstraint(err, pgerrcode.UniqueViolation, constraint)
}

// IsCheckViolation reports a check violation of the named constraint.
func IsCheckViolation(err error, constraint string) bool {
	return isConstraint(err, pgerrcode.CheckViolation, constraint)
}

func isConstraint(err error, code, constraint string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		return false
	}
	return constraint == "" || pgErr.ConstraintName == constraint
}

// Migrate applies every pending migration. The Postgres session lock makes it
// safe for several processes to start at once: the others wait, then find
// nothing to do.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return MigrateDB(ctx, db)
}

// MigrateDB is Migrate over a database/sql handle (the test template uses it).
func MigrateDB(ctx context.Context, db *sql.DB) ([]string, error) {
	p, err := provider(db)
	if err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate up: %w", err)
	}
	applied := make([]string, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Path)
	}
	return applied, nil
}

// MigrationStatus lists each migration and whether it is applied.
func MigrationStatus(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := provider(db)
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	lines := make([]string, 0, len(st))
	for _, s := range st {
		when := "pending"
		if s.State == goose.StateApplied {
			when = "applied " + s.AppliedAt.UTC().Format(time.RFC3339)
		}
		lines = append(lines, fmt.Sprintf("%-40s %s", s.Source.Path, when))
	}
	return lines, nil
}

// Pending reports whether any migration is not applied yet (for /readyz).
// It only reads goose's table, never creates it: a probe must not write,
// and a database no one has migrated has everything pending.
func Pending(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	want, err := latestMigration()
	if err != nil {
		return false, err
	}
	var have int64
	err = pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&have)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the applied migrations: %w", err)
	}
	return have < want, nil
}

// latestMigration is the version of the newest embedded migration.
func latestMigration() (int64, error) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return 0, fmt.Errorf("list migrations: %w", err)
	}
	var latest int64
	for _, f := range files {
		n, err := goose.NumericComponent(f)
		if err != nil {
			return 0, fmt.Errorf("migration %s: %w", f, err)
		}
		latest = max(latest, n)
	}
	return latest, nil
}

func provider(db *sql.DB) (*goose.Provider, error) {
	// Poll the lock every second (the default is 5 s) for up to 5 minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration locker: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return nil, fmt.Errorf("migration provider: %w", err)
	}
	return p, nil
}
