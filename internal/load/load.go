// Package load drives a running diamondd over HTTP the way its real callers
// do (app clients, the gift service, support agents and the sandbox payment
// channel), measures it (per-step latency in HDR histograms, requests and
// completed flows per second, errors by code, the server's RSS), and then
// checks that nothing was lost or doubled: every acknowledged payment
// credited exactly once, every wallet equal to what the tool's own model
// predicts, and `diamondd ledger verify` clean.
//
// The driver is closed-loop: each of Options.Clients workers runs one flow
// after another. cmd/diamond-load is its command line; package rig starts
// the processes `make bench` and `make chaos` need.
package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenarios.
const (
	ScenarioRecharge = "recharge" // create an order, then the channel's signed payment.succeeded
	ScenarioRefund   = "refund"   // recharge, request a refund, approve it, refund.succeeded
	ScenarioSpend    = "spend"    // the gift service spends a user's diamonds
	ScenarioMixed    = "mixed"    // a weighted mix of the flows (Options.Mix)
	ScenarioStorm    = "storm"    // recharge with each payment notified many times at once, some out of order
	ScenarioCreate   = "create"   // order creation alone
	ScenarioCredit   = "credit"   // the payment webhook alone, on orders created beforehand (not measured)
	ScenarioWallet   = "wallet"   // wallet reads alone
)

// Scenarios lists every scenario.
var Scenarios = []string{ScenarioRecharge, ScenarioRefund, ScenarioSpend, ScenarioMixed, ScenarioStorm, ScenarioCreate, ScenarioCredit, ScenarioWallet}

// Options configure a run.
type Options struct {
	BaseURL       string // http://127.0.0.1:PORT (loopback only)
	JWTSecret     string // the service's JWT_SECRET: tokens are minted here
	WebhookSecret string // the service's SANDBOX_WEBHOOK_SECRET

	Scenario string
	Clients  int           // concurrent workers (closed loop)
	Users    int           // distinct users (ignored with Hot)
	Hot      bool          // every flow on one user
	UserIDs  []string      // explicit users (overrides Users and Hot)
	Duration time.Duration // measured time (unless Count)
	Count    int           // measured flows (0: use Duration)
	Warmup   time.Duration // unmeasured time first
	// MaxDuration bounds a Count run.
	MaxDuration time.Duration
	RunID       string // prefix of every user id and key; unique per run
	Seed        uint64
	Mix         map[string]int // scenario → weight, for the mixed scenario

	// DiamondsPerYuan is the service's rate for custom amounts
	// (DIAMONDS_PER_YUAN): every order must be priced at it. Default: the
	// DIAMONDS_PER_YUAN of this process's environment, else the service's
	// default of 10.
	DiamondsPerYuan int64

	StormFanout      int     // notifications per payment in the storm scenario (default 10)
	StormStaleFailed float64 // share of storm payments that also get a late payment.failed for an earlier attempt

	RequestTimeout time.Duration // one HTTP request
	RetryFor       time.Duration // how long an operation with no definitive answer is retried
	InlineRetry    time.Duration // how long a worker redelivers a webhook itself before queueing it
	RefundWait     time.Duration // how long a refund flow waits for the refund to reach the channel

	ServerPID int // read the server's RSS from /proc (else from /metrics)
	// OnReply, when set, sees every reply: status 0 for a transport
	// failure, code "" for a success (chaos counts 5xx with it).
	OnReply func(step string, status int, code string)
	// OnMeasure, when set, runs when the measured phase starts.
	OnMeasure func()
	Log       func(string)  // progress lines; nil: silent
	Interval  time.Duration // progress interval (default 5s)
}

