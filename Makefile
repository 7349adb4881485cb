# The commands the README names. `make dev` and `make test` install missing
# system packages first (scripts/install-deps.sh).
SHELL := /bin/bash
CARGO ?= cargo
DEV_ARGS ?=

.PHONY: help deps build dev test bench chaos mutants fmt lint doc check clean
DURATION ?= 300s
SEED ?=

help:
	@echo "make dev    start a local three-region cluster (coordinator on 127.0.0.1:7400); Ctrl-C stops it"
	@echo "make test   run the whole test suite (real etcd processes)"
	@echo "make bench  globallock side by side with etcd's lock and Redlock (release build; BENCH_ARGS=\"--duration 5s --cells hot\")"
	@echo "make chaos  seeded chaos soak: make chaos DURATION=10m [SEED=n] (prints its seed; replays with it)"
	@echo "make mutants  mutation testing of the protocol core (cargo-mutants); fails on a surviving mutant"
	@echo "make check  fmt + clippy + mutants + test, as CI runs them"

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

dev: build
	target/debug/devcluster $(DEV_ARGS)

# The process-level fault tests run the real binaries, so they are built first.
# cargo-nextest runs every test in its own process, two at a time (each starts
# its own etcd processes; the machines have two cores; .config/nextest.toml), and
# reports slow tests. Doc examples are compiled first (nextest does not run them),
# so the output ends with nextest's own summary. Without nextest: cargo test.
test: deps
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) test --workspace --doc && \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  echo "cargo-nextest not found (cargo install cargo-nextest --locked); using cargo test"; \
	  $(CARGO) test --workspace --no-fail-fast -- --test-threads=2; \
	fi

# globallock side by side with etcd's own lock (1 and 3 members, and stretched
# over an emulated WAN) and Redlock on 3 redis-servers, every peer started by the
# harness on free ports and stopped on exit (docs/benchmark.md). Prints a table,
# writes target/bench/results.json and target/bench/latency.svg. Release build:
# the figures are meant to be compared. BENCH_ARGS passes flags (--duration,
# --cells, --systems, --smoke).
BENCH_ARGS ?=
bench: deps
	$(CARGO) build --release --workspace --bins
	target/release/bench $(BENCH_ARGS)

# Random operations under random faults against a cluster of real processes;
# exits 1 and prints the seed to replay on any violation.
chaos: deps
	$(CARGO) build --workspace --bins
	$(CARGO) run -p globallock-tests --bin chaos -- --duration $(DURATION) $(if $(SEED),--seed $(SEED),)

# Mutation testing of the protocol core: every mutant must be caught by a test,
# or be listed as equivalent, with the reason, in .cargo/mutants.toml. About
# three minutes on two cores, so CI runs all of it.
MUTANTS_VERSION := 27.1.0
mutants: deps
	@$(CARGO) mutants --version 2>/dev/null | grep -q "$(MUTANTS_VERSION)" || \
	  $(CARGO) install cargo-mutants --locked --version $(MUTANTS_VERSION)
	$(CARGO) mutants -p globallock-protocol --timeout 60

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc: deps
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

check: fmt lint mutants test

clean:
	$(CARGO) clean
	rm -rf .dev-cluster
