# tidemark's front door: `make` lists the targets.

GO ?= go
# staticcheck 2026.2.2; the proxy serves staticcheck by module version, not by
# its year-based release name.
STATICCHECK_VERSION ?= v0.8.2

.DEFAULT_GOAL := help
.PHONY: help build test demo bench lint migrate tidy

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/tidemark and bin/demo-upstream
	$(GO) build -trimpath -o bin/ ./cmd/tidemark ./cmd/demo-upstream

test: ## run the test suite against real Postgres and Redis (what CI runs)
	$(GO) test -race -count=1 -timeout 15m ./...

bench: ## benchmark against same-run baselines (BENCH_FLAGS=--quick for a smoke run); writes bench/results.md
	$(GO) build -trimpath -o bin/ ./cmd/tidemark-bench
	bin/tidemark-bench $(BENCH_FLAGS)

demo: ## run the whole system against the demo upstream and print where to look
	bash scripts/demo.sh

lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt -l reports:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

migrate: build ## apply migrations to TIDEMARK_DATABASE_URL, creating the database if missing
	bin/tidemark migrate --create-db

tidy: ## go mod tidy
	$(GO) mod tidy
