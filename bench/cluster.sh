#!/usr/bin/env bash
# Issue 4's benchmark, in one run: catalog write throughput through Raft on
# one and three voters (index entries/s and job/volume commands/s), then the
# time a 3-voter group of cairn server processes takes to elect a new leader
# after SIGKILL of the leader.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo "$(go env GOPATH)/bin/nats-server")}
[ -x "$NATS_SERVER" ] || { echo "nats-server missing: go install github.com/nats-io/nats-server/v2@v2.15.2" >&2; exit 1; }
go build -o bin/cairn ./cmd/cairn
echo "== catalog writes through Raft, 1 and 3 voters (fsync on, loopback)"
go test -run '^$' -bench 'CatalogWrites' -benchtime 300x -count "${COUNT:-3}" ./server/cluster | grep -E '^Benchmark'
echo "== time to a new leader after SIGKILL of the leader"
go run ./bench/failover -cairn bin/cairn -nats-server "$NATS_SERVER" -rounds "$ROUNDS"
