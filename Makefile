# diamondd: `make dev` runs the service on embedded defaults, `make test` runs every test.
GO       ?= go
FUZZTIME ?= 5s

.PHONY: dev test vet fuzz build generate deps bench chaos

## dev: run diamondd on a throwaway PostgreSQL with the sandbox channel and demo tokens
dev: deps
	$(GO) run ./cmd/diamondd dev

## test: vet, short fuzz runs, then every test against real PostgreSQL and Redis (started by the tests)
test: deps vet fuzz
	$(GO) test -count=1 -timeout 9m ./...

vet:
	$(GO) vet ./...

## fuzz: a short fixed-time run of each fuzz target (they must never panic). go test's time limit can
## strike while a worker is still gathering the baseline or minimizing ("context deadline exceeded"),
## so a failed run is retried up to twice; that cannot hide a real failure, because go test saves the
## failing input under testdata/fuzz and every retry replays it as a seed.
fuzz:
	@set -e; for target in $$(grep -rl --include='*_test.go' '^func Fuzz' internal | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h -o '^func Fuzz[A-Za-z0-9_]*' $$target/*_test.go | sed 's/func //'); do \
	    echo "fuzz $$f ($$target, $(FUZZTIME))"; \
	    run() { $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x -parallel 1 ./$$target; }; \
	    if ! run >/dev/null 2>&1; then \
	      echo "fuzz $$f: the first run did not pass; running it again"; \
	      run >/dev/null 2>&1 || run >/dev/null 2>&1 || { echo "fuzz $$f failed three times"; run; exit 1; }; \
	    fi; \
	  done; \
	done

build:
	$(GO) build -o bin/diamondd ./cmd/diamondd

## generate: regenerate the HTTP layer from openapi/openapi.yaml
generate:
	$(GO) generate ./...

## deps: PostgreSQL's server binaries and redis-server (the Redis outage tests stop and restart a private
## one even when TEST_REDIS_URL is set); installed with apt when root, otherwise named
deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || [ -n "$$PG_BIN" ] || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing. Install them with: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

## bench: pgbench's TPC-B-like script next to the recharge and mixed scenarios on a fresh private
## PostgreSQL, then order creation, webhook credit, a hot user, wallet reads at 1k vs 1M postings, pprof.
## BENCH_FLAGS passes flags (bin/diamond-load bench -h), e.g. BENCH_FLAGS="-duration 5s -parts pgbench,recharge".
bench: deps
	$(GO) build -o bin/diamondd ./cmd/diamondd
	$(GO) build -o bin/diamond-load ./cmd/diamond-load
	bin/diamond-load bench -diamondd bin/diamondd -out bin/bench $(BENCH_FLAGS)

## chaos: 60 s of mixed load while diamondd is killed -9 five times, PostgreSQL restarted once and Redis
## stopped for 10 s (all private, on loopback); then the invariants. CHAOS_FLAGS passes flags.
chaos: deps
	$(GO) build -o bin/diamondd ./cmd/diamondd
	$(GO) build -o bin/diamond-load ./cmd/diamond-load
	bin/diamond-load chaos -diamondd bin/diamondd -out bin/chaos $(CHAOS_FLAGS)
