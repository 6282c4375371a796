# Cairn's build and test entry points. `make test` is what CI runs.
GO ?= go
GOFLAGS ?=
PKGS := ./...

.PHONY: all build test vet fmt-check tidy-check deps bench bench-e2e clean

all: build

build:
	$(GO) build -o bin/cairn ./cmd/cairn

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
# lacks a tool fail instead of skipping.
test: deps fmt-check tidy-check vet
	CAIRN_CI=1 $(GO) test -race -timeout 12m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./media/volume ./fileindex

bench-e2e: build
	./bench/e2e.sh

clean:
	rm -rf bin
