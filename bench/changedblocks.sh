#!/usr/bin/env bash
# What an incremental stores for a disk image with holes and for a command
# source's dump that changed a little, this checkout against a baseline
# revision, side by side in one run: the integration tests
# TestSparseIncrementalSendsChangedBlocks (a 1 GiB image with 100 MiB of
# data; 2 MiB and 4 KiB changed in place, 1 MiB written into a hole) and
# TestCommandSourceSendsChangedBlocks (a 24 MiB dump; a row changed, 64
# KiB appended), run with each build's cairn binary (CAIRN_TEST_BINARY),
# RUNS times in alternating order. It prints the stored bytes each test
# logs. The baseline fails the tests' bounds (it stores the image's data
# and the dump whole); its figures are what it stored.
#
#   nice bench/changedblocks.sh
#   BASELINE=cc36482 RUNS=2 nice bench/changedblocks.sh
#
# See bench/README.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench-changedblocks}
RUNS=${RUNS:-1}
BASELINE=${BASELINE:-main}

log() { echo "changedblocks: $*" >&2; }

mkdir -p "$WORK"
REV=$(cd "$REPO" && git rev-parse --short HEAD)
BASE=$(cd "$REPO" && git rev-parse --short "$BASELINE")
log "building cairn $REV and $BASE"
(cd "$REPO" && go build -o "$WORK/cairn-$REV" ./cmd/cairn)
rm -rf "$WORK/src-$BASE"
(cd "$REPO" && git worktree add --detach "$WORK/src-$BASE" "$BASE" >/dev/null 2>&1)
(cd "$WORK/src-$BASE" && go build -o "$WORK/cairn-$BASE" ./cmd/cairn)
(cd "$REPO" && git worktree remove --force "$WORK/src-$BASE")

run() { # label binary
	CAIRN_TEST_BINARY=$2 go test -C "$REPO" ./integration -count=1 -v \
		-run 'TestSparseIncrementalSendsChangedBlocks|TestCommandSourceSendsChangedBlocks' 2>&1 |
		grep -E 'the incremental after|stored' | grep -E '1 GiB image|24 MiB dump' |
		sed -e "s/^ *[a-z_]*\.go:[0-9]*: /$1: /" || true
}
for i in $(seq 1 "$RUNS"); do
	if [ $((i % 2)) = 1 ]; then
		run "$REV" "$WORK/cairn-$REV"
		run "$BASE (baseline)" "$WORK/cairn-$BASE"
	else
		run "$BASE (baseline)" "$WORK/cairn-$BASE"
		run "$REV" "$WORK/cairn-$REV"
	fi
done
