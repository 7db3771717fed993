package rig

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/diamondd/diamondd/internal/load"
)

// ChaosOptions configure `make chaos`.
type ChaosOptions struct {
	Diamondd  string
	Clients   int
	Users     int
	Duration  time.Duration // the mixed load (default 60 s); the fault times scale with it
	Kills     int           // kill -9 of diamondd (default 5)
	FastPG    bool
	SettleFor time.Duration // how long redeliveries may take to drain afterwards (default 2 min)
	Log       func(string)
}

// Fault is one fault injected and how the service came back.
type Fault struct {
	Kind string  `json:"kind"`
	At   float64 `json:"at_seconds"`   // since the load started
	Down float64 `json:"down_seconds"` // how long the component was away
	// Ready: seconds from the component's return until /readyz said 200.
	Ready float64 `json:"ready_seconds"`
	// FirstFlow: seconds from the component's return until a flow completed.
	FirstFlow float64 `json:"first_flow_seconds"`
	// Replies5xx: 5xx answers from the fault until 2 s after recovery.
	Replies5xx int64  `json:"replies_5xx"`
	Recovered  bool   `json:"recovered"`
	Note       string `json:"note,omitempty"`
}

// ChaosReport is the outcome of `make chaos`.
type ChaosReport struct {
	Date    time.Time        `json:"date"`
	Machine Machine          `json:"machine"`
	Faults  []Fault          `json:"faults"`
	Result  *load.Result     `json:"result"`
	Checks  load.CheckReport `json:"checks"`
	// Invariants is the summary table: the load tool's checks plus the
	// chaos-specific ones.
	Invariants []load.CheckResult `json:"invariants"`
	OK         bool               `json:"ok"`
}

// ChaosEnv is what chaos adds to ServiceEnv.
var ChaosEnv = []string{"RATE_LIMIT_RECHARGE_PER_MIN=100000", "RATE_LIMIT_REFUND_PER_MIN=100000"}

type window struct {
	mu     sync.Mutex
	open   bool
	count  int64
	totals int64
}

func (w *window) reply(status int) {
	if status < 500 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.totals++
	if w.open {
		w.count++
	}
}

func (w *window) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.open, w.count = true, 0
}

func (w *window) stop() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.open = false
	return w.count
}

