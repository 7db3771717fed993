// Package redisx sets up the Redis client and the per-user rate limiter.
//
// Redis is an optimisation here, never a dependency: the limiter shares its
// counts across replicas through Redis when it can, and falls back to a
// per-process limiter when Redis is absent, slow or down, so no request
// fails or waits because of Redis. Nothing about money is kept in Redis.
package redisx

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Client timeouts. A rate-limit check sits in front of every recharge and
// refund request, so a dead or black-holed Redis must cost at most a few
// hundred milliseconds once, after which the limiter stops asking for a while.
const (
	dialTimeout = 250 * time.Millisecond
	ioTimeout   = 250 * time.Millisecond
)

// NewClient parses a redis:// (or rediss://, unix://) URL and returns a
// client. It does not connect: go-redis dials on first use, so a Redis that
// is down at start-up does not stop the service from starting.
//
// Timeouts default to 250ms and command retries are off, because every
// caller here has a cheaper fallback than waiting; dial_timeout,
// read_timeout, write_timeout, pool_timeout and max_retries given in the
// URL's query win over these defaults.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	if rawURL == "" {
		return nil, errors.New("parse redis url: empty")
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// url.Error repeats the whole URL, password included; keep only
		// the reason so the error can be logged.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = dialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = ioTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = ioTimeout
	}
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = ioTimeout
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1 // -1 means none in go-redis; 0 would mean 3
	}
	// go-redis retries a failed dial 5 times with 100ms pauses by default,
	// which alone would hold a request for half a second per attempt.
	opt.DialerRetries = 1
	// Honour the caller's context deadline, not only the socket timeouts.
	opt.ContextTimeoutEnabled = true
	// Maintenance notifications serve connection hand-off on Redis
	// Enterprise/Cloud; this client only makes short independent calls, and
	// the extra handshake would slow every reconnect.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opt), nil
}
