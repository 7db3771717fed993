package rig

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DBStats is what PostgreSQL saw during one run: transactions, statements
// (pg_stat_statements) and what active backends were waiting on (sampled
// from pg_stat_activity every 100 ms).
type DBStats struct {
	Transactions int64            `json:"transactions"`
	Statements   int64            `json:"statements"`
	TopStatement []StatementStats `json:"top_statements,omitempty"`
	// Waits: samples of active backends by wait event ("CPU" when running).
	Waits   map[string]int64 `json:"waits"`
	Samples int64            `json:"samples"`
	CPU     CPU              `json:"cpu"`
}

// StatementStats is one normalised statement.
type StatementStats struct {
	Query  string  `json:"query"`
	Calls  int64   `json:"calls"`
	MeanMs float64 `json:"mean_ms"`
	Total  float64 `json:"total_ms"`
}

// dbWatch collects DBStats between start and stop.
type dbWatch struct {
	pool   *pgxpool.Pool
	db     string
	xact0  int64
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	waits   map[string]int64
	samples int64
}

func watchDB(ctx context.Context, pool *pgxpool.Pool, db string) *dbWatch {
	w := &dbWatch{pool: pool, db: db, waits: map[string]int64{}, done: make(chan struct{})}
	_, _ = pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	_ = pool.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1`, db).Scan(&w.xact0)
	sctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	go func() {
		defer close(w.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			rows, err := pool.Query(sctx, `
				SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*)
				  FROM pg_stat_activity
				 WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()
				 GROUP BY 1`, db)
			if err != nil {
				continue
			}
			w.mu.Lock()
			w.samples++
			for rows.Next() {
				var ev string
				var n int64
				if rows.Scan(&ev, &n) == nil {
					w.waits[ev] += n
				}
			}
			w.mu.Unlock()
			rows.Close()
		}
	}()
	return w
}

func (w *dbWatch) stop(ctx context.Context) DBStats {
	w.cancel()
	<-w.done
	var s DBStats
	var x1 int64
	_ = w.pool.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1`, w.db).Scan(&x1)
	s.Transactions = x1 - w.xact0
	rows, err := w.pool.Query(ctx, `
		SELECT query, calls, mean_exec_time, total_exec_time
		  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		 WHERE d.datname = $1 AND query NOT ILIKE '%pg_stat_%'
		 ORDER BY calls DESC`, w.db)
	if err == nil {
		for rows.Next() {
			var st StatementStats
			if rows.Scan(&st.Query, &st.Calls, &st.MeanMs, &st.Total) == nil {
				s.Statements += st.Calls
				if len(s.TopStatement) < 12 {
					st.Query = strings.Join(strings.Fields(st.Query), " ")
					if len(st.Query) > 140 {
						st.Query = st.Query[:140] + "..."
					}
					s.TopStatement = append(s.TopStatement, st)
				}
			}
		}
		rows.Close()
	}
	w.mu.Lock()
	s.Waits, s.Samples = w.waits, w.samples
	w.mu.Unlock()
	return s
}

// TopWaits formats the most frequent wait events as shares of the samples.
func (s DBStats) TopWaits(n int) string {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	var total int64
	for k, v := range s.Waits {
		all = append(all, kv{k, v})
		total += v
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for i, e := range all {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", e.k, 100*float64(e.v)/float64(max(total, 1))))
	}
	if s.Samples > 0 {
		return fmt.Sprintf("%s (avg %.1f active backends)", strings.Join(parts, ", "), float64(total)/float64(s.Samples))
	}
	return strings.Join(parts, ", ")
}
