// Package worker runs the background loops of `diamondd serve`: each loop is
// a step repeated on an interval until the context ends. Steps claim their
// rows with FOR UPDATE SKIP LOCKED (or are otherwise idempotent), so any
// number of replicas can run the same loops.
package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Loop is one background job.
type Loop struct {
	Name     string
	Interval time.Duration
	// Step does one round of work and says how much it did. A step that did
	// a full batch runs again at once instead of waiting for the interval.
	Step func(ctx context.Context) (done int, full bool, err error)
	Log  *slog.Logger
}

// Run repeats the step until ctx ends. A failed step is logged and retried
// on the next tick: loops never stop on errors.
func (l Loop) Run(ctx context.Context) {
	log := l.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, full, err := l.Step(ctx)
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

// RunAll runs the loops until ctx ends and they have all returned.
func RunAll(ctx context.Context, loops ...Loop) {
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() { defer wg.Done(); l.Run(ctx) }()
	}
	wg.Wait()
}
