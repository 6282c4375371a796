#!/usr/bin/env bash
# Restores of the e2e tree, many, by this checkout and a baseline revision
# side by side: the quick before/after of a change to the restore path,
# without the backups, incrementals and restic of bench/e2e.sh. Each system
# backs up the tree once; then each round restores it once with each
# system, in rotating order, each restore into a new ext4 (allocated whole,
# a loop device with direct I/O) from a dropped page cache, with only that
# system's `cairn dev` running. See bench/README.md.
#
#   BASELINE=0a82d75 bench/restores.sh            # 5 rounds
#   BASELINE=HEAD ROUNDS=8 bench/restores.sh      # the noise of one build
#   PROFILE=1 BASELINE=HEAD bench/restores.sh     # a CPU profile of each restore
#   TRACE=1 BASELINE=HEAD ROUNDS=1 bench/restores.sh  # an execution trace of each
#   TARGET_SCALE=2 BASELINE=HEAD bench/restores.sh  # into smaller file systems
#   INCREMENTAL=1 BASELINE=d8c1f9c bench/restores.sh  # an incremental's point in time
#
# Needs root (drop_caches, loop devices), mkfs.ext4 and /usr/bin/time.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
ROUNDS=${ROUNDS:-5}
TREE_SIZE=${TREE_SIZE:-1073741824}
SMALL_FILES=${SMALL_FILES:-50000}
ONE_FILE=${ONE_FILE:-0}
BASELINE=${BASELINE:-}
# PROFILE=1 takes a CPU profile of `cairn dev` over PROFILE_SECS from the
# start of each restore, into $WORK/restores/SYSTEM/restore-ROUND.prof (go
# tool pprof reads it). It costs a little CPU itself: compare profiled
# rounds with profiled ones.
PROFILE=${PROFILE:-0}
PROFILE_SECS=${PROFILE_SECS:-8}
# TRACE=1 takes a Go execution trace of `cairn dev` over the same seconds,
# into $WORK/restores/SYSTEM/restore-ROUND.trace: where the restore's
# goroutines wait, and when a core has nothing to run (go tool trace, or
# its -pprof=sched, net, sync and syscall profiles). It costs more than
# the CPU profile: compare traced rounds with traced ones.
TRACE=${TRACE:-0}
# TARGET_SCALE sizes each restore's new ext4: TARGET_SCALE times the tree's
# bytes and files, and 1 GiB and 100,000 inodes more. 3 is what e2e.sh
# makes; the runs before 805411a made 2.
TARGET_SCALE=${TARGET_SCALE:-3}
# INCREMENTAL=1 restores the point in time of an incremental instead: both
# systems back up a copy of the tree (on a new ext4), bench/gentree changes
# it as bench/e2e.sh does (CHANGE of its bytes, the same seed), both back up
# the incremental, and each round restores that, a chain of two sessions.
INCREMENTAL=${INCREMENTAL:-0}
CHANGE=${CHANGE:-0.05}
CLIENT=bench

die() { echo "restores: $*" >&2; exit 1; }
log() { echo "restores: $*" >&2; }
[ -n "$BASELINE" ] || die "set BASELINE to a revision to compare with (BASELINE=HEAD for the noise of this build)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS is a number of rounds, not $ROUNDS"
[[ $INCREMENTAL =~ ^[01]$ ]] || die "INCREMENTAL is 0 or 1, not $INCREMENTAL"
[[ $TARGET_SCALE =~ ^[1-9][0-9]*$ ]] || die "TARGET_SCALE is a whole number (the target file system's size over the tree's), not $TARGET_SCALE"
[ "$(id -u)" -eq 0 ] || die "run as root: each restore starts from a dropped page cache and goes to a new loop-mounted ext4"
command -v mkfs.ext4 >/dev/null || die "needs mkfs.ext4 (Debian package e2fsprogs)"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (Debian package time)"
[[ $PROFILE =~ ^[01]$ && $TRACE =~ ^[01]$ ]] || die "PROFILE and TRACE are 0 or 1"
[ "$PROFILE$TRACE" = 00 ] || command -v curl >/dev/null || die "PROFILE=1 and TRACE=1 need curl"

[ "$PROFILE$TRACE" = 00 ] || PPROF_ADDR=127.0.0.1:$(free_port)
build_baseline
mkdir -p "$WORK/bin"
log "building cairn from $REPO"
(cd "$REPO" && go build -o "$WORK/bin/cairn" ./cmd/cairn)
CAIRN_REV=$(cd "$REPO" && git rev-parse --short HEAD)
if (cd "$REPO" && ! git diff --quiet HEAD -- .); then CAIRN_REV="$CAIRN_REV+dirty"; fi
make_tree

RUN=$WORK/restores
RESULTS=$RUN/results.tsv
SYSTEMS=(cairn baseline)
declare -A BIN=([cairn]=$WORK/bin/cairn [baseline]=$BASELINE_BIN)

