package redistest

import (
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func TestSharedURLIsStable(t *testing.T) {
	a, b := URL(t), URL(t)
	if a != b {
		t.Fatalf("URL changed: %s then %s", a, b)
	}
	if err := ping(strings.TrimSuffix(strings.TrimPrefix(a, "redis://"), "/0")); err != nil {
		t.Fatal(err)
	}
}

func TestServerStopRestartSamePort(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	if err := ping(addr); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := ping(addr); err == nil {
		t.Fatal("still answering after Stop")
	}
	s.Stop() // stopping twice is harmless
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("address changed: %s then %s", addr, s.Addr())
	}
	if err := ping(addr); err != nil {
		t.Fatal(err)
	}
}

func TestKeyPrefixUnique(t *testing.T) {
	if KeyPrefix(t) == KeyPrefix(t) {
		t.Fatal("two prefixes in one test are equal")
	}
}
