package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/diamondd/diamondd/internal/load"
)

// Bench parts, in the order they run.
const (
	PartPgbench  = "pgbench"
	PartRecharge = "recharge"
	PartMixed    = "mixed"
	PartCreate   = "create"
	PartCredit   = "credit"
	PartHot      = "hot"
	PartWallet   = "wallet"
	PartProfile  = "profile"
)

// BenchParts is every part.
var BenchParts = []string{PartPgbench, PartRecharge, PartMixed, PartCreate, PartCredit, PartHot, PartWallet, PartProfile}

// BenchOptions configure `make bench`.
type BenchOptions struct {
	Diamondd string // diamondd binary
	Profile  bool   // profile the server under load (diamondd serve with PPROF_ADDR)
	Clients  int
	Users    int
	Duration time.Duration // pgbench, recharge and mixed; the other parts run half of it
	Warmup   time.Duration
	Scale    int  // pgbench scale
	FastPG   bool // durability off
	Postings int  // ledger postings of the big wallet (the small one has 1 000)
	Parts    []string
	OutDir   string // profiles and the JSON report
	Log      func(string)
}

// BenchRun is one load run with what PostgreSQL saw during it.
type BenchRun struct {
	Name   string       `json:"name"`
	Result *load.Result `json:"result"`
	DB     DBStats      `json:"db"`
}

// Machine describes where the figures come from.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	MemoryGB int64  `json:"memory_gb"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Postgres string `json:"postgres"`
}

// BenchReport is the outcome of `make bench`.
type BenchReport struct {
	Date     time.Time      `json:"date"`
	Machine  Machine        `json:"machine"`
	Clients  int            `json:"clients"`
	Users    int            `json:"users"`
	FastPG   bool           `json:"fast_pg"`
	Pgbench  *PgbenchResult `json:"pgbench,omitempty"`
	Runs     []BenchRun     `json:"runs"`
	Headline float64        `json:"recharge_flows_per_pgbench_tps"`

	WalletPostings [2]int       `json:"wallet_postings"`
	WalletSmall    *load.Result `json:"wallet_small,omitempty"`
	WalletBig      *load.Result `json:"wallet_big,omitempty"`

	LedgerFindings []string       `json:"ledger_findings"`
	Profile        *ProfileResult `json:"profile,omitempty"`
	ChecksOK       bool           `json:"checks_ok"`
}

// Run returns the named run.
func (b *BenchReport) Run(name string) *BenchRun {
	for i := range b.Runs {
		if b.Runs[i].Name == name {
			return &b.Runs[i]
		}
	}
	return nil
}

