# Tenant cleanup: build, test, demo, benchmarks. See README.md.
GO      ?= go
BIN     := bin
SERVICES := ./services/analyzer ./services/marker ./services/cleaner ./cmd/tenantctl
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo.version=$(VERSION) \
           -X github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo.commit=$(COMMIT)

.PHONY: build test lint demo bench flood clean

## build: bin/analyzer, bin/marker, bin/cleaner, bin/tenantctl (version and commit stamped: --version)
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ $(SERVICES)

## test: every test (real PostgreSQL on 127.0.0.1:5432, embedded JetStream), plus lint
test: lint
	$(GO) test -count=1 -timeout 20m ./...

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## demo: the whole pipeline on a demo fleet, on this machine
demo: build
	$(GO) run ./cmd/demo -bin $(BIN)

## bench: the performance benchmarks (long; not part of make test)
bench: build
	$(GO) run ./cmd/bench -bin $(BIN)

## flood: 100,000 hostile requests against a running marker: memory and stored bytes (docs/flood.md; not part of make test)
flood:
	$(GO) test -tags flood -count=1 -timeout 40m -run TestFlood -v ./e2e/

clean:
	rm -rf $(BIN)
