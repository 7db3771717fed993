package redisx

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/platform/redisx/redistest"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClient(t *testing.T, url string) redis.UniversalClient {
	t.Helper()
	c, err := NewClient(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// metric reads one counter or gauge from reg; labels are name=value pairs.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

var perMinute20 = Limit{PerMinute: 20, Burst: 20}

// takeBurst asserts that the first 20 requests are allowed with a falling
// Remaining, and returns the 21st decision.
func takeBurst(t *testing.T, allow func() Decision) Decision {
	t.Helper()
	for i := range 20 {
		d := allow()
		require.True(t, d.Allowed, "request %d", i+1)
		assert.Equal(t, 19-i, d.Remaining, "request %d", i+1)
		assert.Zero(t, d.RetryAfter)
		assert.Zero(t, d.RetryAfterSeconds())
	}
	return allow()
}

func TestRedisLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := NewLimiter(newClient(t, redistest.URL(t)), nil, reg, nil)
	key := redistest.KeyPrefix(t) + "recharge:u1"

	d := takeBurst(t, func() Decision { return l.Allow(t.Context(), key, perMinute20) })
	require.False(t, d.Allowed)
	// One request every 3s refills the bucket: the wait is at most that.
	assert.Greater(t, d.RetryAfter, time.Duration(0))
	assert.LessOrEqual(t, d.RetryAfter, 3*time.Second)
	assert.InDelta(t, 3, d.RetryAfterSeconds(), 1)
	assert.Zero(t, d.Remaining)

	// Another user is not affected.
	assert.True(t, l.Allow(t.Context(), redistest.KeyPrefix(t)+"recharge:u2", perMinute20).Allowed)

	assert.True(t, l.RedisUp())
	assert.Equal(t, 1.0, metric(t, reg, "diamondd_redis_up"))
	assert.Equal(t, 0.0, metric(t, reg, "diamondd_ratelimit_fallback_total"))
	assert.Equal(t, 21.0, metric(t, reg, "diamondd_ratelimit_decisions_total", "result", "allowed"))
	assert.Equal(t, 1.0, metric(t, reg, "diamondd_ratelimit_decisions_total", "result", "limited"))
}

func TestReplicasShareLimitThroughRedis(t *testing.T) {
	url := redistest.URL(t)
	a := NewLimiter(newClient(t, url), nil, prometheus.NewRegistry(), nil)
	b := NewLimiter(newClient(t, url), nil, prometheus.NewRegistry(), nil)
	key := redistest.KeyPrefix(t) + "refund:u1"
	lim := Limit{PerMinute: 5, Burst: 5}

	allowed := 0
	for i := range 10 {
		l := a
		if i%2 == 1 {
			l = b
		}
		if l.Allow(t.Context(), key, lim).Allowed {
			allowed++
		}
	}
	assert.Equal(t, 5, allowed, "5/min shared by two replicas, not 5 each")
	assert.False(t, a.Allow(t.Context(), key, lim).Allowed)
	assert.False(t, b.Allow(t.Context(), key, lim).Allowed)
}

func TestLocalOnly(t *testing.T) {
	clock := newClock()
	reg := prometheus.NewRegistry()
	l := NewLimiter(nil, nil, reg, clock.now)
	ctx := t.Context()

	d := takeBurst(t, func() Decision { return l.Allow(ctx, "recharge:u1", perMinute20) })
	require.False(t, d.Allowed)
	assert.Equal(t, 3*time.Second, d.RetryAfter)
	assert.Equal(t, 3, d.RetryAfterSeconds())

	// A refused request does not push the next allowed one further out.
	assert.False(t, l.Allow(ctx, "recharge:u1", perMinute20).Allowed)
	clock.advance(3*time.Second - time.Millisecond)
	assert.False(t, l.Allow(ctx, "recharge:u1", perMinute20).Allowed)
	clock.advance(time.Millisecond)
	assert.True(t, l.Allow(ctx, "recharge:u1", perMinute20).Allowed)
	assert.False(t, l.Allow(ctx, "recharge:u1", perMinute20).Allowed)

	assert.True(t, l.Allow(ctx, "recharge:u2", perMinute20).Allowed)

	assert.False(t, l.RedisUp())
	assert.ErrorIs(t, l.Ping(ctx), ErrNoRedis)
	assert.Equal(t, 0.0, metric(t, reg, "diamondd_redis_up"))
	// Per-process by configuration is not a fallback.
	assert.Equal(t, 0.0, metric(t, reg, "diamondd_ratelimit_fallback_total"))
	assert.Equal(t, 22.0, metric(t, reg, "diamondd_ratelimit_decisions_total", "result", "allowed"))
	assert.Equal(t, 4.0, metric(t, reg, "diamondd_ratelimit_decisions_total", "result", "limited"))
}

