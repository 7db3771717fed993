package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what a run measured; it is also the JSON result file.
type Result struct {
	RunID    string    `json:"run_id"`
	Scenario string    `json:"scenario"`
	Target   string    `json:"target"`
	Clients  int       `json:"clients"`
	Users    int       `json:"users"`
	Hot      bool      `json:"hot_user"`
	Started  time.Time `json:"started"`
	Warmup   float64   `json:"warmup_seconds"`
	Seconds  float64   `json:"measured_seconds"`

	Requests       int64              `json:"requests"`
	RequestsPerSec float64            `json:"requests_per_sec"`
	Flows          map[string]int64   `json:"flows"`
	FlowsPerSec    map[string]float64 `json:"flows_per_sec"`
	FailedFlows    map[string]int64   `json:"failed_flows"`
	AllFlowsPerSec float64            `json:"all_flows_per_sec"`
	Steps          []StepResult       `json:"steps"`
	Errors         map[string]int64   `json:"errors"` // "step code" → count
	RateLimited    int64              `json:"rate_limited"`
	Redeliveries   int64              `json:"redeliveries"`
	QueuedWebhooks int                `json:"webhooks_queued_at_end"`

	RSS RSS `json:"server_rss"`

	Model  ModelCounts   `json:"model"`
	Settle *SettleResult `json:"settle,omitempty"`
	Checks *CheckReport  `json:"checks,omitempty"`
}

// ModelCounts summarise the tool's model.
type ModelCounts struct {
	Users   int `json:"users"`
	Orders  int `json:"orders"`
	Paid    int `json:"paid"`
	Refunds int `json:"refunds"`
}

// RSS is the server's resident set size during the run, in bytes.
type RSS struct {
	Source string `json:"source"`
	Start  int64  `json:"start_bytes"`
	Max    int64  `json:"max_bytes"`
	End    int64  `json:"end_bytes"`
}

type rssStats = RSS

// FlowsPerSecOf is the completed flows per second of one flow kind.
func (r *Result) FlowsPerSecOf(kind string) float64 { return r.FlowsPerSec[kind] }

// Step returns a step's figures (zero when the step did not run).
func (r *Result) Step(name string) StepResult {
	for _, s := range r.Steps {
		if s.Step == name {
			return s
		}
	}
	return StepResult{Step: name}
}

func (r *Runner) result(began, start, end time.Time) *Result {
	el := end.Sub(start)
	if el <= 0 {
		el = time.Millisecond
	}
	steps, flows, failed, errs, reqs := r.cur.Load().snapshot(el)
	res := &Result{
		RunID: r.opt.RunID, Scenario: r.opt.Scenario, Target: r.opt.BaseURL, Clients: r.opt.Clients,
		Users: len(r.users), Hot: r.opt.Hot, Started: began.UTC(), Warmup: start.Sub(began).Seconds(),
		Seconds: el.Seconds(), Requests: reqs, RequestsPerSec: float64(reqs) / el.Seconds(),
		Flows: flows, FailedFlows: failed, FlowsPerSec: map[string]float64{}, Steps: steps, Errors: errs,
		RateLimited: r.rateLimited.Load(), Redeliveries: r.redeliveries.Load(), QueuedWebhooks: r.ch.pending(),
	}
	var all int64
	for k, v := range flows {
		res.FlowsPerSec[k] = float64(v) / el.Seconds()
		all += v
	}
	res.AllFlowsPerSec = float64(all) / el.Seconds()
	r.mu.Lock()
	res.RSS = r.rss
	r.mu.Unlock()
	u, o, p, rf := r.model.Counts()
	res.Model = ModelCounts{Users: u, Orders: o, Paid: p, Refunds: rf}
	return res
}

