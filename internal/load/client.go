package load

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/diamondd/diamondd/internal/auth"
)

// client speaks the HTTP contract of API.md to one diamondd.
type client struct {
	base      string
	conns     *conns       // the load's requests
	http      *http.Client // the rest (metrics)
	jwtSecret []byte
	whSecret  []byte
	timeout   time.Duration

	mu     sync.Mutex
	tokens map[string]string // role + " " + subject → token
}

// CheckLoopback refuses any target that is not on this machine: the tool
// puts real load on what it talks to.
func CheckLoopback(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("target %q: %w", base, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("target %q: only http:// on loopback is supported", base)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q is not a loopback address (127.0.0.1, ::1, localhost)", base)
	}
	return nil
}

func newClient(base string, jwtSecret, whSecret string, conns int, timeout time.Duration) *client {
	u, err := url.Parse(base)
	if err != nil {
		panic(fmt.Sprintf("target %q: %v", base, err)) // CheckLoopback refused it at start
	}
	tr := &http.Transport{
		Proxy:              nil, // loopback only: never through a proxy
		DialContext:        (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		IdleConnTimeout:    30 * time.Second,
		DisableCompression: true,
	}
	return &client{base: base, conns: newConns(u.Host, u.Path, conns*2, timeout), http: &http.Client{Transport: tr, Timeout: timeout},
		jwtSecret: []byte(jwtSecret), whSecret: []byte(whSecret), timeout: timeout, tokens: map[string]string{}}
}

func (c *client) close() {
	c.conns.close()
	c.http.CloseIdleConnections()
}

// token mints (once) a token for a principal with the service's own secret.
func (c *client) token(sub string, role auth.Role) string {
	k := string(role) + " " + sub
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[k]; ok {
		return t
	}
	t, err := auth.Sign(c.jwtSecret, auth.Principal{Subject: sub, Role: role}, 24*time.Hour, time.Now())
	if err != nil {
		panic(fmt.Sprintf("sign token: %v", err)) // only an empty secret fails, refused at start
	}
	c.tokens[k] = t
	return t
}

// reply is a received response.
type reply struct {
	status int
	body   []byte
	code   string // problem code, or "" for 2xx
}

// request describes one HTTP exchange.
type request struct {
	method, path string
	token, key   string
	body         []byte
	webhook      bool // sign as the sandbox channel
}

// do sends one request. A transport failure is an error; any HTTP status is
// a reply.
func (c *client) do(ctx context.Context, r request) (*reply, error) {
	hdrs := make([]header, 0, 5)
	if r.body != nil {
		hdrs = append(hdrs, header{"Content-Type", "application/json"})
	}
	if r.token != "" {
		hdrs = append(hdrs, header{"Authorization", "Bearer " + r.token})
	}
	if r.key != "" {
		hdrs = append(hdrs, header{"Idempotency-Key", r.key})
	}
	if r.webhook {
		// A channel signs each delivery anew, with the time of that delivery.
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, c.whSecret)
		mac.Write([]byte(ts))
		mac.Write([]byte("."))
		mac.Write(r.body)
		hdrs = append(hdrs, header{"X-Sandbox-Timestamp", ts}, header{"X-Sandbox-Signature", hex.EncodeToString(mac.Sum(nil))})
	}
	status, raw, err := c.conns.do(ctx, r.method, r.path, hdrs, r.body)
	if err != nil {
		return nil, err
	}
	out := &reply{status: status, body: raw}
	if status >= 300 {
		var p struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(raw, &p) == nil && p.Code != "" {
			out.code = p.Code
		} else {
			out.code = "http_" + strconv.Itoa(status)
		}
	}
	return out, nil
}

// transportCode classifies a transport failure for the error table.
func transportCode(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "conn_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "conn_closed"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport"
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs and maps are encoded here
	}
	return b
}
