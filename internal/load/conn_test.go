package load

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConns(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-Key", r.Header.Get("Idempotency-Key"))
			_, _ = w.Write([]byte(r.Method + " " + r.Host + " " + string(body)))
		case "/big": // chunked, and beyond the 1 MiB the tool keeps
			for range 300 {
				_, _ = w.Write([]byte(strings.Repeat("x", 4096)))
			}
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte("bye"))
		case "/slow":
			<-r.Context().Done()
		case "/slowish":
			time.Sleep(50 * time.Millisecond)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	p := newConns(host, "", 4, 5*time.Second)
	defer p.close()
	ctx := context.Background()

	status, raw, err := p.do(ctx, "POST", "/echo", []header{{"Idempotency-Key", "k1"}}, []byte(`{"a":1}`))
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.Equal(t, "POST "+host+` {"a":1}`, string(raw))
	require.Len(t, p.idle, 1, "kept alive")

	status, raw, err = p.do(ctx, "GET", "/big", nil, nil)
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.Len(t, raw, 1<<20)
	require.Len(t, p.idle, 1, "the rest was drained: the connection is reused")

	_, raw, err = p.do(ctx, "GET", "/close", nil, nil)
	require.NoError(t, err)
	require.Equal(t, "bye", string(raw))
	require.Empty(t, p.idle, "closed as the server asked")

	// Idle connections the server closed (it restarted): a replayable
	// request is sent once more on a new connection, however many dead
	// ones the pool held; anything else fails, as with net/http.
	fill := func() {
		t.Helper()
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() { // at once, so that each takes a connection of its own
				defer wg.Done()
				_, _, err := p.do(ctx, "GET", "/slowish", nil, nil)
				require.NoError(t, err)
			}()
		}
		wg.Wait()
		require.Len(t, p.idle, 3)
		srv.CloseClientConnections()
	}
	fill()
	before := hits.Load()
	_, raw, err = p.do(ctx, "POST", "/echo", []header{{"Idempotency-Key", "k2"}}, []byte("again"))
	require.NoError(t, err)
	require.Equal(t, "POST "+host+" again", string(raw))
	require.Equal(t, before+1, hits.Load())
	fill()
	_, _, err = p.do(ctx, "GET", "/echo", nil, nil)
	require.NoError(t, err)
	fill()
	before = hits.Load()
	_, _, err = p.do(ctx, "POST", "/echo", nil, []byte("webhook"))
	require.Error(t, err, "not replayable: a request without a key is not sent twice")
	require.Equal(t, before, hits.Load())

	// A cancelled request returns at once.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err = p.do(cctx, "GET", "/slow", nil, nil)
	require.Equal(t, "canceled", transportCode(err))
	require.Less(t, time.Since(start), 2*time.Second)

	// A server that is gone is an error.
	srv.Close()
	p.close()
	_, _, err = p.do(ctx, "GET", "/echo", nil, nil)
	require.Error(t, err)
	require.Equal(t, "conn_refused", transportCode(err))
}

// A base URL with a path prefixes every request's path.
func TestConnsPrefix(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.URL.Path))
	}))
	defer srv.Close()
	c := newClient(srv.URL+"/api/", "jwt-secret-0123456789", "wh", 1, 5*time.Second)
	defer c.close()
	rep, err := c.do(context.Background(), request{method: "GET", path: "/v1/wallet"})
	require.NoError(t, err)
	require.Equal(t, "/api/v1/wallet", string(rep.body))
}
