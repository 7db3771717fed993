package load

import (
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Steps of the flows, as they appear in the report.
const (
	StepCreateOrder   = "create_order"
	StepWebhookPay    = "webhook_pay"
	StepRefundRequest = "refund_request"
	StepRefundApprove = "refund_approve"
	StepRefundPoll    = "refund_poll"
	StepWebhookRefund = "webhook_refund"
	StepSpend         = "spend"
	StepWalletRead    = "wallet_read"
)

// Histogram bounds: 1 µs to 2 min at 3 significant digits (0.1% error).
const (
	histMin    = 1
	histMax    = int64(2 * time.Minute / time.Microsecond)
	histDigits = 3
)

// stats collects one phase of a run (warm-up or measurement): per-step
// latency histograms, counts and errors. Every method is safe for
// concurrent use; one mutex is plenty at the few thousand requests per
// second two cores can drive.
type stats struct {
	mu       sync.Mutex
	start    time.Time
	steps    map[string]*stepStats
	flows    map[string]int64 // completed flows by scenario kind
	failed   map[string]int64 // flows that ended in an error, by kind
	errors   map[string]int64 // "step code" → count
	requests int64
}

type stepStats struct {
	hist   *hdrhistogram.Histogram
	count  int64
	errors int64
}

func newStats(start time.Time) *stats {
	return &stats{start: start, steps: map[string]*stepStats{}, flows: map[string]int64{},
		failed: map[string]int64{}, errors: map[string]int64{}}
}

// request records one HTTP exchange; code is "" for a success.
func (s *stats) request(step string, d time.Duration, code string) {
	us := max(int64(d/time.Microsecond), histMin)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.steps[step]
	if st == nil {
		st = &stepStats{hist: hdrhistogram.New(histMin, histMax, histDigits)}
		s.steps[step] = st
	}
	_ = st.hist.RecordValue(min(us, histMax)) // clamped: cannot fail
	st.count++
	s.requests++
	if code != "" {
		st.errors++
		s.errors[step+" "+code]++
	}
}

func (s *stats) flow(kind string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.flows[kind]++
	} else {
		s.failed[kind]++
	}
}

// StepResult is one step's figures in the report (latencies in ms).
type StepResult struct {
	Step     string  `json:"step"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	PerSec   float64 `json:"per_sec"`
	P50ms    float64 `json:"p50_ms"`
	P95ms    float64 `json:"p95_ms"`
	P99ms    float64 `json:"p99_ms"`
	Maxms    float64 `json:"max_ms"`
	Meanms   float64 `json:"mean_ms"`
}

func (s *stats) snapshot(elapsed time.Duration) (steps []StepResult, flows, failed map[string]int64, errs map[string]int64, requests int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	secs := elapsed.Seconds()
	for name, st := range s.steps {
		ms := func(us int64) float64 { return float64(us) / 1000 }
		steps = append(steps, StepResult{
			Step: name, Requests: st.count, Errors: st.errors, PerSec: float64(st.count) / secs,
			P50ms: ms(st.hist.ValueAtQuantile(50)), P95ms: ms(st.hist.ValueAtQuantile(95)),
			P99ms: ms(st.hist.ValueAtQuantile(99)), Maxms: ms(st.hist.Max()), Meanms: st.hist.Mean() / 1000,
		})
	}
	sort.Slice(steps, func(i, j int) bool { return stepOrder(steps[i].Step) < stepOrder(steps[j].Step) })
	flows, failed, errs = map[string]int64{}, map[string]int64{}, map[string]int64{}
	for k, v := range s.flows {
		flows[k] = v
	}
	for k, v := range s.failed {
		failed[k] = v
	}
	for k, v := range s.errors {
		errs[k] = v
	}
	return steps, flows, failed, errs, s.requests
}

func stepOrder(step string) int {
	for i, s := range []string{StepCreateOrder, StepWebhookPay, StepRefundRequest, StepRefundApprove,
		StepRefundPoll, StepWebhookRefund, StepSpend, StepWalletRead} {
		if s == step {
			return i
		}
	}
	return 100
}
