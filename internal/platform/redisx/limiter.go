package redisx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

const (
	// redisCallTimeout bounds one Redis rate check, whatever the caller's
	// context allows: past it the local limiter answers instead.
	redisCallTimeout = 300 * time.Millisecond
	// redisBackoff is how long the limiter stays on the local fallback after
	// a Redis failure before one request probes Redis again. Short enough to
	// recover quickly, long enough that a dead Redis costs one failed call
	// per interval rather than one per request.
	redisBackoff = 2 * time.Second
	// outageLogEvery throttles the outage warning: a Redis outage under load
	// would otherwise write one line per request.
	outageLogEvery = time.Minute
	// defaultMaxLocalKeys bounds the fallback's memory (a few hundred bytes
	// per key); far above the number of users active in one minute on one
	// replica.
	defaultMaxLocalKeys = 100_000
)

// ErrNoRedis is returned by Ping on a Limiter built without a Redis client.
var ErrNoRedis = errors.New("redisx: no redis configured")

// Limit is a rate: PerMinute requests a minute, with bursts of up to Burst
// at once. A Burst of 0 or less means Burst = PerMinute (the API default);
// a PerMinute of 0 or less switches the limit off, so a limit can be
// disabled in configuration.
type Limit struct {
	PerMinute int
	Burst     int
}

func (l Limit) normalized() Limit {
	if l.Burst <= 0 {
		l.Burst = l.PerMinute
	}
	return l
}

// Decision is the answer for one request.
type Decision struct {
	Allowed bool
	// RetryAfter is how long until one more request would be allowed; zero
	// when Allowed.
	RetryAfter time.Duration
	// Remaining is how many more requests would be allowed right now.
	// Zero when the limit is switched off.
	Remaining int
}

// RetryAfterSeconds is RetryAfter for a Retry-After header: whole seconds,
// rounded up so a client that waits exactly that long is allowed, and at
// least 1 when the request was refused.
func (d Decision) RetryAfterSeconds() int {
	if d.Allowed {
		return 0
	}
	return max(1, int(math.Ceil(d.RetryAfter.Seconds())))
}

// Limiter decides whether a request is within its rate limit. With a Redis
// client it runs GCRA in Redis (redis_rate), so every replica shares the
// count; without one, or while Redis fails, it answers from a per-process
// token bucket per key. It never returns an error and never waits longer
// than redisCallTimeout.
//
// While falling back, each replica allows the full limit on its own, and
// keys start with a full bucket when the fallback begins: during an outage a
// user can get up to one extra burst per replica. That is the price of not
// failing requests when Redis is down.
type Limiter struct {
	client redis.UniversalClient // nil: local only
	gcra   *redis_rate.Limiter
	local  *localLimiter
	log    *slog.Logger
	now    func() time.Time

	up        prometheus.Gauge
	fallbacks prometheus.Counter
	allowed   prometheus.Counter
	limited   prometheus.Counter

	redisUp atomic.Bool // fast path: read on every request

	mu            sync.Mutex // guards the fields below
	retryAt       time.Time  // while down: when the next probe may go to Redis
	lastOutageLog time.Time
	outageLogged  bool // an outage was logged and its recovery not yet; so a flapping Redis logs at most one outage and one recovery a minute
	failures      int  // Redis failures since the last outage log line
}

// NewLimiter returns a Limiter. client may be nil (per-process limits only).
// log may be nil (no logs), reg may be nil (metrics not registered), now may
// be nil (time.Now); now drives the fallback buckets, the back-off and the
// log throttle, while Redis uses its own clock.
//
// It registers diamondd_redis_up, diamondd_ratelimit_fallback_total and
// diamondd_ratelimit_decisions_total{result} on reg, and so panics if reg
// already holds them: build one Limiter per registry.
func NewLimiter(client redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "diamondd_ratelimit_decisions_total",
		Help: "Rate limit decisions, by result (allowed or limited).",
	}, []string{"result"})
	l := &Limiter{
		client: client,
		local:  newLocalLimiter(defaultMaxLocalKeys),
		log:    log,
		now:    now,
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "diamondd_redis_up",
			Help: "1 while the rate limiter reaches Redis, 0 while it falls back to per-process limits or has no Redis.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "diamondd_ratelimit_fallback_total",
			Help: "Rate limit decisions taken per process because the configured Redis was unavailable.",
		}),
		allowed: decisions.WithLabelValues("allowed"),
		limited: decisions.WithLabelValues("limited"),
	}
	if client != nil {
		l.gcra = redis_rate.NewLimiter(client)
		// Optimistic until the first call says otherwise: the alternative
		// would send the first requests after start-up to the fallback.
		l.redisUp.Store(true)
		l.up.Set(1)
	}
	if reg != nil {
		reg.MustRegister(l.up, l.fallbacks, decisions)
	}
	return l
}