cleanup() {
	stop_dev
	local m
	for m in "$RUN"/*/restore "$RUN/tree"; do
		if mountpoint -q "$m" 2>/dev/null; then umount "$m" || echo "restores: could not unmount $m: umount it by hand" >&2; fi
	done
}
trap cleanup EXIT

for sys in "${SYSTEMS[@]}"; do
	release_target "$RUN/$sys/restore"
done
release_target "$RUN/tree"
rm -rf "$RUN"
mkdir -p "$RUN"
: >"$RESULTS"
SRC=$TREE
if [ "$INCREMENTAL" = 1 ]; then
	SRC=$RUN/tree
	log "copying the tree to $SRC, a new ext4 (not timed)"
	tree_fs "$SRC" 2
	cp -a "$TREE/." "$SRC"
	(cd "$REPO" && go build -o "$WORK/bin/gentree" ./bench/gentree)
fi
# backup LEVEL: each system backs up SRC at LEVEL, not timed.
backup() {
	local sys d
	for sys in "${SYSTEMS[@]}"; do
		d=$RUN/$sys
		mkdir -p "$d"
		log "backing up the tree with $sys at level $1 (once, not timed)"
		start_dev "$d" "${BIN[$sys]}"
		"${BIN[$sys]}" backup --client "$CLIENT" --path "$SRC" --level "$1" --wait --json >"$d/backup-$1.json" ||
			die "the $sys backup failed: $(cat "$d/backup-$1.json")"
		stop_dev
	done
}
backup full
if [ "$INCREMENTAL" = 1 ]; then
	"$WORK/bin/gentree" -mutate "$SRC" -fraction "$CHANGE" -seed 14 >&2
	backup incremental
fi

gcs() { grep -c '^gc ' "$1/dev.log" || true; }

# restore ROUND SYSTEM: one timed restore, recorded.
restore() {
	local n=$1 sys=$2 d=$RUN/$2 bin=${BIN[$2]}
	release_target "$d/restore"
	tree_fs "$d/restore" "$TARGET_SCALE"
	# The gc lines of GODEBUG=gctrace=1 in dev.log count its collections.
	GODEBUG=gctrace=1 start_dev "$d" "$bin"
	drop_caches
	local g0 c0 t0 t1 c1 g1 prof= trace=
	if [ "$PROFILE" = 1 ]; then
		curl -sf "http://$PPROF_ADDR/debug/pprof/profile?seconds=$PROFILE_SECS" >"$d/restore-$n.prof" &
		prof=$!
	fi
	if [ "$TRACE" = 1 ]; then
		curl -sf "http://$PPROF_ADDR/debug/pprof/trace?seconds=$PROFILE_SECS" >"$d/restore-$n.trace" &
		trace=$!
	fi
	g0=$(gcs "$d")
	c0=$(cpu_secs "$DEV_PID")
	t0=$(now)
	/usr/bin/time -v -o "$d/cli-$n.time" "$bin" restore --client "$CLIENT" --to "$d/restore" --wait --json >"$d/restore-$n.json" ||
		die "the $sys restore of round $n failed: $(cat "$d/restore-$n.json")"
	t1=$(now)
	c1=$(cpu_secs "$DEV_PID")
	g1=$(gcs "$d")
	grep -q '"state": *"success"' "$d/restore-$n.json" || die "the $sys restore of round $n did not succeed: $(cat "$d/restore-$n.json")"
	[ -z "$prof" ] || wait "$prof" || log "the profile of the $sys restore of round $n failed"
	[ -z "$trace" ] || wait "$trace" || log "the trace of the $sys restore of round $n failed"
	stop_dev
	printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$sys" \
		"$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')" \
		"$(echo "$c0 $c1 $(time_cpu "$d/cli-$n.time")" | awk '{printf "%.2f", $2-$1+$3}')" \
		"$((g1 - g0))" >>"$RESULTS"
	if [ "$n" = 1 ]; then
		log "verifying the $sys restore (not timed)"
		diff -r "$SRC" "$d/restore$SRC" >/dev/null || die "the $sys restore differs from the tree: diff -r $SRC $d/restore$SRC"
	fi
	release_target "$d/restore"
}

for n in $(seq "$ROUNDS"); do
	# Rotating order: neither build always restores first.
	if ((n % 2)); then order=(cairn baseline); else order=(baseline cairn); fi
	for sys in "${order[@]}"; do
		log "round $n/$ROUNDS: $sys"
		restore "$n" "$sys"
	done
done

[ "$INCREMENTAL" = 0 ] || release_target "$SRC"
what="restores of $TREE"
[ "$INCREMENTAL" = 1 ] && what="restores of an incremental ($CHANGE of the bytes changed) of $TREE"
echo "$what ($TREE_FILES files, $(awk -v b="$TREE_BYTES" 'BEGIN {printf "%.0f", b/1e6}') MB), each into a new ext4 (TARGET_SCALE=$TARGET_SCALE), page cache dropped"
echo "cairn: $CAIRN_REV; baseline: $BASELINE_REV; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' -v bytes="$TREE_BYTES" '
{ sec[$1, $2] = $3; cpu[$1, $2] = $4; gc[$1, $2] = $5; if ($1 > rounds) rounds = $1 }
function lo(a, b) { return a < b ? a : b }
function hi(a, b) { return a > b ? a : b }
END {
	printf "%-6s %10s %10s %6s %10s %10s %6s %9s %9s\n", "round", "cairn s", "CPU s", "GCs", "base s", "CPU s", "GCs", "MB/s x", "CPU x"
	for (n = 1; n <= rounds; n++) {
		r = sec[n, "baseline"] / sec[n, "cairn"]; c = cpu[n, "cairn"] / cpu[n, "baseline"]
		printf "%-6d %10.2f %10.2f %6d %10.2f %10.2f %6d %9.2f %9.2f\n", n, sec[n, "cairn"], cpu[n, "cairn"], gc[n, "cairn"], sec[n, "baseline"], cpu[n, "baseline"], gc[n, "baseline"], r, c
		rl = n == 1 ? r : lo(rl, r); rh = n == 1 ? r : hi(rh, r)
		cl = n == 1 ? c : lo(cl, c); ch = n == 1 ? c : hi(ch, c)
	}
	printf "cairn MB/s over the baseline: %.2f-%.2fx; CPU seconds: %.2f-%.2fx\n", rl, rh, cl, ch
}' "$RESULTS"