func (o *BenchOptions) defaults() {
	if o.Clients <= 0 {
		o.Clients = 16
	}
	if o.Users <= 0 {
		o.Users = 10000
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	if o.Scale <= 0 {
		o.Scale = 10
	}
	if o.Postings <= 0 {
		o.Postings = 1_000_000
	}
	if len(o.Parts) == 0 {
		o.Parts = BenchParts
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
}

// Bench runs the benchmark on a fresh private PostgreSQL.
func Bench(ctx context.Context, o BenchOptions) (*BenchReport, error) {
	o.defaults()
	has := func(p string) bool { return slices.Contains(o.Parts, p) }
	st, err := StartStack(ctx, StackOptions{Diamondd: o.Diamondd, FastPG: o.FastPG, Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	rep := &BenchReport{Date: time.Now().UTC(), Machine: machine(ctx, st), Clients: o.Clients, Users: o.Users, FastPG: o.FastPG, ChecksOK: true}
	_, _ = st.Pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)

	if has(PartPgbench) {
		if err := st.PG.CreateDB(ctx, "pgbench"); err != nil {
			return nil, err
		}
		o.Log(fmt.Sprintf("pgbench: TPC-B-like, scale %d, %d clients, %s", o.Scale, o.Clients, o.Duration))
		if rep.Pgbench, err = Pgbench(ctx, st.PG.URL("pgbench"), st.PG.PID(), o.Scale, o.Clients, o.Duration); err != nil {
			return nil, err
		}
		o.Log(fmt.Sprintf("pgbench: %.0f tps, p99 %.2f ms", rep.Pgbench.TPS, rep.Pgbench.P99ms))
	}

	runs := []struct {
		part string
		opt  load.Options
	}{
		{PartRecharge, load.Options{Scenario: load.ScenarioRecharge, Duration: o.Duration}},
		{PartMixed, load.Options{Scenario: load.ScenarioMixed, Duration: o.Duration}},
		{PartCreate, load.Options{Scenario: load.ScenarioCreate, Duration: o.Duration / 2}},
		{PartCredit, load.Options{Scenario: load.ScenarioCredit, Duration: o.Duration / 2}},
		{PartHot, load.Options{Scenario: load.ScenarioRecharge, Duration: o.Duration / 2, Hot: true}},
	}
	for _, run := range runs {
		if !has(run.part) {
			continue
		}
		opt := run.opt
		opt.Clients, opt.Users, opt.Warmup = o.Clients, o.Users, o.Warmup
		opt.RunID = fmt.Sprintf("bench-%s-%d", run.part, time.Now().Unix())
		opt.Log = o.Log
		o.Log(fmt.Sprintf("%s: %s for %s after %s warm-up", run.part, opt.Scenario, opt.Duration, opt.Warmup))
		res, dbs, err := st.RunChecked(ctx, opt, false, time.Minute)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", run.part, err)
		}
		rep.Runs = append(rep.Runs, BenchRun{Name: run.part, Result: res, DB: dbs})
		if !res.Checks.OK() {
			rep.ChecksOK = false
			res.Checks.WriteTable(logWriter(o.Log))
		}
	}
	if r := rep.Run(PartRecharge); r != nil && rep.Pgbench != nil && rep.Pgbench.TPS > 0 {
		rep.Headline = r.Result.FlowsPerSec[load.ScenarioRecharge] / rep.Pgbench.TPS
	}

	if has(PartWallet) {
		if err := walletBench(ctx, st, o, rep); err != nil {
			return nil, fmt.Errorf("wallet: %w", err)
		}
	}

	o.Log("ledger verify")
	findings, err := load.VerifyBinary(o.Diamondd, st.DatabaseURL)(ctx)
	if err != nil {
		return nil, err
	}
	rep.LedgerFindings = findings
	if len(findings) > 0 {
		rep.ChecksOK = false
	}

	if has(PartProfile) && o.Profile {
		if rep.Profile, err = profile(ctx, st, o); err != nil {
			o.Log("profile: " + err.Error())
		}
	}
	return rep, nil
}

// walletBench measures wallet reads of a user with 1 000 postings and of
// one with o.Postings, inserted directly as balanced journals (the API
// would take hours to make a million postings).
func walletBench(ctx context.Context, st *Stack, o BenchOptions, rep *BenchReport) error {
	users := [2]string{"bench-wallet-1k", fmt.Sprintf("bench-wallet-%dk", o.Postings/1000)}
	rep.WalletPostings = [2]int{1000, o.Postings}
	for i, n := range rep.WalletPostings {
		o.Log(fmt.Sprintf("wallet: writing %d postings for %s", n, users[i]))
		if err := fixture(ctx, st, users[i], n/2); err != nil {
			return err
		}
	}
	_, _ = st.Pool.Exec(ctx, `VACUUM ANALYZE journals, postings, wallets`)
	// Both users are read at the same time, half the clients each, so
	// that both see the same machine: on a shared two-core box, noise
	// between two runs one after the other is larger than the effect.
	d := max(o.Duration/2, 5*time.Second)
	results := make([]*load.Result, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, u := range users {
		opt := st.Options(load.Options{Scenario: load.ScenarioWallet, UserIDs: []string{u}, Clients: max(o.Clients/2, 1),
			Duration: d, Warmup: time.Second, RunID: fmt.Sprintf("bench-wallet-%d-%d", i, time.Now().Unix())})
		if i == 0 {
			opt.Log = o.Log
		}
		r, err := load.New(opt)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			results[i], errs[i] = r.Run(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rep.WalletSmall, rep.WalletBig = results[0], results[1]
	return nil
}

// fixture gives a user journals of two postings each (issuance → available,
// one diamond), in transactions of 50 000 journals, and projects them onto
// the wallet so the ledger stays verifiable.
func fixture(ctx context.Context, st *Stack, user string, journals int) error {
	const chunk = 50000
	for from := 1; from <= journals; from += chunk {
		to := min(from+chunk-1, journals)
		tx, err := st.Pool.Begin(ctx)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			WITH j AS (
				INSERT INTO journals (user_id, id, kind, reference, memo)
				SELECT $1, gen_random_uuid(), 'recharge', 'bench-fixture:' || $1 || ':' || g, 'bench fixture'
				  FROM generate_series($2::int, $3::int) g
				RETURNING user_id, id)
			INSERT INTO postings (user_id, journal_id, line, account, amount)
			SELECT j.user_id, j.id, l.line, l.account, l.amount
			  FROM j CROSS JOIN (VALUES (1::smallint, 'issuance:sandbox', -1::bigint), (2::smallint, 'available', 1::bigint)) AS l(line, account, amount)`,
			user, from, to)
		if err == nil {
			_, err = tx.Exec(ctx, `
				INSERT INTO wallets AS w (user_id, available) VALUES ($1, $2)
				ON CONFLICT (user_id) DO UPDATE SET available = w.available + excluded.available`, user, to-from+1)
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("fixture for %s: %w", user, err)
		}
	}
	return nil
}

// ProfileResult is a CPU and an allocation profile of the server under the
// recharge load.
type ProfileResult struct {
	Dir      string `json:"dir"`
	CPUTop   string `json:"cpu_top"`
	AllocTop string `json:"alloc_top"`
}

// profile restarts the service with PPROF_ADDR (net/http/pprof on its own
// loopback port), runs recharges, and takes a CPU profile and an allocation
// profile.
func profile(ctx context.Context, st *Stack, o BenchOptions) (*ProfileResult, error) {
	st.Svc.Stop()
	pport, err := FreePort()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	svc := &Service{Bin: o.Diamondd, Args: []string{"serve"}, Port: port, Dir: st.Dir,
		Env: append(append([]string{}, st.Env...), fmt.Sprintf("PPROF_ADDR=127.0.0.1:%d", pport))}
	if err := svc.Start(ctx); err != nil {
		return nil, err
	}
	defer svc.Stop()
	dir := o.OutDir
	if dir == "" {
		dir = st.Dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	secs := max(int(o.Duration.Seconds()/2), 5)
	opt := load.Options{Scenario: load.ScenarioRecharge, Clients: o.Clients, Users: o.Users, Warmup: 2 * time.Second,
		Duration: time.Duration(secs+2) * time.Second, RunID: fmt.Sprintf("bench-profile-%d", time.Now().Unix()),
		BaseURL: svc.URL(), JWTSecret: st.JWTSecret, WebhookSecret: st.WebhookSecret, ServerPID: svc.PID()}
	r, err := load.New(opt)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	o.Log(fmt.Sprintf("profile: recharge load with pprof, %ds CPU profile", secs))
	errc := make(chan error, 1)
	go func() {
		time.Sleep(3 * time.Second)
		base := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", pport)
		err := fetch(ctx, base+fmt.Sprintf("profile?seconds=%d", secs), filepath.Join(dir, "cpu.pb.gz"))
		if err == nil {
			err = fetch(ctx, base+"allocs", filepath.Join(dir, "allocs.pb.gz"))
		}
		errc <- err
	}()
	if _, err := r.Run(ctx); err != nil {
		return nil, err
	}
	if err := <-errc; err != nil {
		return nil, err
	}
	res := &ProfileResult{Dir: dir}
	res.CPUTop = pprofTop(ctx, filepath.Join(dir, "cpu.pb.gz"))
	res.AllocTop = pprofTop(ctx, filepath.Join(dir, "allocs.pb.gz"), "-sample_index=alloc_space")
	return res, nil
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// pprofTop summarises a profile with `go tool pprof -top` when a Go
// toolchain is at hand.
func pprofTop(ctx context.Context, path string, extra ...string) string {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "(no go toolchain: run `go tool pprof -top " + path + "`)"
	}
	args := append([]string{"tool", "pprof", "-top", "-nodecount=25"}, extra...)
	out, err := exec.CommandContext(ctx, goBin, append(args, path)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("pprof: %v: %s", err, out)
	}
	return string(out)
}

func machine(ctx context.Context, st *Stack) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, l := range strings.Split(string(b), "\n") {
			if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
				m.MemoryGB = (kb + 512*1024) / (1024 * 1024)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	_ = st.Pool.QueryRow(ctx, `SHOW server_version`).Scan(&m.Postgres)
	return m
}

type logWriter func(string)

func (l logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		l(line)
	}
	return len(p), nil
}

// WriteJSON writes the report.
func (b *BenchReport) WriteJSON(path string) error {
	raw, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// WriteTable prints the report side by side.
func (b *BenchReport) WriteTable(out io.Writer) {
	fmt.Fprintf(out, "\nbench %s on %d CPU(s) (%s), %d GB RAM, PostgreSQL %s (%s), %d clients, %d users\n",
		b.Date.Format(time.RFC3339), b.Machine.CPUs, b.Machine.CPUModel, b.Machine.MemoryGB, b.Machine.Postgres,
		map[bool]string{true: "fsync off", false: "durable"}[b.FastPG], b.Clients, b.Users)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tthroughput\t÷ pgbench tps\tp99 per step (ms)\tstatements/flow\ttxns/flow\tCPU ms/flow server+pg+driver\tserver RSS max\tchecks")
	cpuPer := func(c CPU, n float64) string {
		if n <= 0 || c.Wall == 0 {
			return ""
		}
		return fmt.Sprintf("%.2f+%.2f+%.2f", 1000*c.Server/n, 1000*c.Postgres/n, 1000*c.Driver/n)
	}
	if p := b.Pgbench; p != nil {
		fmt.Fprintf(tw, "pgbench tpcb-like s=%d\t%.0f tps\t1.00\ttransaction %.2f (p50 %.2f)\t7\t1\t%s\t\t\n", p.Scale, p.TPS, p.P99ms, p.P50ms,
			cpuPer(p.CPU, p.TPS*p.Seconds))
	}
	for _, r := range b.Runs {
		res := r.Result
		var flows float64
		var kinds []string
		for _, k := range sortedKeys(res.FlowsPerSec) {
			flows += res.FlowsPerSec[k]
			kinds = append(kinds, fmt.Sprintf("%s %.0f", k, res.FlowsPerSec[k]))
		}
		ratio := ""
		if b.Pgbench != nil && b.Pgbench.TPS > 0 {
			ratio = fmt.Sprintf("%.2f", flows/b.Pgbench.TPS)
		}
		var p99 []string
		for _, s := range res.Steps {
			p99 = append(p99, fmt.Sprintf("%s %.2f", s.Step, s.P99ms))
		}
		var nflows int64
		for _, n := range res.Flows {
			nflows += n
		}
		perFlow := func(n int64) string {
			if nflows == 0 || n == 0 {
				return ""
			}
			return fmt.Sprintf("%.1f", float64(n)/float64(nflows))
		}
		name := r.Name
		if res.Hot {
			name += " (one user)"
		}
		checks := "pass"
		if res.Checks != nil && !res.Checks.OK() {
			checks = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%.0f flows/s (%s)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, flows, strings.Join(kinds, ", "), ratio,
			strings.Join(p99, ", "), perFlow(r.DB.Statements), perFlow(r.DB.Transactions), cpuPer(r.DB.CPU, float64(nflows)), mib(res.RSS.Max), checks)
	}
	tw.Flush()
	if b.Headline > 0 {
		verdict := "meets"
		if b.Headline < 0.5 {
			verdict = "BELOW"
		}
		fmt.Fprintf(out, "headline: recharge flows/s ÷ pgbench tps = %.2f (target ≥ 0.5: %s)\n", b.Headline, verdict)
	}
	for _, r := range b.Runs {
		if r.DB.Samples > 0 {
			fmt.Fprintf(out, "db waits during %s: %s\n", r.Name, r.DB.TopWaits(5))
		}
	}
	if b.WalletSmall != nil && b.WalletBig != nil {
		s, g := b.WalletSmall.Step(load.StepWalletRead), b.WalletBig.Step(load.StepWalletRead)
		fmt.Fprintf(out, "wallet read (both users at once), %d postings: %.0f/s p50 %.2f ms p99 %.2f ms; %d postings: %.0f/s p50 %.2f ms p99 %.2f ms; ratio p50 %.2f× p99 %.2f× (target ≤ 1.2×)\n",
			b.WalletPostings[0], s.PerSec, s.P50ms, s.P99ms, b.WalletPostings[1], g.PerSec, g.P50ms, g.P99ms,
			g.P50ms/max(s.P50ms, 0.001), g.P99ms/max(s.P99ms, 0.001))
	}
	if len(b.LedgerFindings) > 0 {
		shown := b.LedgerFindings[:min(len(b.LedgerFindings), 5)]
		fmt.Fprintf(out, "ledger verify: %d finding(s), first ones: %s\n", len(b.LedgerFindings), strings.Join(shown, "; "))
	} else {
		fmt.Fprintln(out, "ledger verify: clean")
	}
	fmt.Fprintf(out, "checks after every run: %s\n", map[bool]string{true: "all passed", false: "FAILED (see above)"}[b.ChecksOK])
	if p := b.Profile; p != nil {
		fmt.Fprintf(out, "profiles in %s\nCPU:\n%s\nallocations:\n%s\n", p.Dir, p.CPUTop, p.AllocTop)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
