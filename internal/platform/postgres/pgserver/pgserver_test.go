package pgserver

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// The server runs in its own process group, so a Ctrl-C at the terminal
// (SIGINT to the foreground group) reaches only the process that started
// it, which stops it after draining its own requests.
func TestOwnProcessGroup(t *testing.T) {
	if _, err := BinDir(); err != nil {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	pgid, err := syscall.Getpgid(s.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid == syscall.Getpgrp() {
		t.Fatalf("postgres shares our process group %d", pgid)
	}
}