func TestLimitDefaults(t *testing.T) {
	l := NewLimiter(nil, nil, nil, newClock().now)
	// Burst 0 means burst = per-minute figure.
	for i := range 5 {
		require.True(t, l.Allow(t.Context(), "k", Limit{PerMinute: 5}).Allowed, i)
	}
	assert.False(t, l.Allow(t.Context(), "k", Limit{PerMinute: 5}).Allowed)
	// PerMinute 0 switches the limit off.
	for range 100 {
		require.True(t, l.Allow(t.Context(), "off", Limit{}).Allowed)
	}
}

// countHook counts the commands a client sends.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestRedisOutageFallsBackAndRecovers(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv.URL())
	hook := &countHook{}
	client.AddHook(hook)
	clock := newClock()
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	l := NewLimiter(client, slog.New(slog.NewTextHandler(&logs, nil)), reg, clock.now)
	ctx := t.Context()
	key := redistest.KeyPrefix(t) + "recharge:u1"
	lim := Limit{PerMinute: 3, Burst: 3}
	fallbacks := func() float64 { return metric(t, reg, "diamondd_ratelimit_fallback_total") }

	require.True(t, l.Allow(ctx, key, lim).Allowed)
	require.True(t, l.RedisUp())
	require.Equal(t, 0.0, fallbacks())

	srv.Stop()

	// The local bucket starts full: the outage costs one extra burst.
	d := l.Allow(ctx, key, lim)
	assert.True(t, d.Allowed)
	assert.Equal(t, 2, d.Remaining)
	assert.False(t, l.RedisUp())
	assert.Equal(t, 0.0, metric(t, reg, "diamondd_redis_up"))
	assert.Equal(t, 1.0, fallbacks())
	assert.Equal(t, 1, strings.Count(logs.String(), "redis unavailable"), logs.String())

	// During the back-off Redis is not asked at all, and limits still hold.
	sent := hook.n.Load()
	var got []bool
	for range 3 {
		got = append(got, l.Allow(ctx, key, lim).Allowed)
	}
	assert.Equal(t, []bool{true, true, false}, got)
	assert.Equal(t, sent, hook.n.Load(), "no Redis command during back-off")
	assert.Equal(t, 4.0, fallbacks())

	// After the back-off one request probes the still-dead Redis.
	clock.advance(redisBackoff)
	l.Allow(ctx, key, lim)
	assert.Greater(t, hook.n.Load(), sent)
	assert.False(t, l.RedisUp())
	assert.Equal(t, 5.0, fallbacks())
	assert.Equal(t, 1, strings.Count(logs.String(), "redis unavailable"), "outage logged once a minute")

	srv.Restart()
	// The first probe may still meet a connection from before the restart.
	for i := 0; i < 3 && !l.RedisUp(); i++ {
		clock.advance(redisBackoff)
		l.Allow(ctx, key, lim)
	}
	require.True(t, l.RedisUp())
	assert.Equal(t, 1.0, metric(t, reg, "diamondd_redis_up"))
	assert.Contains(t, logs.String(), "redis reachable again")

	before := fallbacks()
	sent = hook.n.Load()
	// The restarted Redis is empty: a fresh shared bucket of 3.
	for range 3 {
		l.Allow(ctx, key, lim)
	}
	assert.False(t, l.Allow(ctx, key, lim).Allowed)
	assert.Equal(t, before, fallbacks(), "no fallback once Redis is back")
	assert.Greater(t, hook.n.Load(), sent)
}

func TestOutageLogThrottled(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv.URL())
	srv.Stop()
	clock := newClock()
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	l := NewLimiter(client, slog.New(slog.NewTextHandler(&logs, nil)), reg, clock.now)

	// Every call probes (the clock jumps past each back-off) and fails.
	calls := 0
	for elapsed := time.Duration(0); elapsed <= 150*time.Second; elapsed += redisBackoff {
		l.Allow(t.Context(), "k", perMinute20)
		calls++
		clock.advance(redisBackoff)
	}
	assert.Equal(t, 3, strings.Count(logs.String(), "redis unavailable"), "at 0s, 60s and 120s:\n%s", logs.String())
	assert.Equal(t, float64(calls), metric(t, reg, "diamondd_ratelimit_fallback_total"))
	assert.Error(t, l.Ping(t.Context()))
}

