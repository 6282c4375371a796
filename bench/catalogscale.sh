#!/usr/bin/env bash
# Issue 13's benchmark of the catalog at scale: the catalog package's
# BenchmarkScaleBuild writes clients x 5 years of daily backups of a policy
# (monthly full, weekly differential, daily incremental) straight into a
# bbolt file; BenchmarkScaleReads measures what a scheduler decision, a
# backup's creation, the latest backup and a client list read of it;
# server/scheduler's BenchmarkScaleTick one scheduler tick over every client
# and one decision; BenchmarkScaleExpiry the first expiry pass (keep 14
# daily, 8 weekly, 12 monthly, 5 yearly), one more day and the next pass,
# and the file's size before, after and compacted. The file is deleted after
# each run.
#
# Side by side in one run, round after round: BASELINE (default: the
# revision before the catalog's format 6, taken out of git and built in a
# temporary tree as bench/restore-copies.sh does, with these benchmarks
# copied in and its own client list and expiry pass) and this checkout, at
# CLIENTS clients, where the baseline finishes; then this checkout alone at
# FULL_CLIENTS (the issue's 10,000: 18 million backups, a file of some
# 17 GB in WORK, and most of an hour on a 2-core machine). It prints every
# run, then the min-max range of each figure per build and size.
#
#   bench/catalogscale.sh                          # 2 rounds at 1,000 clients, then 10,000
#   FULL_CLIENTS=0 ROUNDS=3 bench/catalogscale.sh  # side by side only
#   CLIENTS=0 bench/catalogscale.sh                # 10,000 clients only
#   BASELINE=HEAD~3 WORK=/srv/tmp bench/catalogscale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-1000}
FULL_CLIENTS=${FULL_CLIENTS:-10000}
DAYS=${DAYS:-1826}
ROUNDS=${ROUNDS:-2}
WORK=${WORK:-/var/tmp}
if [ -z "${BASELINE:-}" ]; then
	six=$(git log --format=%H -S'const storeFormat = 6' -- catalog/store.go | tail -1)
	[ -n "$six" ] || { echo "catalogscale: no revision here made catalog format 6; set BASELINE" >&2; exit 1; }
	BASELINE=$six^
fi
rev=$(git rev-parse --short "$BASELINE") || { echo "catalogscale: BASELINE=$BASELINE is not a revision" >&2; exit 1; }
work=$(mktemp -d "$WORK/cairn-catalogscale-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git archive "$rev" | tar -x -C "$work/src"
# The benchmarks, and the baseline's own client list and expiry pass.
rm -f "$work/src/catalog/expiry_bench_test.go"
cp catalog/history_bench_test.go "$work/src/catalog/"
cp server/scheduler/scale_bench_test.go server/scheduler/harness_test.go server/scheduler/bench_test.go "$work/src/server/scheduler/"
cp -r internal/scalebench "$work/src/internal/"
cat >"$work/src/catalog/scale_version_test.go" <<'EOF'
package catalog

import "time"

// What server.clientList and server.expire did before format 6.

type BackupSummary struct {
	Complete int
	Latest   time.Time
}

func clientSummary(s *Store, client string) (BackupSummary, error) {
	bs, err := s.Backups(BackupFilter{Client: client, States: []BackupState{BackupComplete}})
	if err != nil || len(bs) == 0 {
		return BackupSummary{}, err
	}
	return BackupSummary{Complete: len(bs), Latest: bs[0].StartTime}, nil
}

func expiryPass(s *Store, rf RetentionFor, apply func(*BackupsExpire)) error {
	plan, err := s.PlanExpiry(rf, true)
	if err != nil {
		return err
	}
	for _, e := range plan.Batches(2000, "expiry pass") {
		apply(e)
	}
	return nil
}
EOF
echo "== before: $rev; after: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +dirty); $DAYS days; work in $work"
(cd "$work/src" && go test -c -o "$work/before.catalog.test" ./catalog && go test -c -o "$work/before.sched.test" ./server/scheduler)
go test -c -o "$work/after.catalog.test" ./catalog
go test -c -o "$work/after.sched.test" ./server/scheduler

# run BUILD CLIENTS: build, measure and delete one catalog.
run() {
	local build=$1 clients=$2 dir="$work/catalog-$1-$2"
	export CAIRN_SCALE_DIR=$dir CAIRN_SCALE_CLIENTS=$clients CAIRN_SCALE_DAYS=$DAYS
	for b in ScaleBuild ScaleReads sched:ScaleTick ScaleExpiry; do
		local bin="$work/$build.catalog.test"
		case $b in sched:*) bin="$work/$build.sched.test" b=${b#sched:} ;; esac
		nice "$bin" -test.run '^$' -test.bench "^Benchmark$b\$" -test.benchtime 1x -test.timeout 6h |
			awk -v p="$build $clients" '/^Benchmark/ || /_test.go:/ { print p, $0 }' | tee -a "$work/all"
	done
	rm -rf "$dir"
}
if [ "$CLIENTS" -gt 0 ]; then
	for i in $(seq "$ROUNDS"); do
		for build in before after; do
			run "$build" "$CLIENTS"
		done
	done
fi
if [ "$FULL_CLIENTS" -gt 0 ]; then
	run after "$FULL_CLIENTS"
fi
echo "== ranges (min-max over the runs of each build and size)"
awk '
$3 ~ /^Benchmark/ {
  for (i = 7; i < NF; i += 2) { key = $1 " " $2 " " $(i + 1); v = $i
    if (!(key in lo)) order[++k] = key
    if (!(key in lo) || v < lo[key]) lo[key] = v
    if (!(key in hi) || v > hi[key]) hi[key] = v } }
END { for (j = 1; j <= k; j++) printf "%-52s %14.1f - %-14.1f\n", order[j], lo[order[j]], hi[order[j]] }
' "$work/all"
