package redisx

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// RedisLogger adapts go-redis's own logger to slog. go-redis logs every
// failed dial to stderr through a process-wide logger, which during an
// outage would bypass the Limiter's once-a-minute warning; main installs
// this once with redis.SetLogger(redisx.NewRedisLogger(log, nil)). It writes
// at most one line a minute and reports how many it held back.
type RedisLogger struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// NewRedisLogger returns a RedisLogger writing to log; now may be nil
// (time.Now).
func NewRedisLogger(log *slog.Logger, now func() time.Time) *RedisLogger {
	if now == nil {
		now = time.Now
	}
	return &RedisLogger{log: log, now: now}
}

// Printf implements go-redis's logging interface.
func (l *RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < outageLogEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.last = now
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...), "source", "go-redis", "suppressed", suppressed)
}
