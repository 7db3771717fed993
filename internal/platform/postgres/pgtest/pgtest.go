// Package pgtest gives each test its own migrated PostgreSQL database, cloned
// from a template in a few milliseconds (pgtestdb). The server is
// TEST_DATABASE_URL when set, otherwise a throwaway cluster this test binary
// starts from the system's binaries and stops when its tests end.
package pgtest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver pgtestdb uses
	"github.com/peterldowns/pgtestdb"

	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/platform/postgres/pgserver"
	"github.com/diamondd/diamondd/migrations"
)

var (
	once    sync.Once
	server  *pgserver.Server
	baseURL string
	initErr error
)

// Main runs the package's tests and stops the throwaway server afterwards.
// Use it from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if server != nil {
		server.Stop()
	}
	os.Exit(code)
}

// URL returns the admin URL of the test server, starting one if needed.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
			baseURL = u
			return
		}
		server, initErr = pgserver.Start(context.Background())
		if initErr == nil {
			baseURL = server.URL
		}
	})
	if initErr != nil {
		t.Fatalf("test database server: %v", initErr)
	}
	return baseURL
}

// Pool returns a pool on a fresh database migrated to the latest schema. The
// database is dropped when the test passes.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	conf := Config(t)
	pool, err := postgres.Open(context.Background(), conf.URL(), 30)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Config returns the connection settings of a fresh migrated database.
func Config(t testing.TB) *pgtestdb.Config {
	t.Helper()
	u, err := url.Parse(URL(t))
	if err != nil {
		t.Fatalf("parse test database url: %v", err)
	}
	pw, _ := u.User.Password()
	conf := pgtestdb.Config{
		DriverName: "pgx",
		Host:       u.Hostname(),
		Port:       u.Port(),
		User:       u.User.Username(),
		Password:   pw,
		Database:   u.Path[1:],
		Options:    "sslmode=disable",
	}
	return pgtestdb.Custom(t, conf, migrator{})
}

// migrator builds the template database with the project's own migrations;
// its hash changes whenever a migration file does.
type migrator struct{}

func (migrator) Hash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%s\x00", path, b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

func (migrator) Migrate(ctx context.Context, db *sql.DB, _ pgtestdb.Config) error {
	_, err := postgres.MigrateDB(ctx, db)
	return err
}
