// Package redistest gives tests a real Redis without any set-up on the
// machine beyond a redis-server binary on PATH (apt-get install
// redis-server).
//
// URL returns TEST_REDIS_URL when it is set, and otherwise a redis-server
// this package starts once per test binary on a free loopback port, with no
// persistence, in a temporary directory. Tests sharing it isolate themselves
// with KeyPrefix. Start gives a test its own server that it may stop and
// restart on the same port, to play an outage.
//
// A package whose tests use URL should call Main from TestMain so the shared
// server is stopped cleanly; without it the server is still killed when the
// test binary exits (Linux parent-death signal), but its temporary directory
// is left behind.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvURL names the variable that points tests at an existing Redis.
const EnvURL = "TEST_REDIS_URL"

const startTimeout = 10 * time.Second

// shared is the one server per test binary. A package-level variable is the
// only way to share it between the tests of a binary; it is test-only state.
var shared struct {
	once sync.Once
	dir  string
	proc *proc
	err  error
}

// URL returns the URL of a Redis for this test: TEST_REDIS_URL if set,
// otherwise the shared server of this test binary (started on first use).
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			shared.err = fmt.Errorf("temp dir: %w", err)
			return
		}
		shared.dir = dir
		shared.proc, shared.err = startFree(dir)
	})
	if shared.err != nil {
		t.Fatalf("redistest: shared redis-server: %v", shared.err)
	}
	return shared.proc.url()
}

// Main runs the tests of a package and then stops the shared server:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if shared.proc != nil {
		shared.proc.stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// KeyPrefix returns a prefix unique to this test run, so tests sharing one
// Redis (or reruns against TEST_REDIS_URL) never see each other's keys.
func KeyPrefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "test:" + t.Name() + ":" + hex.EncodeToString(b[:]) + ":"
}

// Server is a redis-server private to one test.
type Server struct {
	t    testing.TB
	dir  string
	port int
	p    *proc // nil while stopped
}

// Start starts a redis-server for this test only, stopped when the test
// ends. It ignores TEST_REDIS_URL: a test that stops its server must own it.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir()}
	p, err := startFree(s.dir)
	if err != nil {
		t.Fatalf("redistest: start redis-server: %v", err)
	}
	s.p, s.port = p, p.port
	t.Cleanup(s.Stop)
	return s
}

// Addr is host:port, the same across restarts.
func (s *Server) Addr() string { return addr(s.port) }

// URL is the redis:// URL, the same across restarts.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Stop kills the server (like a crash: no clean shutdown) and waits until it
// has exited. Its data is lost. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.p != nil {
		s.p.stop()
		s.p = nil
	}
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	// The old process has exited, but give the kernel a moment if the port
	// is still held; redis-server sets SO_REUSEADDR so this is rare.
	for range 20 {
		if s.p, err = start(s.dir, s.port); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr(), err)
}

type proc struct {
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	out  *lockedBuffer
}

func (p *proc) url() string { return "redis://" + addr(p.port) + "/0" }

func (p *proc) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// startFree starts a server on a free port. The port is found by binding :0
// and closing it, so another process can take it in between; a few attempts
// cover that race.
func startFree(dir string) (*proc, error) {
	var err error
	for range 3 {
		var port int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		var p *proc
		if p, err = start(dir, port); err == nil {
			return p, nil
		}
	}
	return nil, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(dir string, port int) (*proc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (apt-get install redis-server, or set %s): %w", EnvURL, err)
	}
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	cmd.Dir = dir
	p := &proc{port: port, cmd: cmd, done: make(chan struct{}), out: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysProcAttr()

	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		// The parent-death signal fires when the thread that started the
		// child exits, not the process: keep this goroutine on its thread
		// for the life of the child. The thread ends with the goroutine.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	if err := waitReady(p); err != nil {
		p.stop()
		return nil, fmt.Errorf("redis-server on port %d: %w; output: %s", port, err, strings.TrimSpace(p.out.String()))
	}
	return p, nil
}

// waitReady polls with PING until the server answers, it exits, or
// startTimeout passes.
func waitReady(p *proc) error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.done:
			return errors.New("exited during start-up")
		default:
		}
		err := ping(addr(p.port))
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ping(a string) error {
	c, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return fmt.Errorf("write ping: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read ping reply: %w", err)
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("ping reply %q", line)
	}
	return nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 64<<10 { // keep start-up errors, not an unbounded log
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