// sampleRSS reads the server's RSS every second until ctx ends.
func (r *Runner) sampleRSS(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		src, v := r.readRSS(ctx)
		if v > 0 {
			r.mu.Lock()
			r.rss.Source = src
			if r.rss.Start == 0 {
				r.rss.Start = v
			}
			r.rss.Max = max(r.rss.Max, v)
			r.rss.End = v
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) readRSS(ctx context.Context) (string, int64) {
	if r.opt.ServerPID > 0 {
		if v := procRSS(r.opt.ServerPID); v > 0 {
			return "/proc", v
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", r.opt.BaseURL+"/metrics", nil)
	if err != nil {
		return "", 0
	}
	resp, err := r.cl.http.Do(req)
	if err != nil {
		return "", 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return "/metrics", int64(f)
			}
		}
	}
	return "", 0
}

// procRSS reads VmRSS of a process in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteTable prints the result for people.
func (r *Result) WriteTable(out io.Writer) {
	who := fmt.Sprintf("%d users", r.Users)
	if r.Hot {
		who = "one hot user"
	}
	fmt.Fprintf(out, "scenario %s on %s: %d clients, %s, %.1fs measured after %.1fs warm-up (run %s)\n",
		r.Scenario, r.Target, r.Clients, who, r.Seconds, r.Warmup, r.RunID)
	fmt.Fprintf(out, "requests %d (%.1f/s)", r.Requests, r.RequestsPerSec)
	for _, k := range sortedKeys(r.Flows) {
		fmt.Fprintf(out, "   %s flows %d (%.1f/s)", k, r.Flows[k], r.FlowsPerSec[k])
	}
	fmt.Fprintln(out)
	if len(r.FailedFlows) > 0 {
		fmt.Fprint(out, "failed flows:")
		for _, k := range sortedKeys(r.FailedFlows) {
			fmt.Fprintf(out, " %s %d", k, r.FailedFlows[k])
		}
		fmt.Fprintln(out)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\trequests\tper s\terrors\tp50 ms\tp95 ms\tp99 ms\tmax ms\t")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", s.Step, s.Requests, s.PerSec, s.Errors, s.P50ms, s.P95ms, s.P99ms, s.Maxms)
	}
	tw.Flush()
	if len(r.Errors) > 0 {
		fmt.Fprintln(out, "errors by code:")
		keys := sortedKeys(r.Errors)
		sort.SliceStable(keys, func(i, j int) bool { return r.Errors[keys[i]] > r.Errors[keys[j]] })
		for _, k := range keys {
			fmt.Fprintf(out, "  %-45s %d\n", k, r.Errors[k])
		}
	}
	if r.RateLimited > 0 {
		fmt.Fprintf(out, "WARNING: %d responses were 429 rate_limited: the figures are distorted; start diamondd with RATE_LIMIT_RECHARGE_PER_MIN=0 RATE_LIMIT_REFUND_PER_MIN=0\n", r.RateLimited)
	}
	fmt.Fprintf(out, "webhook redeliveries %d, queued at end %d\n", r.Redeliveries, r.QueuedWebhooks)
	if r.RSS.Source != "" {
		fmt.Fprintf(out, "server RSS (%s): start %s, max %s, end %s\n", r.RSS.Source, mib(r.RSS.Start), mib(r.RSS.Max), mib(r.RSS.End))
	}
	fmt.Fprintf(out, "model: %d users, %d orders (%d paid), %d refunds\n", r.Model.Users, r.Model.Orders, r.Model.Paid, r.Model.Refunds)
	if s := r.Settle; s != nil {
		fmt.Fprintf(out, "settle (%.1fs): %d replayed, %d unresolved, %d refunds finished, %d refunds open, %d webhooks unacknowledged\n",
			s.Seconds, s.Resolved, s.Unresolved, s.RefundsFinished, s.RefundsOpen, s.WebhooksPending)
	}
	if r.Checks != nil {
		r.Checks.WriteTable(out)
	}
}

// WriteTable prints the checks.
func (c CheckReport) WriteTable(out io.Writer) {
	fmt.Fprintln(out, "checks:")
	for _, ch := range c.Checks {
		mark := "PASS"
		switch {
		case ch.Skipped:
			mark = "skip"
		case !ch.Passed():
			mark = "FAIL"
		}
		fmt.Fprintf(out, "  %s  %-50s %d checked", mark, ch.Name, ch.Checked)
		if ch.Skipped && ch.Note != "" {
			fmt.Fprintf(out, " (%s)", ch.Note)
		}
		fmt.Fprintln(out)
		for _, f := range ch.Failures {
			fmt.Fprintf(out, "        %s\n", f)
		}
	}
}
