// Package rig starts and breaks the processes `make bench` and `make chaos`
// run against: a private PostgreSQL cluster that can be restarted, a private
// redis-server that can be stopped, diamondd itself (killable with SIGKILL),
// and pgbench. Everything listens on 127.0.0.1 on free ports, lives in one
// temporary directory, and dies with the parent process (Pdeathsig).
package rig

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/platform/postgres/pgserver"
)

// FreePort finds a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proc is a child process we can signal and wait for.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func startProc(name, logPath string, cred *syscall.Credential, env []string, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logf}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the process and waits up to grace, then kills it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// PG is a private PostgreSQL cluster.
type PG struct {
	Port int
	dir  string
	bin  string
	cred *syscall.Credential
	args []string

	mu sync.Mutex
	p  *proc
}

// PGOptions tune the cluster.
type PGOptions struct {
	// Fast turns durability off (fsync, synchronous_commit, full pages), as
	// the test clusters do; the default is PostgreSQL's durable defaults.
	Fast bool
}

// StartPG creates a cluster in a new temporary directory and starts it.
func StartPG(ctx context.Context, o PGOptions) (*PG, error) {
	bin, err := pgserver.BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "diamond-load-pg-")
	if err != nil {
		return nil, err
	}
	g := &PG{dir: dir, bin: bin}
	if g.cred, err = pgserver.Credential(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: g.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	if g.Port, err = FreePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	g.args = []string{"-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(g.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "shared_buffers=256MB"}
	// pg_stat_statements, when installed, lets bench count statements per flow.
	if _, err := os.Stat(filepath.Join(filepath.Dir(bin), "lib", "pg_stat_statements.so")); err == nil {
		g.args = append(g.args, "-c", "shared_preload_libraries=pg_stat_statements")
	}
	if o.Fast {
		g.args = append(g.args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	if err := g.Start(ctx); err != nil {
		g.Destroy()
		return nil, err
	}
	return g, nil
}

// PID of the postmaster (0 when stopped).
func (g *PG) PID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p == nil || g.p.exited() {
		return 0
	}
	return g.p.pid()
}

// URL of a database in the cluster.
func (g *PG) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", g.Port, db)
}

// Start starts the (stopped) server and waits until it accepts connections.
func (g *PG) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, err := startProc("postgres", filepath.Join(g.dir, "postgres.log"), g.cred, os.Environ(), filepath.Join(g.bin, "postgres"), g.args...)
	if err != nil {
		return err
	}
	g.p = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := pgx.Connect(ctx, g.URL("postgres"))
		if err == nil {
			return c.Close(ctx)
		}
		if p.exited() {
			log, _ := os.ReadFile(filepath.Join(g.dir, "postgres.log"))
			return fmt.Errorf("postgres exited: %s", tail(string(log), 2000))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("postgres did not start: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down in fast mode (what a restart by an operator
// or an orchestrator does).
func (g *PG) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.p.stop(syscall.SIGINT, 20*time.Second)
}

// Destroy stops the server and removes its directory.
func (g *PG) Destroy() {
	g.Stop()
	os.RemoveAll(g.dir)
}

// CreateDB creates a database.
func (g *PG) CreateDB(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, g.URL("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// Redis is a private redis-server without persistence.
type Redis struct {
	Port int
	dir  string
	p    *proc
}

// StartRedis starts redis-server on a free loopback port.
func StartRedis(ctx context.Context) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server not found: apt-get install -y redis-server")
	}
	dir, err := os.MkdirTemp("", "diamond-load-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{dir: dir}
	if r.Port, err = FreePort(); err != nil {
		return nil, err
	}
	return r, r.Start(ctx)
}

// URL for REDIS_URL.
func (r *Redis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.Port) }

// Start starts (or restarts) the server and waits until it listens.
func (r *Redis) Start(ctx context.Context) error {
	p, err := startProc("redis", filepath.Join(r.dir, "redis.log"), nil, os.Environ(), "redis-server",
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir)
	if err != nil {
		return err
	}
	r.p = p
	return waitTCP(ctx, r.Port, p, 10*time.Second)
}

// Stop stops the server.
func (r *Redis) Stop() { r.p.stop(syscall.SIGTERM, 10*time.Second) }

// Destroy stops the server and removes its directory.
func (r *Redis) Destroy() {
	r.Stop()
	os.RemoveAll(r.dir)
}

func waitTCP(ctx context.Context, port int, p *proc, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			return c.Close()
		}
		if p.exited() {
			return fmt.Errorf("%s exited", p.name)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not listen on %d: %w", p.name, port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Service is a diamondd process (or anything that serves its API).
type Service struct {
	Bin  string
	Args []string // default: serve
	Env  []string // added to this process's environment
	Port int
	Dir  string // logs

	p *proc
}

// URL of the service.
func (s *Service) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.Port) }

// PID of the running process (0 when none).
func (s *Service) PID() int {
	if s.p == nil || s.p.exited() {
		return 0
	}
	return s.p.pid()
}

// Run runs a one-off subcommand of the binary (migrate up) with the env.
func (s *Service) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.Bin, args...)
	cmd.Env = append(os.Environ(), s.Env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", s.Bin, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Start starts the service and waits until /readyz answers 200.
func (s *Service) Start(ctx context.Context) error {
	args := s.Args
	if len(args) == 0 {
		args = []string{"serve"}
	}
	env := append(os.Environ(), s.Env...)
	env = append(env, fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", s.Port))
	p, err := startProc("diamondd", filepath.Join(s.Dir, "diamondd.log"), nil, env, s.Bin, args...)
	if err != nil {
		return err
	}
	s.p = p
	if _, err := s.WaitReady(ctx, 30*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "diamondd.log"))
		return fmt.Errorf("%w\n%s", err, tail(string(log), 3000))
	}
	return nil
}

// WaitReady polls /readyz until it answers 200 and returns how long it took.
func (s *Service) WaitReady(ctx context.Context, d time.Duration) (time.Duration, error) {
	start := time.Now()
	cl := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/readyz", nil)
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(start), nil
			}
		}
		if s.p != nil && s.p.exited() {
			return time.Since(start), errors.New("diamondd exited")
		}
		if time.Since(start) > d || ctx.Err() != nil {
			return time.Since(start), fmt.Errorf("diamondd not ready after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill9 kills the service with SIGKILL: no shutdown, requests cut mid-way.
func (s *Service) Kill9() {
	if s.p != nil && !s.p.exited() {
		_ = s.p.cmd.Process.Kill()
		<-s.p.done
	}
}

// Stop shuts the service down gracefully.
func (s *Service) Stop() { s.p.stop(syscall.SIGTERM, 25*time.Second) }

// LogTail is the end of the service's log.
func (s *Service) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "diamondd.log"))
	return tail(string(b), n)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
