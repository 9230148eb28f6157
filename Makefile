# bottleq — see README.md. `make` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
PKGS  := ./...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## build every command in cmd/ into bin/, static as the Dockerfile does (worker, enqueue, api, dashboard, egress-proxy, smolvm-sim)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

.PHONY: sim
sim: ## build bin/worker, bin/enqueue and the smolvm SIMULATOR as bin/sim/smolvm (no isolation)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/worker ./cmd/enqueue
	CGO_ENABLED=0 $(GO) build -o $(BIN)/sim/smolvm ./cmd/smolvm-sim

.PHONY: test
test: ## gofmt check, go vet, and every test with -race (installs redis-server and versitygw if it can)
	@scripts/ensure-redis
	@scripts/ensure-versitygw >/dev/null || echo "make test: the S3 store tests will skip" >&2
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: conformance
conformance: ## smolvm conformance suite on the simulator, and on SMOLVM_CONFORMANCE_BIN=/path/to/smolvm if set
	@if [ -z "$$SMOLVM_CONFORMANCE_BIN" ]; then \
	  echo "conformance: the simulator only; set SMOLVM_CONFORMANCE_BIN=/path/to/smolvm to run against a real smolvm"; fi
	set -o pipefail; $(GO) test -race -count=1 -timeout 60m -run '^TestConformance$$' -v ./smolvm | grep -vE '^=== (RUN|PAUSE|CONT)'

FUZZTIME ?= 10s
.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 10s) on top of its committed corpus
	$(GO) test -run '^$$' -fuzz '^FuzzArgv$$' -fuzztime $(FUZZTIME) ./smolvm
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./tasks
	$(GO) test -run '^$$' -fuzz '^FuzzParseHost$$' -fuzztime $(FUZZTIME) ./egress

.PHONY: demo
demo: ## run a worker on the embedded Redis with the smolvm SIMULATOR (no isolation) and two sample tasks
	@scripts/demo

.PHONY: run
run: build ## run the worker on the embedded Redis with the real smolvm on PATH (or SMOLVM_BIN)
	$(BIN)/worker

.PHONY: dashboard
dashboard: build ## serve the asynq dashboard and /metrics on 127.0.0.1:8080 (REDIS_URL applies)
	$(BIN)/dashboard

.PHONY: lint
lint: ## gofmt, go vet and staticcheck (pinned, run with go run)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

.PHONY: bench
bench: ## benchmarks: real worker + smolvm simulator + redis-server (+ versitygw, scenario 10); writes BENCHMARKS.md (~4-6 min)
	@scripts/ensure-redis
	$(GO) run ./bench -out BENCHMARKS.md