func (o *Options) defaults() error {
	if err := CheckLoopback(o.BaseURL); err != nil {
		return err
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	if len(o.JWTSecret) < 16 {
		return errors.New("the service's JWT secret (JWT_SECRET, at least 16 characters) is required to mint tokens")
	}
	if o.WebhookSecret == "" {
		return errors.New("the service's SANDBOX_WEBHOOK_SECRET is required to sign the channel's webhooks")
	}
	if o.Scenario == "" {
		o.Scenario = ScenarioRecharge
	}
	known := false
	for _, s := range Scenarios {
		known = known || s == o.Scenario
	}
	if !known {
		return fmt.Errorf("unknown scenario %q (one of %s)", o.Scenario, strings.Join(Scenarios, ", "))
	}
	set := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	if o.Clients <= 0 {
		o.Clients = 32
	}
	if o.Users <= 0 {
		o.Users = 10000
	}
	if o.Count <= 0 {
		set(&o.Duration, 10*time.Second)
	}
	set(&o.MaxDuration, 10*time.Minute)
	set(&o.RequestTimeout, 10*time.Second)
	set(&o.RetryFor, 30*time.Second)
	set(&o.InlineRetry, 5*time.Second)
	set(&o.RefundWait, 30*time.Second)
	set(&o.Interval, 5*time.Second)
	if o.RunID == "" {
		// Random enough that two runs against one service in the same second
		// (the smoke test's two) never share users.
		o.RunID = "load-" + time.Now().UTC().Format("20060102t150405") + fmt.Sprintf("-%08x", rand.Uint32())
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Mix == nil {
		o.Mix = map[string]int{ScenarioRecharge: 50, ScenarioSpend: 30, ScenarioWallet: 15, ScenarioRefund: 5}
	}
	for k, w := range o.Mix {
		switch k {
		case ScenarioRecharge, ScenarioRefund, ScenarioSpend, ScenarioStorm, ScenarioWallet, ScenarioCreate:
		default:
			return fmt.Errorf("mix: %q cannot be mixed (recharge, refund, spend, storm, wallet, create)", k)
		}
		if w < 0 {
			return fmt.Errorf("mix: negative weight for %s", k)
		}
	}
	if o.DiamondsPerYuan <= 0 {
		// The library never reads its process's environment: the caller
		// knows which service it drives (diamond-load's flag, the rig's
		// service environment, a test's harness configuration).
		o.DiamondsPerYuan = DefaultDiamondsPerYuan
	}
	if o.StormFanout <= 0 {
		o.StormFanout = 10
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	return nil
}

// DefaultDiamondsPerYuan is the service's default rate.
const DefaultDiamondsPerYuan = 10

// RateFromEnv is the DIAMONDS_PER_YUAN an environment gives the service
// (the last setting wins), or the service's default when it gives none.
func RateFromEnv(env []string) int64 {
	rate := int64(DefaultDiamondsPerYuan)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DIAMONDS_PER_YUAN="); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n > 0 {
				rate = n
			}
		}
	}
	return rate
}

// diamondsFor is what a custom amount buys at the service's rate.
func (r *Runner) diamondsFor(amountFen int64) int64 {
	return amountFen * r.opt.DiamondsPerYuan / 100
}

// Runner runs one scenario and keeps what it learned for the checks.
type Runner struct {
	opt   Options
	cl    *client
	model *Model
	ch    *channel

	cur          atomic.Pointer[stats]
	redeliveries atomic.Int64
	seq          atomic.Int64
	started      atomic.Int64 // measured flows started (Count mode)
	rateLimited  atomic.Int64
	lastOK       atomic.Int64 // unix nanoseconds of the last completed flow

	users   []string
	credits chan Order // pending orders for the credit scenario

	chCancel context.CancelFunc
	chDone   chan struct{}

	mu         sync.Mutex
	unresolved []func(context.Context) bool // operations to replay until definitive
	rss        rssStats
}

// New prepares a run.
func New(opt Options) (*Runner, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	r := &Runner{opt: opt, model: NewModel()}
	r.cl = newClient(opt.BaseURL, opt.JWTSecret, opt.WebhookSecret, opt.Clients+8, opt.RequestTimeout)
	r.ch = newChannel(r)
	switch {
	case len(opt.UserIDs) > 0:
		r.users = opt.UserIDs
	case opt.Hot:
		r.users = []string{opt.RunID + "-hot"}
	default:
		r.users = make([]string, opt.Users)
		for i := range r.users {
			r.users[i] = fmt.Sprintf("%s-u%05d", opt.RunID, i)
		}
	}
	r.cur.Store(newStats(time.Now()))
	chCtx, cancel := context.WithCancel(context.Background())
	r.chCancel, r.chDone = cancel, make(chan struct{})
	go func() { defer close(r.chDone); r.ch.run(chCtx) }()
	return r, nil
}

// Options returns the run's options after defaults.
func (r *Runner) Options() Options { return r.opt }

// LastFlowOK is when a flow last completed.
func (r *Runner) LastFlowOK() time.Time { return time.Unix(0, r.lastOK.Load()) }

// Model returns what the run knows it did.
func (r *Runner) Model() *Model { return r.model }

