# Cairn's build and test entry points. `make test` is what CI runs.
GO ?= go
GOFLAGS ?=
PKGS := ./...

.PHONY: all build deb test vet fmt-check tidy-check deps fuzz fuzz-short bench bench-e2e clean

all: build

# The version 'cairn --version' prints and the package carries, stamped at
# link time (internal/buildinfo); CAIRN_VERSION in the environment sets it.
VERSION = $(shell ./scripts/version.sh)
COMMIT = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILDINFO := github.com/cairnbackup/cairn/internal/buildinfo
BIN = bin/cairn
DIST = dist

build:
	$(GO) build -ldflags '-X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)' -o $(BIN) ./cmd/cairn

# deb builds $(BIN), the man pages and $(DIST)/cairn_VERSION_ARCH.deb
# (packaging/build-deb.sh; packaging/deb_test.go installs it).
deb:
	GO='$(GO)' BIN='$(BIN)' DIST='$(DIST)' CAIRN_VERSION='$(VERSION)' CAIRN_COMMIT='$(COMMIT)' ./packaging/build-deb.sh

# deps installs what the tests need when it is missing (Debian packages).
deps:
	./scripts/install-test-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# go.mod and go.sum say exactly what the code imports: a dependency added by
# hand, left behind or missing fails here, not on a fresh machine.
tidy-check:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit the result"; exit 1; }

# The race detector runs on every package; CAIRN_CI=1 makes a test that
# lacks a tool fail instead of skipping. Beside them every fuzz target runs
# for a few seconds past its committed corpus, one at a time on one core (84
# targets, about 7 minutes): a crash fails the build.
#
# The integration tests are the longest package by far and mostly wait on
# the processes they start (elections, kills, a scheduled minute): they run
# beside the other packages and the fuzz runs, in three processes: the
# tests of whole clusters (CLUSTER_TESTS), the longest of the others, which
# mostly wait on kills, drains and tape (LONG_TESTS), and the rest, so make
# test takes about as long as the longest third. Their output comes after
# the packages'. A new test that runs a cluster for minutes belongs in
# CLUSTER_TESTS; one that waits for half a minute or more, in LONG_TESTS.
INTEGRATION := ./integration
CLUSTER_TESTS := ^(TestClusterChaos|TestClusterStorageNodes|TestNATSClusterHelper|TestLeaderKilledDuringBackup|TestQuorumLoss|TestRecoverLostMajority|TestScheduledRunsOnceWhileLeadersAreKilled)$$
LONG_TESTS := ^(TestReadme|TestStorageNodeDrainsOnSIGTERM|TestIncrementalSendsChangedBlocksOnTape|TestStalledClientsReleaseTheDrive|TestSecuredDeployment|TestStorageNodeKilledMidSpooledTapeBackup|TestCancelJob|TestAgentRestartedMidBackup)$$
UNIT_PKGS = $(shell $(GO) list $(PKGS) | grep -v '/integration$$')
test: deps fmt-check tidy-check vet
	@clog=$$(mktemp); llog=$$(mktemp); olog=$$(mktemp); flog=$$(mktemp); \
	$(MAKE) --no-print-directory fuzz-short >"$$flog" 2>&1 & fuzz=$$!; \
	CAIRN_CI=1 $(GO) test -race -timeout 12m -run '$(CLUSTER_TESTS)' $(INTEGRATION) >"$$clog" 2>&1 & cluster=$$!; \
	CAIRN_CI=1 $(GO) test -race -timeout 12m -run '$(LONG_TESTS)' $(INTEGRATION) >"$$llog" 2>&1 & long=$$!; \
	CAIRN_CI=1 $(GO) test -race -timeout 12m -skip '$(CLUSTER_TESTS)|$(LONG_TESTS)' $(INTEGRATION) >"$$olog" 2>&1 & others=$$!; \
	CAIRN_CI=1 $(GO) test -race -timeout 12m $(UNIT_PKGS); rest=$$?; \
	wait $$fuzz; f=$$?; wait $$cluster; c=$$?; wait $$long; l=$$?; wait $$others; o=$$?; \
	echo "fuzz targets:"; cat "$$flog"; echo "integration, clusters:"; cat "$$clog"; echo "integration, the long ones:"; cat "$$llog"; echo "integration, the rest:"; cat "$$olog"; rm -f "$$clog" "$$llog" "$$olog" "$$flog"; \
	if [ $$rest -ne 0 ] || [ $$f -ne 0 ] || [ $$c -ne 0 ] || [ $$l -ne 0 ] || [ $$o -ne 0 ]; then echo "make test: FAILED (packages: exit $$rest; fuzz: exit $$f; integration clusters: exit $$c; integration long: exit $$l; integration rest: exit $$o)"; exit 1; fi

# FUZZTIME is how long each fuzz target runs: `make fuzz FUZZTIME=5m`.
FUZZTIME ?= 1m
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# fuzz-short is the pass of `make test`: about two minutes in all.
fuzz-short:
	GO=$(GO) FUZZTIME=3s FUZZMINIMIZETIME=2s ./scripts/fuzz.sh

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./media/volume ./fileindex ./schedule ./retention

bench-e2e: build
	./bench/e2e.sh

clean:
	rm -rf bin dist
