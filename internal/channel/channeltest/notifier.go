package channeltest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Message is a notification as the notifier posts it: the same body at
// every attempt.
type Message struct {
	ID   string // the channel's notification id, for the delivery log
	URL  string // where it is posted; "" sends it nowhere
	Body []byte
}

// Delivery is one attempt to deliver a notification.
type Delivery struct {
	NotificationID string
	URL            string
	Attempt        int // 1-based for the notifier; 0 for Deliver
	Status         int // HTTP status, 0 when the request failed
	Body           string
	Err            error
	Acked          bool // the answer acknowledges, as the channel judges it
	At             time.Time
}

// NotifierOptions are the channel's side of a Notifier.
type NotifierOptions struct {
	// Schedule is the wait before each redelivery; attempts are
	// len(Schedule)+1.
	Schedule []time.Duration
	// Timeout bounds one attempt; default 2 s.
	Timeout time.Duration
	// Now stamps deliveries (the fake's clock).
	Now func() time.Time
	// ContentType is set on every post.
	ContentType string
	// Header, when set, makes the headers of one attempt: channels that
	// sign headers sign each attempt afresh, as their servers do.
	Header func(body []byte) http.Header
	// Acked is the channel's rule for an acknowledgement.
	Acked func(status int, body string) bool
}

// Notifier posts notifications to the receiver, in the background with
// retries (Notify, Push) or once (Deliver), and logs every attempt. It is
// safe for concurrent use; Notify and Push return at once, so a fake may
// call them with its own lock held.
type Notifier struct {
	opts   NotifierOptions
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	lose       int
	inflight   int
	deliveries []Delivery
}

// NewNotifier makes a notifier; Close stops it.
func NewNotifier(opts NotifierOptions) *Notifier {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Notifier{opts: opts, client: &http.Client{Timeout: opts.Timeout}, ctx: ctx, cancel: cancel}
}

// Close stops the pushes and waits for them to end. Closing twice is fine.
func (n *Notifier) Close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
}

// Closed is closed when Close is called: fakes stop waiting out injected
// delays then.
func (n *Notifier) Closed() <-chan struct{} { return n.ctx.Done() }

// LoseNext makes the next k calls of Notify drop their message, as if the
// channel gave up on it.
func (n *Notifier) LoseNext(k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lose += k
}

// Notify is a new notification: it is pushed (see Push) unless LoseNext
// asked for it to be lost.
func (n *Notifier) Notify(m Message) {
	n.mu.Lock()
	lost := n.lose > 0
	if lost {
		n.lose--
	}
	n.mu.Unlock()
	if !lost {
		n.Push(m)
	}
}

// Push posts m in the background, on the retry schedule, until the
// receiver acknowledges it or the attempts run out. After Close, or
// without a URL, it does nothing.
func (n *Notifier) Push(m Message) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || m.URL == "" {
		return
	}
	n.inflight++
	n.wg.Add(1)
	go func() {
		defer func() {
			n.mu.Lock()
			n.inflight--
			n.mu.Unlock()
			n.wg.Done()
		}()
		for attempt := 1; ; attempt++ {
			if d := n.post(n.ctx, m, n.header(m.Body), attempt); d.Acked {
				return
			}
			if attempt > len(n.opts.Schedule) {
				return
			}
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(n.opts.Schedule[attempt-1]):
			}
		}
	}()
}

// Deliver makes one synchronous attempt at m, without retries.
func (n *Notifier) Deliver(ctx context.Context, m Message) Delivery {
	return n.post(ctx, m, n.header(m.Body), 0)
}

// DeliverWith is Deliver with exactly the headers h (but Content-Type):
// for stale timestamps, unknown serials and other forgeries.
func (n *Notifier) DeliverWith(ctx context.Context, m Message, h http.Header) Delivery {
	return n.post(ctx, m, h, 0)
}

// Deliveries returns every attempt so far, oldest first.
func (n *Notifier) Deliveries() []Delivery {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Delivery(nil), n.deliveries...)
}

// WaitIdle blocks until nothing is being pushed (each push was acknowledged
// or ran out of attempts), or ctx ends.
func (n *Notifier) WaitIdle(ctx context.Context) error {
	for {
		n.mu.Lock()
		k := n.inflight
		n.mu.Unlock()
		if k == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d notifications still in flight: %w", k, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (n *Notifier) header(body []byte) http.Header {
	if n.opts.Header == nil {
		return nil
	}
	return n.opts.Header(body)
}

func (n *Notifier) post(ctx context.Context, m Message, h http.Header, attempt int) Delivery {
	d := Delivery{NotificationID: m.ID, URL: m.URL, Attempt: attempt, At: n.opts.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.Body))
	if err != nil {
		d.Err = err
	} else {
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", n.opts.ContentType)
		resp, err := n.client.Do(req)
		if err != nil {
			d.Err = fmt.Errorf("deliver %s: %w", m.ID, err)
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			d.Status, d.Body = resp.StatusCode, string(body)
			d.Acked = n.opts.Acked(d.Status, d.Body)
		}
	}
	n.mu.Lock()
	n.deliveries = append(n.deliveries, d)
	n.mu.Unlock()
	return d
}