// Close stops the redelivery loop and the client.
func (r *Runner) Close() {
	r.chCancel()
	<-r.chDone
	r.cl.close()
}

func (r *Runner) record(step string, d time.Duration, code string, rep *reply) {
	status := 0
	if rep != nil {
		status = rep.status
	}
	if status == 429 {
		r.rateLimited.Add(1)
	}
	if r.opt.OnReply != nil {
		r.opt.OnReply(step, status, code)
	}
	r.cur.Load().request(step, d, code)
}

func (r *Runner) key(kind string) string {
	return fmt.Sprintf("%s-%s-%d", r.opt.RunID, kind, r.seq.Add(1))
}

// errGaveUp: no definitive answer within RetryFor.
var errGaveUp = errors.New("no definitive answer")

// call sends a request until it gets a definitive answer: anything but a
// transport failure, a 5xx, or 409 idempotency_key_in_progress. With an
// Idempotency-Key a retry is safe (the key replays the first outcome); that
// is how the tool stays exact when the service dies under it. It returns
// errGaveUp when RetryFor passes first.
func (r *Runner) call(ctx context.Context, step string, req request) (*reply, error) {
	deadline := time.Now().Add(r.opt.RetryFor)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, r.opt.RequestTimeout)
		start := time.Now()
		rep, err := r.cl.do(rctx, req)
		cancel()
		code := ""
		if err != nil {
			code = transportCode(err)
		} else if rep.status >= 300 {
			code = rep.code
		}
		r.record(step, time.Since(start), code, rep)
		retry := err != nil || rep.status >= 500 || (rep.status == 409 && rep.code == "idempotency_key_in_progress")
		if !retry {
			return rep, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %w (last: %s)", step, errGaveUp, code)
		}
		sleepCtx(ctx, backoff(attempt))
	}
}

// later keeps an operation whose outcome is unknown; Settle replays it.
func (r *Runner) later(op func(context.Context) bool) {
	r.model.Unresolved(1)
	r.mu.Lock()
	r.unresolved = append(r.unresolved, op)
	r.mu.Unlock()
}

// worker is one closed-loop client.
type worker struct {
	r   *Runner
	rng *rand.Rand
	id  int
}

func (w *worker) user() string {
	return w.r.users[w.rng.IntN(len(w.r.users))]
}

