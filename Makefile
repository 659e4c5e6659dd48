# Membrane: build, verify, test and demo. Run as root: the local cluster and
# the datapath need network namespaces, cgroups and eBPF.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# The binaries of cmd/, built into bin/.
COMMANDS := $(notdir $(wildcard cmd/*))
GO_TEST_FLAGS ?=
E2E_TIMEOUT ?= 60m

include e2e/tools/tools.mk

export MEMBRANE_CACHE
export MEMBRANE_BIN_DIR := $(BIN)

.PHONY: all build generate verify test unit e2e demo demo-down bench clean

all: build

## build: all binaries into bin/, and their pod images into bin/images (see e2e/images/own-images.sh)
build:
	@mkdir -p $(BIN)
	# Static: they run in any image, and membrane-cni on nodes whose plugins
	# run without the node's libc (the local cluster's empty plugin root).
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))
	@bash e2e/images/own-images.sh $(BIN) $(TOOLS_IMAGES)/busybox/rootfs

## generate: regenerate committed generated code
generate:
	$(GO) generate ./...

## verify: generated code is current, gofmt and go vet are clean
verify: generate
	@git diff --exit-code --stat -- . || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...

# The packages test and unit run.
TEST_PACKAGES ?= ./...
# go test through e2e/testreport: go test's usual output, then one line
# naming the skipped tests with their reasons; go test's exit status.
GO_TEST = $(GO) build -o $(BIN)/testreport ./e2e/testreport && $(BIN)/testreport -go $(GO) --

## test: the whole suite (unit + end-to-end on a local cluster); needs root
test: tools build
	$(GO_TEST) -count=1 -timeout $(E2E_TIMEOUT) $(GO_TEST_FLAGS) $(TEST_PACKAGES)

## unit: tests that need no local cluster
unit:
	$(GO_TEST) -count=1 -short $(GO_TEST_FLAGS) $(TEST_PACKAGES)

## e2e: only the end-to-end tests on a local cluster
e2e: tools build
	$(GO_TEST) -count=1 -timeout $(E2E_TIMEOUT) -v $(GO_TEST_FLAGS) ./e2e/

## demo: a local cluster with the demo workload (see README.md)
demo: tools build
	bash e2e/demo/demo.sh

## demo-down: remove the demo cluster
demo-down: build
	$(BIN)/membrane dev down --name demo

# The benchmarks bench runs (go test -bench) and their packages, e.g.
# make bench BENCH='^BenchmarkFQDNProxy$$' BENCH_PACKAGES=./e2e/bench/
BENCH ?= .
BENCH_PACKAGES ?= ./...
# Each benchmark appends its headline figures here (e2e/bench/summary);
# go test's output is kept beside it, for the failed benchmarks' names.
BENCH_SUMMARY := $(BIN)/bench-summary.jsonl
BENCH_LOG := $(BIN)/bench.log

## bench: benchmarks, printing ratios against their peers measured in the same run, then one summary table
bench: tools build
	@rm -f $(BENCH_SUMMARY) $(BENCH_LOG)
	$(GO) build -o $(BIN)/benchsummary ./e2e/benchsummary
	set -o pipefail; status=0; \
	MEMBRANE_BENCH_SUMMARY=$(BENCH_SUMMARY) $(GO) test -count=1 -p 1 -run '^$$' -bench '$(BENCH)' -benchtime 1x \
		-timeout $(E2E_TIMEOUT) $(GO_TEST_FLAGS) $(BENCH_PACKAGES) 2>&1 | tee $(BENCH_LOG) || status=$$?; \
	$(BIN)/benchsummary -gotest $(BENCH_LOG) $(BENCH_SUMMARY) || { [ $$status -ne 0 ] || status=1; }; \
	exit $$status

## clean: remove build output (the tool cache stays; see e2e/tools/README.md)
clean:
	rm -rf $(BIN)
