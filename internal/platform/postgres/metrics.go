package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exposes the pool's statistics, read at scrape time.
type PoolCollector struct {
	pool                                  *pgxpool.Pool
	total, idle, acquired, max            *prometheus.Desc
	acquires, emptyAcquires, acquireWaitS *prometheus.Desc
}

// NewPoolCollector describes the pool's metrics.
func NewPoolCollector(pool *pgxpool.Pool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("diamondd_db_pool_"+name, help, nil, nil)
	}
	return &PoolCollector{
		pool:          pool,
		total:         d("conns", "Connections open."),
		idle:          d("idle_conns", "Connections idle."),
		acquired:      d("acquired_conns", "Connections in use."),
		max:           d("max_conns", "Maximum connections."),
		acquires:      d("acquires_total", "Connections acquired."),
		emptyAcquires: d("empty_acquires_total", "Acquisitions that had to wait for a connection."),
		acquireWaitS:  d("acquire_wait_seconds_total", "Time spent waiting for a connection."),
	}
}

func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.idle, c.acquired, c.max, c.acquires, c.emptyAcquires, c.acquireWaitS} {
		ch <- d
	}
}

func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	k := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.total, float64(s.TotalConns()))
	g(c.idle, float64(s.IdleConns()))
	g(c.acquired, float64(s.AcquiredConns()))
	g(c.max, float64(s.MaxConns()))
	k(c.acquires, float64(s.AcquireCount()))
	k(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	k(c.acquireWaitS, s.AcquireDuration().Seconds())
}