// RedisUp reports whether the limiter is currently sharing limits through
// Redis: false without a client, and from a failed Redis call until a later
// call succeeds. Readiness checks can report it; Ping refreshes it.
func (l *Limiter) RedisUp() bool { return l.redisUp.Load() }

// Ping checks Redis now (bounded by the same short timeout) and updates
// RedisUp with the result, so a readiness probe sees a recovery or an outage
// even when no rate-limited request has come in.
func (l *Limiter) Ping(ctx context.Context) error {
	if l.client == nil {
		return ErrNoRedis
	}
	ctx, cancel := context.WithTimeout(ctx, redisCallTimeout)
	defer cancel()
	if err := l.client.Ping(ctx).Err(); err != nil {
		err = fmt.Errorf("ping redis: %w", err)
		l.redisFailed(err)
		return err
	}
	l.redisOK()
	return nil
}

// Allow takes one request from key's allowance under lim. key names the
// action and the user ("recharge:{user_id}"); the same key must always be
// used with the same Limit.
func (l *Limiter) Allow(ctx context.Context, key string, lim Limit) Decision {
	lim = lim.normalized()
	if lim.PerMinute <= 0 {
		l.allowed.Inc()
		return Decision{Allowed: true}
	}
	if l.useRedis() {
		d, err := l.allowRedis(ctx, key, lim)
		if err == nil {
			l.redisOK()
			return l.count(d)
		}
		// A caller that went away or ran out of time says nothing about
		// Redis; anything else does.
		if ctx.Err() == nil {
			l.redisFailed(err)
		}
	}
	if l.client != nil {
		l.fallbacks.Inc()
	}
	return l.count(l.local.allow(key, lim, l.now()))
}

func (l *Limiter) count(d Decision) Decision {
	if d.Allowed {
		l.allowed.Inc()
	} else {
		l.limited.Inc()
	}
	return d
}

// useRedis reports whether this request should go to Redis. While Redis is
// down only one request per back-off interval probes it; the others stay
// local without waiting for the probe.
func (l *Limiter) useRedis() bool {
	if l.client == nil {
		return false
	}
	if l.redisUp.Load() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Before(l.retryAt) {
		return false
	}
	l.retryAt = now.Add(redisBackoff) // claim the probe
	return true
}

func (l *Limiter) allowRedis(ctx context.Context, key string, lim Limit) (d Decision, err error) {
	ctx, cancel := context.WithTimeout(ctx, redisCallTimeout)
	defer cancel()
	// redis_rate type-asserts the script's reply; a proxy or server that
	// answers in an unexpected shape must cost a fallback, not the request.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("redis rate limit %s: unexpected reply: %v", key, p)
		}
	}()
	res, err := l.gcra.Allow(ctx, key, redis_rate.Limit{Rate: lim.PerMinute, Period: time.Minute, Burst: lim.Burst})
	if err != nil {
		return Decision{}, fmt.Errorf("redis rate limit %s: %w", key, err)
	}
	d = Decision{Allowed: res.Allowed > 0, Remaining: max(res.Remaining, 0)}
	if !d.Allowed {
		d.RetryAfter = max(res.RetryAfter, 0)
	}
	return d, nil
}

func (l *Limiter) redisOK() {
	if l.redisUp.Load() {
		return
	}
	l.mu.Lock()
	l.redisUp.Store(true)
	l.up.Set(1)
	logRecovery := l.outageLogged
	l.outageLogged = false
	l.mu.Unlock()
	if logRecovery {
		l.log.Info("redis reachable again: rate limits are shared across replicas")
	}
}

func (l *Limiter) redisFailed(err error) {
	l.mu.Lock()
	now := l.now()
	l.redisUp.Store(false)
	l.up.Set(0)
	l.retryAt = now.Add(redisBackoff)
	l.failures++
	logNow := l.lastOutageLog.IsZero() || now.Sub(l.lastOutageLog) >= outageLogEvery
	failures := l.failures
	if logNow {
		l.lastOutageLog = now
		l.outageLogged = true
		l.failures = 0
	}
	l.mu.Unlock()
	if logNow {
		l.log.Warn("redis unavailable: rate limits are per process until it returns",
			"err", err, "failures", failures, "retry_every", redisBackoff)
	}
}
