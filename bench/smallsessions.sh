#!/usr/bin/env bash
# What 1,000 hourly incrementals of a quiet client (one changed 13-byte
# file each) take on a disk volume: this checkout against a BASELINE
# revision, side by side. Each side runs bench/smallsessions (built in its
# own tree: the baseline gets this checkout's copy of the program, which
# uses only API both have) on a fresh pool of the default block size.
#
#   bench/smallsessions.sh                  # against 8d67438 (before format 2)
#   BASELINE=<rev> N=1000 bench/smallsessions.sh
#
# No root needed. See bench/README.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench-smallsessions}
BASELINE=${BASELINE:-8d67438}
N=${N:-1000}
BLOCK_SIZE=${BLOCK_SIZE:-262144}

die() { echo "smallsessions: $*" >&2; exit 1; }

BASELINE_REV=$(cd "$REPO" && git rev-parse --short "$BASELINE") || die "BASELINE=$BASELINE is not a revision of $REPO"
mkdir -p "$WORK/bin"
src=$WORK/src-$BASELINE_REV
rm -rf "$src" && mkdir -p "$src"
(cd "$REPO" && git archive "$BASELINE_REV") | tar -x -C "$src"
mkdir -p "$src/bench/smallsessions"
cp "$REPO/bench/smallsessions/main.go" "$src/bench/smallsessions/main.go"
(cd "$src" && go build -o "$WORK/bin/smallsessions-$BASELINE_REV" ./bench/smallsessions)
rm -rf "$src"
(cd "$REPO" && go build -o "$WORK/bin/smallsessions-checkout" ./bench/smallsessions)

run() { # name binary
	local d=$WORK/pool-$1
	rm -rf "$d" && mkdir -p "$d"
	"$2" -dir "$d" -n "$N" -block-size "$BLOCK_SIZE"
	rm -rf "$d"
}
before=$(run baseline "$WORK/bin/smallsessions-$BASELINE_REV")
after=$(run checkout "$WORK/bin/smallsessions-checkout")

field() { echo "$1" | sed -E "s/.*\"$2\":([0-9.]+).*/\1/"; }
printf '%d hourly incrementals of one 13-byte file, block size %d\n' "$N" "$BLOCK_SIZE"
printf '%-22s %8s %16s %16s %14s %9s\n' revision format "file bytes" "allocated bytes" "per session" seconds
for side in "baseline $BASELINE_REV:$before" "checkout $(cd "$REPO" && git rev-parse --short HEAD):$after"; do
	name=${side%%:*}
	j=${side#*:}
	printf '%-22s %8s %16s %16s %14s %9.2f\n' "$name" "$(field "$j" format_version)" "$(field "$j" file_bytes)" \
		"$(field "$j" allocated_bytes)" "$(field "$j" bytes_per_session)" "$(field "$j" seconds)"
done
