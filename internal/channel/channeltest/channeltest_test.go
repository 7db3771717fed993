package channeltest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
)

func TestCallsTakeFaultsInOrder(t *testing.T) {
	var c channeltest.Calls[string]
	c.Inject("refund", "first")
	c.Inject("query", "q")
	c.Inject("refund", "second")
	for _, want := range []string{"first", "second"} {
		if f := c.Take("refund"); f == nil || *f != want {
			t.Errorf("take = %v, want %q", f, want)
		}
	}
	if f := c.Take("refund"); f != nil {
		t.Errorf("take = %q once the queue is empty", *f)
	}
	if c.Count("refund") != 3 || c.Count("query") != 0 {
		t.Errorf("counts refund %d, query %d", c.Count("refund"), c.Count("query"))
	}
}

func newNotifier(t *testing.T) *channeltest.Notifier {
	n := channeltest.NewNotifier(channeltest.NotifierOptions{
		Schedule:    []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond},
		Timeout:     time.Second,
		Now:         time.Now,
		ContentType: "text/plain",
		Header:      func(body []byte) http.Header { return http.Header{"X-Sig": {string(body)}} },
		Acked:       func(status int, body string) bool { return status == http.StatusOK && body == "ok" },
	})
	t.Cleanup(n.Close)
	return n
}

func TestNotifierRetriesUntilAcked(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Sig") != string(body) || r.Header.Get("Content-Type") != "text/plain" {
			t.Errorf("headers %v", r.Header)
		}
		if calls.Add(1) < 3 {
			_, _ = io.WriteString(w, "not yet")
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	n := newNotifier(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	n.LoseNext(1)
	n.Notify(channeltest.Message{ID: "lost", URL: srv.URL, Body: []byte("a")})
	n.Notify(channeltest.Message{ID: "n1", URL: srv.URL, Body: []byte("b")})
	if err := n.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	ds := n.Deliveries()
	if len(ds) != 3 || ds[0].Acked || !ds[2].Acked || ds[2].Attempt != 3 || ds[2].NotificationID != "n1" {
		t.Fatalf("deliveries %+v", ds)
	}
	if d := n.Deliver(ctx, channeltest.Message{ID: "once", URL: srv.URL, Body: []byte("c")}); !d.Acked || d.Attempt != 0 {
		t.Fatalf("deliver %+v", d)
	}
}

func TestNotifierClose(t *testing.T) {
	n := newNotifier(t)
	n.Close()
	n.Push(channeltest.Message{ID: "late", URL: "http://127.0.0.1:1/", Body: []byte("x")})
	if ds := n.Deliveries(); len(ds) != 0 {
		t.Fatalf("pushed after Close: %+v", ds)
	}
	if channeltest.Sleep(context.Background(), time.Hour, n.Closed()) {
		t.Fatal("Sleep waited out its delay after Close")
	}
}