// Run drives the scenario: warm-up, then the measured phase, then it waits
// for flows in flight. Redeliveries may still be pending afterwards: Settle
// drains them.
func (r *Runner) Run(ctx context.Context) (*Result, error) {
	opt := r.opt
	began := time.Now()
	if opt.Scenario == ScenarioCredit {
		if err := r.prepareCredit(ctx); err != nil {
			return nil, err
		}
	}
	hard, cancel := context.WithTimeout(ctx, opt.Warmup+max(opt.Duration, opt.MaxDuration)+opt.RetryFor+opt.RefundWait+time.Minute)
	defer cancel()
	rssCtx, stopRSS := context.WithCancel(ctx)
	rssDone := make(chan struct{})
	go func() { defer close(rssDone); r.sampleRSS(rssCtx) }()

	warmEnd := time.Now().Add(opt.Warmup)
	var measureStart atomic.Pointer[time.Time]
	if opt.Warmup <= 0 {
		now := time.Now()
		measureStart.Store(&now)
		r.cur.Store(newStats(now))
		if opt.OnMeasure != nil {
			opt.OnMeasure()
		}
	}
	stopAt := func() time.Time {
		if s := measureStart.Load(); s != nil {
			if opt.Count > 0 {
				return s.Add(opt.MaxDuration)
			}
			return s.Add(opt.Duration)
		}
		return warmEnd.Add(max(opt.Duration, opt.MaxDuration))
	}
	var switchOnce sync.Once
	var wg sync.WaitGroup
	for i := range opt.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{r: r, id: i, rng: rand.New(rand.NewPCG(opt.Seed, uint64(i)))}
			for hard.Err() == nil {
				now := time.Now()
				if measureStart.Load() == nil && !now.Before(warmEnd) {
					switchOnce.Do(func() {
						t := time.Now()
						r.cur.Store(newStats(t))
						measureStart.Store(&t)
						if opt.OnMeasure != nil {
							opt.OnMeasure()
						}
					})
				}
				if now.After(stopAt()) {
					return
				}
				if measureStart.Load() != nil && opt.Count > 0 && r.started.Add(1) > int64(opt.Count) {
					return
				}
				kind, ok := w.flow(hard, opt.Scenario)
				if kind == "" { // nothing left to do (credit ran out of orders)
					return
				}
				r.cur.Load().flow(kind, ok)
				if ok {
					r.lastOK.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	progressDone := make(chan struct{})
	go func() { defer close(progressDone); r.progress(rssCtx, &measureStart) }()
	wg.Wait()
	end := time.Now()
	stopRSS()
	<-rssDone
	<-progressDone
	start := end
	if s := measureStart.Load(); s != nil {
		start = *s
	}
	return r.result(began, start, end), nil
}

func (r *Runner) progress(ctx context.Context, measureStart *atomic.Pointer[time.Time]) {
	t := time.NewTicker(r.opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := r.cur.Load()
		phase := "warm-up"
		if measureStart.Load() != nil {
			phase = "measuring"
		}
		_, flows, failed, _, reqs := s.snapshot(time.Since(s.start))
		var f, e int64
		for _, v := range flows {
			f += v
		}
		for _, v := range failed {
			e += v
		}
		secs := time.Since(s.start).Seconds()
		r.opt.Log(fmt.Sprintf("%s %5.1fs: %d requests (%.0f/s), %d flows (%.1f/s), %d failed flows, %d webhooks queued",
			phase, secs, reqs, float64(reqs)/secs, f, float64(f)/secs, e, r.ch.pending()))
	}
}

// flow runs one flow of the scenario and names the flow it ran.
func (w *worker) flow(ctx context.Context, scenario string) (string, bool) {
	switch scenario {
	case ScenarioRecharge:
		_, ok := w.recharge(ctx, w.user(), w.amount(), false)
		return ScenarioRecharge, ok
	case ScenarioRefund:
		return ScenarioRefund, w.refund(ctx, w.user())
	case ScenarioSpend:
		return ScenarioSpend, w.spend(ctx, w.user())
	case ScenarioStorm:
		return ScenarioStorm, w.storm(ctx, w.user())
	case ScenarioCreate:
		_, ok := w.create(ctx, w.user(), w.amount())
		return ScenarioCreate, ok
	case ScenarioCredit:
		o, ok := <-w.r.credits // closed once prepared: never blocks
		if !ok {
			return "", false
		}
		return ScenarioCredit, w.pay(ctx, o, false)
	case ScenarioWallet:
		return ScenarioWallet, w.wallet(ctx, w.user())
	case ScenarioMixed:
		return w.flow(ctx, w.pick())
	}
	return scenario, false
}

func (w *worker) pick() string {
	total := 0
	for _, v := range w.r.opt.Mix {
		total += v
	}
	n := w.rng.IntN(max(total, 1))
	for _, k := range []string{ScenarioRecharge, ScenarioSpend, ScenarioWallet, ScenarioRefund, ScenarioStorm, ScenarioCreate} {
		if n < w.r.opt.Mix[k] {
			return k
		}
		n -= w.r.opt.Mix[k]
	}
	return ScenarioRecharge
}

// amounts are recharge prices in fen: whole diamonds at 10 fen each.
var amounts = []int64{600, 1200, 3000, 6800, 9800, 19800}

func (w *worker) amount() int64 { return amounts[w.rng.IntN(len(amounts))] }

// prepareCredit creates the orders the Credit scenario pays, unmeasured, at
// full concurrency for as long as the measurement will last.
func (r *Runner) prepareCredit(ctx context.Context) error {
	d := r.opt.Warmup + r.opt.Duration
	if r.opt.Count > 0 {
		d = r.opt.MaxDuration
	}
	r.opt.Log(fmt.Sprintf("credit: creating orders to pay for %s (not measured)", d))
	buf := make(chan Order, 1<<20)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var n atomic.Int64
	for i := range r.opt.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{r: r, id: i, rng: rand.New(rand.NewPCG(r.opt.Seed^0x5eed, uint64(i)))}
			for ctx.Err() == nil && time.Now().Before(stop) {
				if r.opt.Count > 0 && n.Load() >= int64(r.opt.Count) {
					return
				}
				if o, ok := w.create(ctx, w.user(), w.amount()); ok {
					n.Add(1)
					buf <- o
				}
			}
		}()
	}
	wg.Wait()
	close(buf)
	r.credits = buf
	r.opt.Log(fmt.Sprintf("credit: %d orders ready", n.Load()))
	r.cur.Store(newStats(time.Now()))
	return ctx.Err()
}
