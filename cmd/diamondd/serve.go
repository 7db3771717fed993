package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"

	"github.com/diamondd/diamondd/internal/app"
	"github.com/diamondd/diamondd/internal/config"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/worker"
)

// stopGrace bounds how long serve waits, once the HTTP drain is over, for
// the workers to end their rounds and for the database connections to come
// back. Both are cancelled by then; one that does not notice is left to the
// process's exit, where PostgreSQL rolls back whatever it had open.
const stopGrace = 5 * time.Second

// serve runs the API and the workers until ctx ends, then shuts down
// gracefully: the listener closes, requests in flight finish, and the
// workers stop. Requests still running at SHUTDOWN_TIMEOUT are cancelled
// and their connections closed; the rest of the stop takes at most
// stopGrace. That is the timeout doing its job, not a failure: it is logged
// and serve returns nil. ready, when set, receives the listening address.
// A database with migrations pending is refused before anything starts.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	var wg sync.WaitGroup // the workers
	defer func() {
		// pool.Close waits for every connection in use.
		if !within(stopGrace, func() { wg.Wait(); pool.Close() }) {
			log.Warn("workers or database connections still busy after shutdown; not waiting for them", "waited", stopGrace)
		}
	}()
	// On a database behind its migrations every data route would answer
	// 500 and every worker round fail; better not to start at all.
	pending, err := postgres.Pending(ctx, pool)
	if err != nil {
		return fmt.Errorf("check migrations: %w", err)
	}
	if pending {
		return errors.New("the database has migrations pending: run `diamondd migrate up` first (`diamondd migrate status` lists them)")
	}
	a, err := app.New(ctx, cfg, app.Options{Pool: pool, Log: log})
	if err != nil {
		return err
	}
	defer a.Close()
	// Requests run under reqCtx, which ends when they outlive the drain.
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		Handler:           a.Echo,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.PprofAddr != "" {
		stop, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Info("diamondd listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() { defer wg.Done(); worker.RunAll(workCtx, a.Loops...) }()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
		err = drain(context.WithoutCancel(ctx), srv, cfg.ShutdownTTL, cancelRequests, log)
	}
	stopWork()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// drain shuts srv down, letting requests in flight finish for up to ttl;
// then it cancels those still running and closes their connections.
func drain(ctx context.Context, srv *http.Server, ttl time.Duration, cancelRequests func(), log *slog.Logger) error {
	sctx, cancel := context.WithTimeout(ctx, ttl)
	defer cancel()
	err := srv.Shutdown(sctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Warn("requests still running at SHUTDOWN_TIMEOUT; cancelling them", "timeout", ttl)
	cancelRequests()
	_ = srv.Close() // the listener is closed already: only connections are left
	return nil
}

// within runs f and waits at most d for it to return, reporting whether it
// did.
func within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// servePprof serves net/http/pprof on its own loopback listener (PPROF_ADDR),
// with lock and blocking profiles on.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	runtime.SetMutexProfileFraction(5)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PPROF_ADDR %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
