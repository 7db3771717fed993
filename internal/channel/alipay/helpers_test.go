package alipay_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
)

var otherKey struct {
	once sync.Once
	key  *rsa.PrivateKey
}

// strangerKey is an RSA key that is not the fake Alipay's.
func strangerKey(t testing.TB) *rsa.PrivateKey {
	otherKey.once.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		otherKey.key = k
	})
	return otherKey.key
}

// receiver is our webhook endpoint in miniature: it runs ParseWebhook and
// answers WebhookResponse, recording the events.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []channel.Event
	errs   []error
	// answer, when set, replaces the adapter's acknowledgement (to make the
	// fake retry).
	answer func(n int) (int, string)
	n      int
	ch     *alipay.Channel
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.n++
	n, answer, ch := rc.n, rc.answer, rc.ch
	rc.mu.Unlock()
	evs, err := ch.ParseWebhook(r.Context(), r.Header, body)
	rc.mu.Lock()
	rc.events = append(rc.events, evs...)
	if err != nil {
		rc.errs = append(rc.errs, err)
	}
	rc.mu.Unlock()
	if answer != nil {
		status, text := answer(n)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, text)
		return
	}
	resp := ch.WebhookResponse(err)
	if resp.ContentType != "" {
		w.Header().Set("Content-Type", resp.ContentType)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

func (rc *receiver) Events() []channel.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]channel.Event(nil), rc.events...)
}

func (rc *receiver) Errors() []error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]error(nil), rc.errs...)
}

type env struct {
	fake *alipaytest.Server
	ch   *alipay.Channel
	rc   *receiver
}

// setup builds a fake, a receiver and an adapter pointed at both. mod may
// adjust the adapter config.
func setup(t *testing.T, opts alipaytest.Options, mod func(*alipay.Config)) *env {
	t.Helper()
	fake := alipaytest.New(t, opts)
	rc := newReceiver(t)
	cfg := fake.Config()
	cfg.NotifyURL = rc.srv.URL + "/v1/webhooks/alipay"
	if mod != nil {
		mod(&cfg)
	}
	ch, err := alipay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.ch = ch
	rc.mu.Unlock()
	return &env{fake: fake, ch: ch, rc: rc}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
