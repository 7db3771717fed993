package load

import (
	"context"
	"sync"
	"time"
)

// notification is one webhook the sandbox channel owes the service.
type notification struct {
	step    string // StepWebhookPay or StepWebhookRefund
	body    []byte
	onAck   func(inline bool)
	attempt int
	next    time.Time
}

// channel plays the payment channel: it delivers signed notifications and,
// like a real channel, redelivers every one that was not acknowledged
// (anything but a 200) until it is. A delivery is first retried inline for
// a short while; what is still unacknowledged then goes to a queue that a
// background loop keeps redelivering with a capped backoff.
type channel struct {
	r *Runner

	mu    sync.Mutex
	queue []*notification
	wake  chan struct{}
	acked int64 // acknowledged from the queue
}

func newChannel(r *Runner) *channel {
	return &channel{r: r, wake: make(chan struct{}, 1)}
}

// deliver sends a notification and retries it inline for up to
// Options.InlineRetry; it reports whether it was acknowledged. If not, the
// notification is queued for redelivery and onAck runs when it finally is.
func (ch *channel) deliver(ctx context.Context, n *notification) bool {
	deadline := time.Now().Add(ch.r.opt.InlineRetry)
	for {
		if ch.attempt(ctx, n) {
			n.onAck(true)
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, backoff(n.attempt))
	}
	ch.enqueue(n)
	return false
}

// attempt is one delivery.
func (ch *channel) attempt(ctx context.Context, n *notification) bool {
	n.attempt++
	rctx, cancel := context.WithTimeout(ctx, ch.r.opt.RequestTimeout)
	defer cancel()
	start := time.Now()
	rep, err := ch.r.cl.do(rctx, request{method: "POST", path: "/v1/webhooks/sandbox", body: n.body, webhook: true})
	code := ""
	switch {
	case err != nil:
		code = transportCode(err)
	case rep.status != 200:
		code = rep.code
	}
	if n.attempt > 1 {
		ch.r.redeliveries.Add(1)
	}
	ch.r.record(n.step, time.Since(start), code, rep)
	return code == ""
}

func (ch *channel) enqueue(n *notification) {
	n.next = time.Now().Add(backoff(n.attempt))
	ch.mu.Lock()
	ch.queue = append(ch.queue, n)
	ch.mu.Unlock()
	select {
	case ch.wake <- struct{}{}:
	default:
	}
}

// pending is the number of notifications not yet acknowledged.
func (ch *channel) pending() int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return len(ch.queue)
}

// run redelivers queued notifications until ctx ends.
func (ch *channel) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-ch.wake:
		}
		ch.mu.Lock()
		now := time.Now()
		var due, rest []*notification
		for _, n := range ch.queue {
			if !n.next.After(now) {
				due = append(due, n)
			} else {
				rest = append(rest, n)
			}
		}
		ch.queue = rest
		ch.mu.Unlock()
		// A few at a time: a recovering service should not be stampeded.
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for _, n := range due {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if ch.attempt(ctx, n) {
					n.onAck(false)
					ch.mu.Lock()
					ch.acked++
					ch.mu.Unlock()
					return
				}
				ch.enqueue(n)
			}()
		}
		wg.Wait()
	}
}

// drain waits until every notification is acknowledged, or ctx ends; it
// returns how many are still unacknowledged.
func (ch *channel) drain(ctx context.Context) int {
	for {
		n := ch.pending()
		if n == 0 || ctx.Err() != nil {
			return n
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// backoff after the given attempt: 25 ms doubling, capped at 1 s.
func backoff(attempt int) time.Duration {
	d := 25 * time.Millisecond << min(max(attempt-1, 0), 6)
	return min(d, time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
