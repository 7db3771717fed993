package redisx

import (
	"container/list"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// localLimiter is the per-process fallback: one token bucket per key in a
// map bounded by maxKeys. Buckets are kept in least-recently-used order so
// that idle ones can be dropped from the cold end as requests arrive, and so
// that a flood of distinct keys evicts the coldest instead of growing memory.
type localLimiter struct {
	maxKeys int

	mu   sync.Mutex
	lru  *list.List // of *localEntry, most recently used at the front
	keys map[string]*list.Element
}

type localEntry struct {
	key   string
	lim   *rate.Limiter
	last  time.Time
	limit Limit
}

func newLocalLimiter(maxKeys int) *localLimiter {
	return &localLimiter{maxKeys: maxKeys, lru: list.New(), keys: make(map[string]*list.Element)}
}

func (s *localLimiter) allow(key string, lim Limit, now time.Time) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()

	e := s.entry(key, lim, now)
	r := e.lim.ReserveN(now, 1)
	if delay := r.DelayFrom(now); !r.OK() || delay > 0 {
		// Give the token back: a refused request must not push the next
		// allowed one further out.
		r.CancelAt(now)
		s.evictIdle(now)
		return Decision{Allowed: false, RetryAfter: delay}
	}
	remaining := int(math.Floor(e.lim.TokensAt(now)))
	s.evictIdle(now)
	return Decision{Allowed: true, Remaining: max(remaining, 0)}
}

func (s *localLimiter) entry(key string, lim Limit, now time.Time) *localEntry {
	if el, ok := s.keys[key]; ok {
		s.lru.MoveToFront(el)
		e := el.Value.(*localEntry)
		e.last = now
		if e.limit != lim { // configuration changed since the bucket was made
			e.lim.SetLimitAt(now, perSecond(lim))
			e.lim.SetBurstAt(now, lim.Burst)
			e.limit = lim
		}
		return e
	}
	e := &localEntry{key: key, lim: rate.NewLimiter(perSecond(lim), lim.Burst), last: now, limit: lim}
	s.keys[key] = s.lru.PushFront(e)
	for s.lru.Len() > s.maxKeys {
		// Dropping a bucket that is not yet full hands that key a fresh
		// burst; acceptable only because it happens under a flood of keys.
		s.remove(s.lru.Back())
	}
	return e
}

// evictIdle drops buckets from the cold end that have been idle long enough
// to refill completely: a full bucket behaves exactly like a new one, so
// forgetting it changes no decision. Each entry is removed at most once, so
// the cost is amortised over the requests that created them.
func (s *localLimiter) evictIdle(now time.Time) {
	for el := s.lru.Back(); el != nil; el = s.lru.Back() {
		e := el.Value.(*localEntry)
		if now.Sub(e.last) < refillTime(e.limit) {
			return
		}
		s.remove(el)
	}
}

func (s *localLimiter) remove(el *list.Element) {
	s.lru.Remove(el)
	delete(s.keys, el.Value.(*localEntry).key)
}

func (s *localLimiter) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

func perSecond(lim Limit) rate.Limit {
	return rate.Limit(float64(lim.PerMinute) / 60)
}

// refillTime is how long an empty bucket takes to fill up to its burst.
func refillTime(lim Limit) time.Duration {
	return time.Duration(lim.Burst) * time.Minute / time.Duration(lim.PerMinute)
}
