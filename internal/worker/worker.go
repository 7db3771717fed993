// Package worker runs the background loops of `diamondd serve`: each loop is
// a step repeated on an interval until the context ends. Steps claim their
// rows with FOR UPDATE SKIP LOCKED (or are otherwise idempotent), so any
// number of replicas can run the same loops.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/diamondd/diamondd/internal/recovery"
)

// Loop is one background job.
type Loop struct {
	Name     string
	Interval time.Duration
	// Step does one round of work and says how much it did. A step that did
	// a full batch runs again at once instead of waiting for the interval.
	Step func(ctx context.Context) (done int, full bool, err error)
	Log  *slog.Logger
	// Panics, when set, counts the panics the loop recovered: its step's
	// own, and those its step recovered in single items (recovery.Catch).
	Panics prometheus.Counter
}

// NewPanicCounter registers diamondd_worker_panics_total{loop} on reg; give
// each loop its label's counter as Loop.Panics.
func NewPanicCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "diamondd_worker_panics_total",
		Help: "Panics recovered in background loops, by loop; the loop goes on at its next interval.",
	}, []string{"loop"})
	reg.MustRegister(c)
	return c
}

// Run repeats the step until ctx ends. A failed step is logged and retried
// on the next tick: loops never stop on errors. A panic in the step is
// recovered, logged with its stack and counted, and the step runs again
// after the interval, like a failed one: one bad row never takes the
// service down, nor makes the loop spin on it.
func (l Loop) Run(ctx context.Context) {
	log := l.logger()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, full, err := l.step(ctx)
		for _, p := range recovery.Find(err) {
			l.panicked(ctx, p.Value, p.Stack)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("worker step failed", "loop", l.Name, "error", err)
		case n > 0:
			log.Debug("worker step", "loop", l.Name, "done", n)
		}
		if full && err == nil {
			t.Reset(0)
		} else {
			t.Reset(l.Interval)
		}
	}
}

// step runs the step once, turning a panic into an error.
func (l Loop) step(ctx context.Context) (n int, full bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			l.panicked(ctx, v, debug.Stack())
			n, full, err = 0, false, fmt.Errorf("panic: %v", v)
		}
	}()
	return l.Step(ctx)
}

func (l Loop) panicked(ctx context.Context, v any, stack []byte) {
	l.logger().ErrorContext(ctx, "worker panicked", "loop", l.Name, "panic", fmt.Sprint(v), "stack", string(stack))
	if l.Panics != nil {
		l.Panics.Inc()
	}
}

func (l Loop) logger() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}

// RunAll runs the loops until ctx ends and they have all returned.
func RunAll(ctx context.Context, loops ...Loop) {
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() { defer wg.Done(); l.Run(ctx) }()
	}
	wg.Wait()
}