func TestCallerCancelDoesNotMarkRedisDown(t *testing.T) {
	l := NewLimiter(newClient(t, redistest.URL(t)), nil, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := l.Allow(ctx, redistest.KeyPrefix(t)+"k", perMinute20)
	assert.True(t, d.Allowed, "answered locally")
	assert.True(t, l.RedisUp())
}

func TestPingRecovers(t *testing.T) {
	srv := redistest.Start(t)
	l := NewLimiter(newClient(t, srv.URL()), nil, nil, nil)
	require.NoError(t, l.Ping(t.Context()))
	srv.Stop()
	require.Error(t, l.Ping(t.Context()))
	assert.False(t, l.RedisUp())
	srv.Restart()
	// A pooled connection from before the restart may fail once.
	var err error
	for range 3 {
		if err = l.Ping(t.Context()); err == nil {
			break
		}
	}
	require.NoError(t, err)
	assert.True(t, l.RedisUp())
}

func TestLocalEvictsIdleKeys(t *testing.T) {
	s := newLocalLimiter(100)
	t0 := newClock().now()
	lim := Limit{PerMinute: 60, Burst: 60} // refills in 60s
	for i := range 10 {
		s.allow(fmt.Sprint("idle", i), lim, t0)
	}
	s.allow("recent", lim, t0.Add(59*time.Second))
	require.Equal(t, 11, s.len(), "59s idle: buckets not yet full, kept")
	s.allow("new", lim, t0.Add(60*time.Second))
	assert.Equal(t, 2, s.len(), "60s idle: buckets full again, dropped")
}

func TestLocalIsBounded(t *testing.T) {
	l := NewLimiter(nil, nil, nil, newClock().now)
	l.local = newLocalLimiter(1000)
	for i := range 5000 {
		l.Allow(t.Context(), fmt.Sprint("user", i), perMinute20)
	}
	assert.Equal(t, 1000, l.local.len())
	// The most recent keys keep their state.
	for range 19 {
		l.Allow(t.Context(), "user4999", perMinute20)
	}
	assert.False(t, l.Allow(t.Context(), "user4999", perMinute20).Allowed)
}

func TestLocalFollowsLimitChanges(t *testing.T) {
	l := NewLimiter(nil, nil, nil, newClock().now)
	require.True(t, l.Allow(t.Context(), "k", Limit{PerMinute: 1}).Allowed)
	require.False(t, l.Allow(t.Context(), "k", Limit{PerMinute: 1}).Allowed)
	// Raising the burst lets more through; the bucket keeps what it had.
	assert.Equal(t, 0, l.Allow(t.Context(), "k", Limit{PerMinute: 2, Burst: 2}).Remaining)
}

func TestNewClient(t *testing.T) {
	c, err := NewClient("redis://:s3cret@127.0.0.1:6379/2")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	opt := c.(*redis.Client).Options()
	assert.Equal(t, 2, opt.DB)
	assert.Equal(t, dialTimeout, opt.DialTimeout)
	assert.Equal(t, ioTimeout, opt.ReadTimeout)
	assert.Equal(t, ioTimeout, opt.WriteTimeout)
	assert.Equal(t, ioTimeout, opt.PoolTimeout)
	assert.Zero(t, opt.MaxRetries, "no command retries")
	assert.Equal(t, 1, opt.DialerRetries)

	c2, err := NewClient("redis://127.0.0.1:6379/0?dial_timeout=2s&max_retries=2")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c2.Close() })
	opt = c2.(*redis.Client).Options()
	assert.Equal(t, 2*time.Second, opt.DialTimeout, "URL wins")
	assert.Equal(t, 2, opt.MaxRetries)

	for _, bad := range []string{"", "http://127.0.0.1:6379", "redis://:s3cret@host:notaport/0", "redis://127.0.0.1:6379/x"} {
		_, err := NewClient(bad)
		require.Error(t, err, bad)
		assert.NotContains(t, err.Error(), "s3cret")
	}
}

func TestRedisLoggerThrottles(t *testing.T) {
	clock := newClock()
	var logs bytes.Buffer
	l := NewRedisLogger(slog.New(slog.NewTextHandler(&logs, nil)), clock.now)
	for range 30 {
		l.Printf(t.Context(), "redis: failed to dial %s", "x")
		clock.advance(2 * time.Second) // 30 lines over 60s
	}
	l.Printf(t.Context(), "redis: failed to dial %s", "y")
	out := logs.String()
	assert.Equal(t, 2, strings.Count(out, "failed to dial"), out)
	assert.Contains(t, out, "suppressed=29")
}
