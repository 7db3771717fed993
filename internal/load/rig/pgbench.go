package rig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/diamondd/diamondd/internal/platform/postgres/pgserver"
)

// PgbenchResult is a run of pgbench's built-in TPC-B-like script.
type PgbenchResult struct {
	Scale   int     `json:"scale"`
	Clients int     `json:"clients"`
	Seconds float64 `json:"seconds"`
	Mode    string  `json:"protocol"`
	TPS     float64 `json:"tps"`
	P50ms   float64 `json:"p50_ms"`
	P95ms   float64 `json:"p95_ms"`
	P99ms   float64 `json:"p99_ms"`
	Maxms   float64 `json:"max_ms"`
	CPU     CPU     `json:"cpu"`
}

func pgbenchBin() (string, error) {
	if d, err := pgserver.BinDir(); err == nil {
		if _, err := os.Stat(filepath.Join(d, "pgbench")); err == nil {
			return filepath.Join(d, "pgbench"), nil
		}
	}
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	return "", errors.New("pgbench not found (it comes with the postgresql-client or postgresql-contrib package)")
}

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// Pgbench initialises the database at the scale and runs the TPC-B-like
// script with the clients for the duration, in extended protocol with
// prepared statements (how pgx talks). Latencies come from pgbench's
// per-transaction log.
func Pgbench(ctx context.Context, url string, pgPID, scale, clients int, d time.Duration) (*PgbenchResult, error) {
	bin, err := pgbenchBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "diamond-load-pgbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	init := exec.CommandContext(ctx, bin, "-i", "-q", "-s", strconv.Itoa(scale), url)
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w: %s", err, out)
	}
	threads := min(clients, 2)
	run := exec.CommandContext(ctx, bin, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(int(d.Seconds())), "-M", "prepared", "-n", "-l", "--log-prefix", filepath.Join(dir, "log"), url)
	run.Dir = dir
	meter := startCPU(0, pgPID)
	out, err := run.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgbench: %w: %s", err, out)
	}
	cpu := meter.stop()
	cpu.Driver = (run.ProcessState.UserTime() + run.ProcessState.SystemTime()).Seconds()
	m := tpsRe.FindStringSubmatch(string(out))
	if m == nil {
		return nil, fmt.Errorf("pgbench: no tps in its output: %s", out)
	}
	res := &PgbenchResult{Scale: scale, Clients: clients, Seconds: d.Seconds(), Mode: "prepared"}
	res.TPS, _ = strconv.ParseFloat(m[1], 64)
	res.CPU = cpu
	h := hdrhistogram.New(1, int64(2*time.Minute/time.Microsecond), 3)
	logs, _ := filepath.Glob(filepath.Join(dir, "log.*"))
	for _, l := range logs {
		f, err := os.Open(l)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// client_id transaction_no time script_no time_epoch time_us
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			if us, err := strconv.ParseInt(fs[2], 10, 64); err == nil {
				_ = h.RecordValue(max(us, 1))
			}
		}
		f.Close()
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	res.P50ms, res.P95ms, res.P99ms, res.Maxms = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(95)), ms(h.ValueAtQuantile(99)), ms(h.Max())
	return res, nil
}