// Chaos runs the mixed load for Duration while it kills diamondd with
// SIGKILL Kills times (restarting it at once), restarts PostgreSQL once and
// stops Redis for a sixth of the run (10 s of 60 s); then it lets
// redeliveries drain and checks every invariant.
func Chaos(ctx context.Context, o ChaosOptions) (*ChaosReport, error) {
	if o.Clients <= 0 {
		o.Clients = 16
	}
	if o.Users <= 0 {
		o.Users = 2000
	}
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Kills < 0 {
		o.Kills = 0
	} else if o.Kills == 0 {
		o.Kills = 5
	}
	if o.SettleFor <= 0 {
		o.SettleFor = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	// Rate limits stay on, far above what any user of the run does, so that
	// every recharge and refund request consults Redis (a limit of 0 would
	// skip the limiter, and Redis' absence would prove nothing).
	st, err := StartStack(ctx, StackOptions{Diamondd: o.Diamondd, FastPG: o.FastPG, Redis: true, Log: o.Log,
		ExtraEnv: ChaosEnv})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	rep := &ChaosReport{Date: time.Now().UTC(), Machine: machine(ctx, st)}

	var win window
	opt := st.Options(load.Options{Scenario: load.ScenarioMixed, Clients: o.Clients, Users: o.Users,
		Duration: o.Duration, RunID: fmt.Sprintf("chaos-%d", time.Now().Unix()), ServerPID: -1,
		RetryFor: 90 * time.Second, InlineRetry: 5 * time.Second, RefundWait: 30 * time.Second,
		Log: o.Log, OnReply: func(_ string, status int, _ string) { win.reply(status) }})
	r, err := load.New(opt)
	if err != nil {
		return nil, err
	}
	defer r.Close()

	// The schedule, as fractions of the run: kills spread out, PostgreSQL
	// restarted at a third, Redis away from 45% to 62% (10 s of 60 s), no
	// two faults at once.
	D := o.Duration
	at := func(f float64) time.Duration { return time.Duration(f * float64(D)) }
	type step struct {
		at   time.Duration
		kind string
	}
	killAt := []float64{0.08, 0.2, 0.7, 0.8, 0.9, 0.14, 0.76, 0.86}
	var plan []step
	for i := 0; i < o.Kills && i < len(killAt); i++ {
		plan = append(plan, step{at(killAt[i]), "kill -9 diamondd"})
	}
	plan = append(plan, step{at(0.3), "restart PostgreSQL"}, step{at(0.45), "stop Redis"})
	slices.SortFunc(plan, func(a, b step) int { return cmp.Compare(a.at, b.at) })

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var res *load.Result
	var runErr error
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); res, runErr = r.Run(runCtx) }()

	await := func(f *Fault, back time.Time) {
		d, err := st.Svc.WaitReady(ctx, 60*time.Second)
		f.Ready = d.Seconds()
		if err != nil {
			f.Note = err.Error()
			return
		}
		for time.Since(back) < 60*time.Second {
			if r.LastFlowOK().After(back) {
				f.FirstFlow = time.Since(back).Seconds()
				f.Recovered = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
	}
	for _, s := range plan {
		if wait := time.Until(start.Add(s.at)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		f := Fault{Kind: s.kind, At: time.Since(start).Seconds()}
		o.Log(fmt.Sprintf("fault at %.1fs: %s", f.At, s.kind))
		win.start()
		switch s.kind {
		case "kill -9 diamondd":
			t0 := time.Now()
			st.Svc.Kill9()
			if err := st.Svc.Start(ctx); err != nil {
				f.Note = "restart failed: " + err.Error()
				rep.Faults = append(rep.Faults, f)
				win.stop()
				continue
			}
			back := time.Now()
			f.Down = back.Sub(t0).Seconds()
			await(&f, back)
		case "restart PostgreSQL":
			t0 := time.Now()
			st.PG.Stop()
			time.Sleep(time.Second)
			if err := st.PG.Start(ctx); err != nil {
				return nil, fmt.Errorf("restart PostgreSQL: %w", err)
			}
			back := time.Now()
			f.Down = back.Sub(t0).Seconds()
			await(&f, back)
		case "stop Redis":
			t0 := time.Now()
			st.Redis.Stop()
			time.Sleep(at(1.0 / 6))
			if err := st.Redis.Start(ctx); err != nil {
				return nil, fmt.Errorf("restart Redis: %w", err)
			}
			back := time.Now()
			f.Down = back.Sub(t0).Seconds()
			await(&f, back)
			f.Note = "no 5xx allowed while Redis is away"
		}
		f.Replies5xx = win.stop()
		o.Log(fmt.Sprintf("  back after %.2fs, ready %.2fs later, first flow %.2fs later, %d 5xx", f.Down, f.Ready, f.FirstFlow, f.Replies5xx))
		rep.Faults = append(rep.Faults, f)
	}
	<-done
	if runErr != nil {
		return nil, runErr
	}
	o.Log(fmt.Sprintf("load done; settling (redeliveries, replays, open refunds) for up to %s", o.SettleFor))
	sctx, scancel := context.WithTimeout(ctx, o.SettleFor)
	stl := r.Settle(sctx)
	scancel()
	res.Settle = &stl
	o.Log("checking")
	checks, err := r.Check(ctx, st.Observe())
	if err != nil {
		return nil, err
	}
	res.Checks = &checks
	rep.Result, rep.Checks = res, checks

	inv := append([]load.CheckResult{}, checks.Checks...)
	lost := load.CheckResult{Name: "zero lost or doubled diamonds", Checked: 1}
	for _, c := range checks.Checks {
		switch c.Name {
		case load.CheckAckedOnce, load.CheckNoDouble, load.CheckNoStray, load.CheckWallets, load.CheckPriced,
			load.CheckRefunds, load.CheckRefundAcked, load.CheckRefundAmounts, load.CheckUnasked:
			if !c.Passed() || c.Skipped {
				lost.Failures = append(lost.Failures, "see: "+c.Name)
			}
		}
	}
	rec := load.CheckResult{Name: "service recovered after each fault unaided"}
	redis := load.CheckResult{Name: "no 5xx while Redis was away"}
	for _, f := range rep.Faults {
		rec.Checked++
		if !f.Recovered {
			rec.Failures = append(rec.Failures, fmt.Sprintf("%s at %.1fs: not recovered (%s)", f.Kind, f.At, f.Note))
		}
		if f.Kind == "stop Redis" {
			redis.Checked++
			if f.Replies5xx > 0 {
				redis.Failures = append(redis.Failures, fmt.Sprintf("%d 5xx replies", f.Replies5xx))
			}
		}
	}
	inv = append(inv, lost, rec, redis)
	rep.Invariants = inv
	rep.OK = true
	for _, c := range inv {
		if !c.Passed() {
			rep.OK = false
		}
	}
	return rep, nil
}

// WriteJSON writes the report.
func (c *ChaosReport) WriteJSON(path string) error {
	raw, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// WriteTable prints the summary: faults injected, invariants checked.
func (c *ChaosReport) WriteTable(out io.Writer) {
	if c.Result != nil {
		c.Result.Checks = nil // printed below, with the chaos invariants
		c.Result.WriteTable(out)
		c.Result.Checks = &c.Checks
	}
	fmt.Fprintf(out, "\nchaos %s on %d CPU(s), %d GB RAM, PostgreSQL %s\n", c.Date.Format(time.RFC3339), c.Machine.CPUs, c.Machine.MemoryGB, c.Machine.Postgres)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tat s\tdown s\tready after s\tfirst flow after s\t5xx\trecovered\tnote")
	for _, f := range c.Faults {
		fmt.Fprintf(tw, "%s\t%.1f\t%.2f\t%.2f\t%.2f\t%d\t%v\t%s\n", f.Kind, f.At, f.Down, f.Ready, f.FirstFlow, f.Replies5xx, f.Recovered, f.Note)
	}
	tw.Flush()
	fmt.Fprintln(out)
	load.CheckReport{Checks: c.Invariants}.WriteTable(out)
	fmt.Fprintf(out, "chaos: %s\n", map[bool]string{true: "PASS", false: "FAIL"}[c.OK])
}
