#!/usr/bin/env bash
# Issue 11's benchmark of the copies a restored byte takes on the storage
# node: BenchmarkRestoreFromDiskPool (one large file, random and log-like,
# from a disk pool through the data port) built as it is and with the tag
# cairn_copybaseline (the path as it was before the copies were cut), the
# two test binaries run in turn, round after round, in one run; it prints
# each run and then the min-max range of each column per build: MB/s
# (wall), the process's CPU time per MiB restored (the client's half, TLS
# and frames, is the same in both builds), and allocations.
#
#   bench/restore-copies.sh                        # 5 rounds of 3 restores
#   RUNS=10 BENCHTIME=5x bench/restore-copies.sh
#   CAIRN_BENCH_RESTORE_MIB=256 bench/restore-copies.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BENCHTIME=${BENCHTIME:-3x}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go test -c -o "$work/after.test" ./storagenode
go test -c -tags cairn_copybaseline -o "$work/before.test" ./storagenode
for i in $(seq "$RUNS"); do
	for build in before after; do
		"$work/$build.test" -test.run '^$' -test.bench '^BenchmarkRestoreFromDiskPool$' \
			-test.benchtime "$BENCHTIME" -test.benchmem |
			awk -v b="$build" '/^Benchmark/ { print b, $0 }' | tee -a "$work/all"
	done
done
echo "== ranges over $RUNS rounds (min-max)"
awk '
function lo_hi(name, key, v) {
  if (!((name, key) in lo) || v < lo[name, key]) lo[name, key] = v
  if (!((name, key) in hi) || v > hi[name, key]) hi[name, key] = v }
{ key = $1 " " $2; if (!(key in seen)) { seen[key] = 1; order[++k] = key }
  for (i = 4; i < NF; i += 2) lo_hi($(i + 1), key, $i) }
END { for (j = 1; j <= k; j++) { key = order[j]
  printf "%-48s %6.1f-%-6.1f MB/s  %5.2f-%-5.2f ms CPU/MiB  %4.1f-%-4.1f MB/op  %d-%d allocs/op\n", key,
    lo["MB/s", key], hi["MB/s", key], lo["cpu-ns/MiB", key] / 1e6, hi["cpu-ns/MiB", key] / 1e6,
    lo["B/op", key] / 1e6, hi["B/op", key] / 1e6, lo["allocs/op", key], hi["allocs/op", key] } }
' "$work/all"
