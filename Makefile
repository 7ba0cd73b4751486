# Tools are pinned: protoc-gen-go and protoc-gen-go-grpc as tool directives
# in go.mod; buf, protoc-gen-es, esbuild and TypeScript through
# package-lock.json (one npm ci for the root and the web/ workspace);
# staticcheck by version below.
BUF := node_modules/.bin/buf
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GO_TEST_FLAGS ?=
FUZZTIME ?= 60s
# A count, not a time: the same work on any machine, a few seconds each.
FUZZTIME_SHORT ?= 2000x

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: run
run: ## Run the bridge with the built-in demo backend on 127.0.0.1:8080
	go run ./cmd/grpcws --demo

.PHONY: test
test: tools ## Run every test: Go with -race (Chromium tests included), the TS client in Node and as a packed npm package, benchmarks once, fuzz briefly
	go test -race -count=1 $(GO_TEST_FLAGS) ./...
	$(MAKE) test-web
	$(MAKE) test-pack
	go test -run='^$$' -bench=. -benchtime=1x ./...
	$(MAKE) fuzz-short
	$(MAKE) soak-short

# The Chromium end-to-end tests are Go tests (web/browser_test.go), run by
# `go test ./...` above; they need /usr/bin/chromium, which .ci/run installs.
.PHONY: test-web
test-web: tools ## Run the TypeScript client's tests in Node, against a real bridge
	go build -o bin/grpcws-testserver ./web/internal/testserver
	cd web && GRPCWS_TESTSERVER=../bin/grpcws-testserver npm test --silent

# As a new user would: npm pack web/, install the tarball in an empty
# project with the pinned connect-es, protobuf-es, ws and TypeScript, buf
# generate the echo service there, type-check, and run a unary and a bidi
# call against grpcws --demo. Under 10 s once npm's cache is warm.
.PHONY: test-pack
test-pack: tools ## Install the packed TS client in an empty project and call grpcws --demo with it
	node web/scripts/pack-test.mjs

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 60s: make fuzz FUZZTIME=10m)
	@$(call fuzz-each,$(FUZZTIME))

.PHONY: fuzz-short
fuzz-short: ## Run every fuzz target for 2000 inputs each (part of make test)
	@$(call fuzz-each,$(FUZZTIME_SHORT))

# fuzz-each runs every `func Fuzz...` in the module's *_test.go files for $(1).
define fuzz-each
set -e; for file in $$(grep -rl --include='*_test.go' --exclude-dir=node_modules '^func Fuzz' .); do \
	dir=$$(dirname $$file); \
	for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
		echo "fuzz $$dir $$name ($(1))"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(1) $$dir; \
	done; \
done
endef

.PHONY: bench
bench: build ## Compare the bridge (v1 and grpcws.mux.v1) with direct gRPC: the short run, about 2 minutes
	go build -o bin/grpcws-bench ./cmd/grpcws-bench
	bin/grpcws-bench -bridge bin/grpcws
	go test -run='^$$' -bench=. -benchmem -benchtime=20000x ./bridge

.PHONY: bench-full
bench-full: build ## The full comparison, idle 10,000 and scale 15,000 streams (several minutes)
	go build -o bin/grpcws-bench ./cmd/grpcws-bench
	bin/grpcws-bench -bridge bin/grpcws -full
	go test -run='^$$' -bench=. -benchmem -benchtime=5s ./bridge

# The soak: RPCs of every kind through the real binary while the backend is
# killed and restarted and clients come and go; it fails unless nothing was
# lost and the bridge returns to its baseline. See docs/reliability.md.
# soak-short also runs the multiplexed mode: the RPCs as streams of
# grpcws.mux.v1 on 10 sockets, with streams cancelled and sockets dropped.
.PHONY: soak
soak: build ## Soak the bridge: 10,000 streams for 10 minutes, backend kills, client churn (about 15 minutes)
	go build -o bin/grpcws-soak ./cmd/grpcws-soak
	bin/grpcws-soak -bridge bin/grpcws -streams 10000 -duration 10m -kill-every 60s

.PHONY: soak-short
soak-short: build ## The short soak (part of make test): 500 streams for 1 minute, then 500 multiplexed for 30 s, a few backend kills
	go build -o bin/grpcws-soak ./cmd/grpcws-soak
	bin/grpcws-soak -bridge bin/grpcws -streams 500 -duration 1m -kill-every 15s
	bin/grpcws-soak -bridge bin/grpcws -streams 500 -duration 30s -kill-every 10s -mux-sockets 10

.PHONY: build
build: ## Build bin/grpcws
	go build -o bin/grpcws ./cmd/grpcws

.PHONY: tools
tools: $(BUF) ## Install the pinned build tools

$(BUF): package.json package-lock.json web/package.json
	npm ci --no-audit --no-fund
	@touch $@

.PHONY: generate
generate: tools ## Regenerate gen/ and web/src/gen/ from proto/, and rebuild the demo page
	$(BUF) generate
	$(MAKE) web

.PHONY: web
web: tools ## Build the demo page into web/demo/dist, which the web package embeds
	node web/scripts/build-demo.mjs

GENERATED := gen web/src/gen web/demo/dist

.PHONY: checkgenerate
checkgenerate: generate ## Fail if gen/, web/src/gen/ or web/demo/dist/ differ from what their sources build
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "generated files are out of date: run 'make generate' and commit the result"; \
		git status --porcelain -- $(GENERATED); git --no-pager diff -- $(GENERATED) | head -50; exit 1; \
	fi

.PHONY: lint
lint: tools ## go vet, staticcheck, buf lint, buf format, tsc (strict)
	go vet ./...
	$(STATICCHECK) ./...
	$(BUF) lint
	$(BUF) format -d --exit-code
	cd web && ../node_modules/.bin/tsc -p tsconfig.json --noEmit
