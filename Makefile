# tidemark's front door: `make` lists the targets.

GO ?= go
# staticcheck 2026.2.2; the proxy serves staticcheck by module version, not by
# its year-based release name.
STATICCHECK_VERSION ?= v0.8.2

.DEFAULT_GOAL := help
.PHONY: help build test sim demo bench lint migrate tidy

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/tidemark and bin/demo-upstream
	$(GO) build -trimpath -o bin/ ./cmd/tidemark ./cmd/demo-upstream

test: ## run the test suite against real Postgres and Redis (what CI runs)
	$(GO) test -race -count=1 -timeout 15m ./...

# make sim: seeds 1..SEEDS (from SIM_FROM) over SIM_LANES lanes; SEED=N replays one seed; SIM_LOG=1 shows the fleet's logs.
SEEDS ?= 2000
SIM_FROM ?= 1
SIM_LANES ?= 3
PARTITION_SEEDS ?= 200
sim: ## the correctness simulator over many seeds (SEEDS=2000, PARTITION_SEEDS=200), prints its tables; SEED=N replays one
	$(GO) test -count=1 -timeout 0 -v -run '^TestSim$$' ./internal/sim -args -sim.seeds=$(SEEDS) -sim.from=$(SIM_FROM) \
		-sim.lanes=$(SIM_LANES) $(if $(SEED),-sim.seed=$(SEED)) $(if $(SIM_LOG),-sim.log)
	$(if $(SEED),,$(GO) test -count=1 -timeout 0 -v -run '^TestSimPartitions$$' ./internal/sim -args \
		-sim.partition_seeds=$(PARTITION_SEEDS) -sim.lanes=$(SIM_LANES) $(if $(SIM_LOG),-sim.log))

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
