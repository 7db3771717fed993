package redisx

import (
	"log/slog"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/diamondd/diamondd/internal/platform/redisx/redistest"
)

func TestMain(m *testing.M) {
	// As main does; here it also keeps the outage tests' dial errors quiet.
	redis.SetLogger(NewRedisLogger(slog.New(slog.DiscardHandler), nil))
	redistest.Main(m)
}
