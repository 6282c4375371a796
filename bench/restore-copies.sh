#!/usr/bin/env bash
# Issue 11's benchmark of the copies a restored byte takes on the storage
# node: BenchmarkRestoreFromDiskPool (one large file, random and log-like,
# from a disk pool through the data port) from this checkout against
# BASELINE, an older revision of this repository taken out of git (git
# archive) and built in a temporary tree as bench/e2e.sh does: the two test
# binaries run in turn, round after round, in one run; it prints each run
# and then the min-max range of each column per build: MB/s (wall), the
# process's CPU time per MiB restored (the client's half, TLS and frames, is
# the same in both builds), and allocations.
#
# The default baseline is the restore path before its copies were cut: the
# last revision that still had it, behind the build tag cairn_copybaseline
# (the revision before the one that removed the tag), built with that tag.
# A revision of your own is built as it is (BASELINE_TAGS to add tags); it
# needs the benchmark, which came with f9154d3.
#
#   bench/restore-copies.sh                        # 5 rounds of 3 restores
#   BASELINE=HEAD~3 bench/restore-copies.sh
#   RUNS=10 BENCHTIME=5x bench/restore-copies.sh
#   CAIRN_BENCH_RESTORE_MIB=256 bench/restore-copies.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BENCHTIME=${BENCHTIME:-3x}
if [ -z "${BASELINE:-}" ]; then
	removed=$(git log -1 --format=%H --diff-filter=D -- storagenode/copies_baseline.go)
	[ -n "$removed" ] || { echo "restore-copies: no revision removed the tag cairn_copybaseline here; set BASELINE" >&2; exit 1; }
	BASELINE=$removed^
	BASELINE_TAGS=${BASELINE_TAGS-cairn_copybaseline}
fi
BASELINE_TAGS=${BASELINE_TAGS:-}
rev=$(git rev-parse --short "$BASELINE") || { echo "restore-copies: BASELINE=$BASELINE is not a revision" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git archive "$rev" | tar -x -C "$work/src"
grep -qs '^func BenchmarkRestoreFromDiskPool(' "$work/src"/storagenode/*_test.go ||
	{ echo "restore-copies: $rev has no BenchmarkRestoreFromDiskPool (it came with f9154d3)" >&2; exit 1; }
echo "== before: $rev${BASELINE_TAGS:+ -tags $BASELINE_TAGS}; after: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +dirty)"
(cd "$work/src" && go test -c -tags "$BASELINE_TAGS" -o "$work/before.test" ./storagenode)
go test -c -o "$work/after.test" ./storagenode
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
