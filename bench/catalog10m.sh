#!/bin/sh
# The catalog at scale, before and after in one run: BenchmarkCatalogScale
# (catalog/scale_bench_test.go) at full size (12.45 million file versions,
# CAIRN_CATALOG_SCALE=full) in this checkout and in BASELINE (default
# 6651f1c, the revision before the catalog could seek), taken from git into
# a temporary directory with the same benchmark and the baseline's way of
# reading (bench/catalog10m/baseline_ops_test.go.txt). Each side builds its
# own catalog in WORK (default /var/tmp/cairn-catalog10m, about 750 MB per
# side at a time) and removes it after.
#
#   bench/catalog10m.sh                      # full size, -benchtime 5x
#   BENCHTIME=20x bench/catalog10m.sh        # the baseline's plans alone then take 25 minutes
#   SCALE=small BENCHTIME=20x bench/catalog10m.sh   # 30,000 versions, a minute
#   SCALE=client bench/catalog10m.sh         # one client of the full size
#   BASELINE=none bench/catalog10m.sh        # this checkout alone, about 4 minutes
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
BASELINE=${BASELINE:-6651f1c}
SCALE=${SCALE:-full}
BENCHTIME=${BENCHTIME:-5x}
WORK=${WORK:-/var/tmp/cairn-catalog10m}
GO=${GO:-go}
mkdir -p "$WORK"
base="$WORK/baseline-src"
rm -rf "$base"
mkdir -p "$base"
trap 'rm -rf "$base"' EXIT
if [ "$BASELINE" != none ]; then
	git -C "$here" archive "$BASELINE" | tar -x -C "$base"
	cp "$here/catalog/scale_bench_test.go" "$base/catalog/"
	cp "$here/bench/catalog10m/baseline_ops_test.go.txt" "$base/catalog/scale_ops_test.go"
fi

run() { # name dir
	echo "== $1"
	(cd "$2" && TMPDIR="$WORK" CAIRN_CATALOG_SCALE=$SCALE nice $GO test ./catalog -run '^$' \
		-bench '^BenchmarkCatalogScale$' -benchtime "$BENCHTIME" -timeout 3h -v 2>&1 |
		grep -E '^(Benchmark|    scale_bench_test|ok|FAIL|---)')
}
uptime
if [ "$BASELINE" != none ]; then
	run "baseline $BASELINE" "$base"
	uptime
fi
run "this checkout $(git -C "$here" rev-parse --short HEAD)" "$here"
uptime
