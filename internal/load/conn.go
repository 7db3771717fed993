package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// conns is a small HTTP/1.1 keep-alive client for the load's own requests:
// a request takes an idle connection (or dials one), and is written and its
// response read on the calling goroutine. net/http's Transport runs a read
// and a write goroutine per connection and hands every request and response
// between them: under load that was about half of the tool's CPU, which the
// server under test then lacks. pgbench and wrk have no such overhead, and
// the figures are fairer when the tool costs as little as they do.
//
// It speaks to one loopback diamondd: no proxies, TLS, redirects or
// compression. Responses are parsed by net/http (ReadResponse), chunked or
// not.
type conns struct {
	addr    string // host:port
	host    string // the Host header
	prefix  string // the base URL's path, if any
	timeout time.Duration
	dialer  net.Dialer
	idle    chan *hconn
}

type hconn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func newConns(host, prefix string, size int, timeout time.Duration) *conns {
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(host, "80")
	}
	return &conns{addr: addr, host: host, prefix: strings.TrimSuffix(prefix, "/"), timeout: timeout,
		dialer: net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second},
		idle:   make(chan *hconn, size)}
}

// header is one request header.
type header struct{ name, value string }

// do sends one request and reads its whole response (up to 1 MiB). When a
// reused connection fails before any of the response arrives (the server
// restarted, or closed it idle), the other idle connections are likely as
// dead: they are dropped, and a replayable request is sent once more on a
// new connection. Replayable is net/http's rule: a read, or a request with
// an Idempotency-Key, which the server answers once however often it
// arrives. Anything else (a webhook, an approval) may have run before the
// connection died, so its failure is the caller's to judge, as it would be
// with net/http.
func (p *conns) do(ctx context.Context, method, path string, hdrs []header, body []byte) (int, []byte, error) {
	fresh := false
	for {
		h, reused, err := p.get(ctx, fresh)
		if err != nil {
			return 0, nil, err
		}
		status, raw, started, err := p.exchange(ctx, h, method, p.prefix+path, hdrs, body)
		if err == nil {
			return status, raw, nil
		}
		h.c.Close()
		if ctx.Err() != nil {
			return 0, nil, fmt.Errorf("%w (%w)", ctx.Err(), err) // classified as the context's end
		}
		if !reused || started || !stale(err) {
			return 0, nil, err
		}
		p.close()
		if fresh || !replayable(method, hdrs) {
			return 0, nil, err
		}
		fresh = true
	}
}

// replayable is net/http's rule for resending a request on a new connection.
func replayable(method string, hdrs []header) bool {
	if method == http.MethodGet || method == http.MethodHead {
		return true
	}
	return slices.ContainsFunc(hdrs, func(h header) bool { return h.name == "Idempotency-Key" })
}

// stale reports a failure of the kind a connection closed by the server
// gives.
func stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// get takes an idle connection, or dials one (always when fresh).
func (p *conns) get(ctx context.Context, fresh bool) (*hconn, bool, error) {
	if !fresh {
		select {
		case h := <-p.idle:
			return h, true, nil
		default:
		}
	}
	c, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, false, err
	}
	return &hconn{c: c, br: bufio.NewReaderSize(c, 8<<10), bw: bufio.NewWriterSize(c, 8<<10)}, false, nil
}

func (p *conns) put(h *hconn) {
	select {
	case p.idle <- h:
	default:
		h.c.Close()
	}
}

// exchange writes one request on h and reads its response; started reports
// that some of the response had arrived when it failed. On success h is
// back in the idle pool (or closed, when the server asked to).
func (p *conns) exchange(ctx context.Context, h *hconn, method, path string, hdrs []header, body []byte) (status int, raw []byte, started bool, err error) {
	deadline := time.Now().Add(p.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := h.c.SetDeadline(deadline); err != nil {
		return 0, nil, false, err
	}
	// A cancelled run must not wait for its requests' timeouts.
	stop := context.AfterFunc(ctx, func() { _ = h.c.SetDeadline(time.Now()) })
	defer stop()

	bw := h.bw
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(p.host)
	bw.WriteString("\r\n")
	for _, hd := range hdrs {
		bw.WriteString(hd.name)
		bw.WriteString(": ")
		bw.WriteString(hd.value)
		bw.WriteString("\r\n")
	}
	if body != nil || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.Itoa(len(body)))
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
	bw.Write(body)
	if err := bw.Flush(); err != nil {
		return 0, nil, false, err
	}

	if _, err := h.br.Peek(1); err != nil {
		return 0, nil, false, err
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return 0, nil, true, fmt.Errorf("read response: %w", err)
	}
	raw, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil {
		// Drain what the limit left, so the connection stays usable.
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil {
		return 0, nil, true, fmt.Errorf("read response body: %w", err)
	}
	if !stop() || resp.Close {
		h.c.Close() // cancelled meanwhile (its deadline is spent), or closed by the server
	} else {
		p.put(h)
	}
	return resp.StatusCode, raw, true, nil
}

// close closes the idle connections.
func (p *conns) close() {
	for {
		select {
		case h := <-p.idle:
			h.c.Close()
		default:
			return
		}
	}
}
