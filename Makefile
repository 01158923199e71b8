# nattrace — see README.md. Targets that run nattrace or its privileged tests
# need root; `make deps` installs the Debian packages they use.
SHELL    := /bin/bash
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/nattrace
FUZZTIME ?= 10s
BENCHTIME ?= 3x
export CGO_ENABLED := 0
export PATH := $(PATH):/usr/local/go/bin

.PHONY: help build demo test test-kernels fuzz bench lint clean deps generate check-generate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build the static binary bin/nattrace (version from git)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nattrace

deps: ## check (and on Debian, as root, install) the system packages nattrace uses
	@hack/deps.sh

demo: deps build ## build, create a lab in network namespaces, trace a port forward, clean up (root)
	./$(BIN) demo

test: ## run all tests; privileged ones need root (NATTRACE_REQUIRE_PRIVILEGED=1 makes them fail instead of skip)
	@hack/deps.sh test
	$(GO) test -count=1 -timeout 20m ./...

# The integration scenarios run again on the second kernel (test/kernels);
# the report's browser test does not depend on the kernel and is left out.
KERNEL_TESTS ?= .
KERNEL_SKIP ?= TestReportHTML

test-kernels: build ## run the privileged tests again on Debian's 6.1 kernel under qemu (test/kernels; root)
	@test/kernels/prepare.sh >/dev/null
	$(GO) build -o bin/vmexec ./test/kernels/vmexec
	NATTRACE_TEST_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m -exec $(CURDIR)/bin/vmexec -run '$(KERNEL_TESTS)' -skip '$(KERNEL_SKIP)' ./test/kernels/ ./bpf/ ./cmd/nattrace/

fuzz: ## run every fuzz target for FUZZTIME (default 10s)
	@GO=$(GO) FUZZTIME=$(FUZZTIME) hack/fuzz.sh

bench: ## run the benchmarks (report rendering and opening in Chromium; see BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./report/

generate: ## regenerate the BPF objects with bpf2go (needs clang, llvm, libbpf-dev)
	$(GO) generate ./bpf

check-generate: generate ## fail when the committed bpf2go output differs from a fresh generation
	@git diff --exit-code --stat -- bpf/ || { echo "bpf2go output is stale: run 'make generate' and commit"; exit 1; }

lint: ## go vet and gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean: ## remove build output
	rm -rf bin
