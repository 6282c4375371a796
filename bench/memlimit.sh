#!/usr/bin/env bash
# cairn dev's soft memory limit against its collections: each round backs
# up the e2e tree and restores it in one `cairn dev`, page cache dropped
# before each step, as bench/e2e.sh does, once at each limit of LIMITS
# (GOMEMLIMIT, which wins over the role's default), in rotating order; it
# prints the restore's seconds, CPU seconds, collections (gctrace) and the
# dev process's peak resident set. With BASELINE (a revision), each limit
# runs with that build too, in the same rotation. See bench/README.md.
#
#   sudo bench/memlimit.sh                          # 72MiB against 80MiB, 4 rounds
#   sudo LIMITS="72MiB 80MiB 88MiB" ROUNDS=2 bench/memlimit.sh
#   sudo BASELINE=c4923fa LIMITS=80MiB ROUNDS=3 bench/memlimit.sh
#
# Needs root (drop_caches, loop devices) and mkfs.ext4.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
ROUNDS=${ROUNDS:-4}
LIMITS=${LIMITS:-72MiB 80MiB}
BASELINE=${BASELINE:-}
TREE_SIZE=${TREE_SIZE:-1073741824}
SMALL_FILES=${SMALL_FILES:-50000}
ONE_FILE=0
CLIENT=bench

die() { echo "memlimit: $*" >&2; exit 1; }
log() { echo "memlimit: $*" >&2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS is a number of rounds, not $ROUNDS"
[ "$(id -u)" -eq 0 ] || die "run as root: each step starts from a dropped page cache and uses loop-mounted ext4s"
command -v mkfs.ext4 >/dev/null || die "needs mkfs.ext4 (Debian package e2fsprogs)"

mkdir -p "$WORK/bin"
log "building cairn from $REPO"
(cd "$REPO" && go build -o "$WORK/bin/cairn" ./cmd/cairn)
declare -A BIN=([cairn]=$WORK/bin/cairn)
BUILDS=(cairn)
if [ -n "$BASELINE" ]; then
	build_baseline
	BIN[baseline]=$BASELINE_BIN
	BUILDS+=(baseline)
fi
make_tree

RUN=$WORK/memlimit
cleanup() {
	stop_dev
	local m
	for m in "$RUN/tree" "$RUN/restore"; do
		if mountpoint -q "$m" 2>/dev/null; then umount "$m" || echo "memlimit: could not unmount $m: umount it by hand" >&2; fi
	done
}
trap cleanup EXIT

gcs() { grep -c '^gc ' "$RUN/dev.log" || true; }

# one LIMIT ROUND BUILD: a backup and a restore in a new cairn dev of
# BUILD at LIMIT.
one() {
	local bin=${BIN[$3]}
	release_target "$RUN/tree"
	release_target "$RUN/restore"
	rm -rf "$RUN/data" "$RUN/dev.log"
	mkdir -p "$RUN"
	tree_fs "$RUN/tree" 2
	cp -a "$TREE/." "$RUN/tree"
	tree_fs "$RUN/restore" 3
	GOMEMLIMIT=$1 GODEBUG=gctrace=1 start_dev "$RUN" "$bin"
	drop_caches
	"$bin" backup --client "$CLIENT" --path "$RUN/tree" --level full --wait --json >"$RUN/backup.json" ||
		die "the backup of $3 at $1 failed: $(cat "$RUN/backup.json")"
	drop_caches
	reset_hwm "$DEV_PID"
	local g0 c0 t0 t1 c1 g1
	g0=$(gcs)
	c0=$(cpu_secs "$DEV_PID")
	t0=$(now)
	"$bin" restore --client "$CLIENT" --to "$RUN/restore" --wait --json >"$RUN/restore.json" ||
		die "the restore of $3 at $1 failed: $(cat "$RUN/restore.json")"
	t1=$(now)
	c1=$(cpu_secs "$DEV_PID")
	g1=$(gcs)
	printf '%-6s %-9s %-8s %8.2f %8.2f %6d %6s\n' "$2" "$3" "$1" "$(echo "$t0 $t1" | awk '{print $2-$1}')" \
		"$(echo "$c0 $c1" | awk '{print $2-$1}')" "$((g1 - g0))" "$(hwm_mb "$DEV_PID")"
	stop_dev
}

read -ra limits <<<"$LIMITS"
runs=()
for b in "${BUILDS[@]}"; do
	for l in "${limits[@]}"; do runs+=("$l $b"); done
done
echo "restores of $TREE right after its backup, in one cairn dev; builds: ${BUILDS[*]}${BASELINE:+ (baseline $BASELINE_REV)}; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-9s %-8s %8s %8s %6s %6s\n' round build limit "s" "CPU s" GCs "RSS MB"
for n in $(seq "$ROUNDS"); do
	# Rotating order: no build or limit always goes first.
	for i in "${!runs[@]}"; do
		read -r l b <<<"${runs[$(((i + n - 1) % ${#runs[@]}))]}"
		one "$l" "$n" "$b"
	done
done
