#!/usr/bin/env bash
# End-to-end benchmark: Cairn (`cairn dev`) against restic 0.14, side by side,
# on the same tree, on this machine. See bench/README.md.
#
#   bench/e2e.sh                       # one run
#   RUNS=3 bench/e2e.sh                # three runs, then the ranges
#   CAIRN_BENCH_DIR=/data/bench bench/e2e.sh
#   BASELINE=f4805ec RUNS=3 bench/e2e.sh  # this checkout, an older revision
#                                        # and restic, side by side
#   COMPRESSION=s2 BASELINE=HEAD bench/e2e.sh  # the pool's codecs side by side
#   AGAIN=1 RUNS=3 bench/e2e.sh        # each full restored twice (op "again")
#   ONE_FILE=1 TREE_SIZE=8589934592 RESTIC=0 BASELINE=686cbbd bench/e2e.sh
#                                        # one 8 GiB file, before and after
#
# Needs root (to drop the page cache and, when missing, to install restic).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
RUNS=${RUNS:-1}
TREE_SIZE=${TREE_SIZE:-1073741824}
SMALL_FILES=${SMALL_FILES:-50000}
# ONE_FILE=1 makes the tree one file of TREE_SIZE bytes, like a disk image
# (and 100 small files): the memory of a file cut into the largest blocks.
ONE_FILE=${ONE_FILE:-0}
CLIENT=bench
# CAIRN_BIN runs a prebuilt binary instead of building the checkout.
CAIRN_BIN=${CAIRN_BIN:-}
# PPROF_ADDR makes `cairn dev` serve net/http/pprof there (e.g. 127.0.0.1:6060).
PPROF_ADDR=${PPROF_ADDR:-}
# BASELINE, a git revision of this repository, is built and run beside
# this checkout and restic, the three in rotating order from one run to
# the next: a before/after of a change, and both against restic.
BASELINE=${BASELINE:-}
# RESTIC=0 leaves restic out (a before/after of Cairn alone).
RESTIC=${RESTIC:-1}
# COMPRESSION sets the pool's compression of this checkout's row (zstd,
# s2 or none; `cairn pool set`); the baseline keeps its default, zstd.
COMPRESSION=${COMPRESSION:-}
# RESTORE_FS=fresh (the default) restores into a new ext4 file system,
# made for each restore on a loop device outside the timing; here restores
# into the work directory's own file system, as before. On a file system
# without a journal (this machine's root is one) ext4 passes over every
# inode freed in the last minutes, one by one, when it allocates one: the
# restore that follows the deletion of the last restore then creates its
# files more slowly (bench/creates.sh), and which system's restore pays it
# depends on the order they ran in.
RESTORE_FS=${RESTORE_FS:-fresh}
# TREE_FS=fresh (the default) makes each system's copy of the tree on a new
# ext4 the same way, so no system backs up a copy laid out among the inodes
# and blocks the system before it just freed; here copies it into the work
# directory, as before.
TREE_FS=${TREE_FS:-fresh}
# AGAIN=1 restores each full backup a second time, right after the first
# (a new target, the page cache dropped), as op "again": on this VM the
# first cold read of files written shortly before sometimes costs the
# kernel far more than later ones (bench/README.md, 2026-12-05), and each
# system's first restore reads what its backup has just written.
AGAIN=${AGAIN:-0}
MAIN_OPS="backup restore"
[ "$AGAIN" = 1 ] && MAIN_OPS="backup restore again"
SYSTEMS=(cairn)
[ -n "$BASELINE" ] && SYSTEMS+=(baseline)
[ "$RESTIC" = 1 ] && SYSTEMS+=(restic)
[ ${#SYSTEMS[@]} -gt 1 ] || { echo "e2e: nothing to compare: set BASELINE or leave RESTIC=1" >&2; exit 1; }

die() { echo "e2e: $*" >&2; exit 1; }
log() { echo "e2e: $*" >&2; }
for v in RESTORE_FS TREE_FS; do
	case ${!v} in
	fresh) command -v mkfs.ext4 >/dev/null || die "$v=fresh needs mkfs.ext4 (Debian package e2fsprogs); or set $v=here" ;;
	here) ;;
	*) die "$v is fresh or here, not ${!v}" ;;
	esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: every timed step starts from a dropped page cache (echo 3 > /proc/sys/vm/drop_caches)"
[ "$(uname -s)" = Linux ] || die "Linux only (/proc, drop_caches)"

if { [ "$RESTIC" = 1 ] && ! command -v restic >/dev/null 2>&1; } || [ ! -x /usr/bin/time ]; then
	log "installing restic and time (Debian packages)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends restic time >/dev/null
fi
RESTIC_VERSION=none
[ "$RESTIC" = 1 ] && RESTIC_VERSION=$(restic version | awk '{print $2}')
[ -n "$BASELINE" ] && build_baseline

mkdir -p "$WORK/bin"
if [ -z "$CAIRN_BIN" ]; then
	log "building cairn from $REPO"
	(cd "$REPO" && go build -o "$WORK/bin/cairn" ./cmd/cairn)
	CAIRN_BIN=$WORK/bin/cairn
fi
if [ "$CAIRN_BIN" = "$WORK/bin/cairn" ]; then
	CAIRN_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if (cd "$REPO" && ! git diff --quiet HEAD -- . 2>/dev/null); then CAIRN_REV="$CAIRN_REV+dirty"; fi
else
	CAIRN_REV=$CAIRN_BIN
fi

make_tree
# The incremental's changes: CHANGE of the tree's bytes, the same for both
# systems (a fixed seed), made on each system's copy of the tree.
CHANGE=${CHANGE:-0.05}
(cd "$REPO" && go build -o "$WORK/bin/gentree" ./bench/gentree)
# prepare_copy DIR: a fresh copy of the tree to back up (not timed), so the
# incremental's changes leave the tree as it was; with TREE_FS=fresh, on a
# new file system of its own.
prepare_copy() {
	release_target "$1"
	if [ "$TREE_FS" = fresh ]; then
		tree_fs "$1" 2
		cp -a "$TREE/." "$1"
	else
		cp -a "$TREE" "$1"
	fi
}
# mutate DIR SYSTEM RUN: make the incremental's changes, note the bytes.
mutate() {
	"$WORK/bin/gentree" -mutate "$1" -fraction "$CHANGE" -seed 14 | tee "$RUN/$2-$3.changed" >&2
	awk '{print $3}' "$RUN/$2-$3.changed" >"$WORK/changed-$3-$2"
}

RUN=$WORK/run
RESULTS=$WORK/results.tsv
: >"$RESULTS"


# release_system DIR: a system's tree copy and restore target released
# (they may be mounts, so before any rm of DIR).
release_system() {
	release_target "$1/restore"
	release_target "$1/tree"
}
# fresh_target DIR: an empty DIR to restore into; with RESTORE_FS=fresh, on
# a new file system of its own.
fresh_target() {
	release_target "$1"
	mkdir -p "$1"
	[ "$RESTORE_FS" = fresh ] || return 0
	tree_fs "$1" 3
}

cleanup() {
	local m
	stop_dev
	# After cairn dev is gone: a restore it was writing keeps the mount busy.
	for m in "$RUN"/*/restore "$RUN"/*/tree; do
		if mountpoint -q "$m" 2>/dev/null; then umount "$m" || echo "e2e: could not unmount $m: umount it by hand" >&2; fi
	done
}
trap cleanup EXIT

# run_cairn RUN [SYSTEM BIN]: SYSTEM names the row (cairn, or baseline).
run_cairn() {
	local n=$1 sys=${2:-cairn} bin=${3:-$CAIRN_BIN} d=$RUN/${2:-cairn}
	release_system "$d"
	rm -rf "$d"
	fresh_target "$d/restore"
	start_dev "$d" "$bin"
	if [ "$sys" = cairn ] && [ -n "$COMPRESSION" ]; then
		"$bin" pool set Default --compression "$COMPRESSION" >/dev/null || die "cairn pool set Default --compression $COMPRESSION failed"
	fi

	local op t0 t1 c0 c1 hwm full=0
	prepare_copy "$d/tree"
	for op in $MAIN_OPS incremental increstore; do
		case $op in
		again) fresh_target "$d/restore" ;;
		incremental)
			log "verifying the $sys restore (not timed)"
			diff -r "$d/tree" "$d/restore$d/tree" >/dev/null || die "the $sys restore differs from the tree: diff -r $d/tree $d/restore$d/tree"
			fresh_target "$d/restore"
			mutate "$d/tree" "$sys" "$n"
			;;
		esac
		drop_caches
		reset_hwm "$DEV_PID"
		c0=$(cpu_secs "$DEV_PID")
		t0=$(now)
		case $op in
		backup | incremental)
			local level=full
			[ $op = incremental ] && level=incremental
			/usr/bin/time -v -o "$d/cli-$op.time" "$bin" backup --client "$CLIENT" --path "$d/tree" --level $level --wait --json >"$d/$op.json" ||
				die "$sys $op failed: $(cat "$d/$op.json")"
			;;
		*)
			/usr/bin/time -v -o "$d/cli-$op.time" "$bin" restore --client "$CLIENT" --to "$d/restore" --wait --json >"$d/$op.json" ||
				die "$sys $op failed: $(cat "$d/$op.json")"
			;;
		esac
		t1=$(now)
		c1=$(cpu_secs "$DEV_PID")
		hwm=$(hwm_mb "$DEV_PID")
		local cpu rss stored=-
		cpu=$(echo "$c0 $c1 $(time_cpu "$d/cli-$op.time")" | awk '{printf "%.2f", $2-$1+$3}')
		rss=$(echo "$hwm $(time_rss_mb "$d/cli-$op.time")" | awk '{printf "%.0f", $1+$2}')
		if [ $op = backup ]; then
			stored=$(du -sb "$d/data/pool" | awk '{print $1}')
			full=$stored
		elif [ $op = incremental ]; then
			stored=$(($(du -sb "$d/data/pool" | awk '{print $1}') - full)) # the growth
		fi
		record "$n" "$sys" "$op" "$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')" "$cpu" "$rss" "$stored"
		grep -q '"state": *"success"' "$d/$op.json" || die "$sys $op did not succeed: $(cat "$d/$op.json")"
	done
	stop_dev

	log "verifying the $sys restore of the incremental (not timed)"
	diff -r "$d/tree" "$d/restore$d/tree" >/dev/null || die "the $sys restore of the incremental differs from the tree: diff -r $d/tree $d/restore$d/tree"
	release_system "$d"
}

run_restic() {
	local n=$1 d=$RUN/restic
	release_system "$d"
	rm -rf "$d"
	fresh_target "$d/restore"
	export RESTIC_PASSWORD=cairn-bench RESTIC_REPOSITORY=$d/repo RESTIC_CACHE_DIR=$d/cache
	restic init --repository-version 2 >/dev/null
	local op t0 t1 full=0
	prepare_copy "$d/tree"
	for op in $MAIN_OPS incremental increstore; do
		[ $op = again ] && fresh_target "$d/restore"
		if [ $op = incremental ]; then
			log "verifying the restic restore (not timed)"
			diff -r "$d/tree" "$d/restore$d/tree" >/dev/null || die "the restic restore differs from the tree: diff -r $d/tree $d/restore$d/tree"
			fresh_target "$d/restore"
			mutate "$d/tree" restic "$n"
		fi
		drop_caches
		t0=$(now)
		case $op in
		backup | incremental)
			/usr/bin/time -v -o "$d/$op.time" restic backup --quiet "$d/tree" >"$d/$op.out" 2>&1 ||
				die "restic $op failed: $(cat "$d/$op.out")"
			;;
		*)
			/usr/bin/time -v -o "$d/$op.time" restic restore latest --target "$d/restore" >"$d/$op.out" 2>&1 ||
				die "restic $op failed: $(cat "$d/$op.out")"
			;;
		esac
		t1=$(now)
		local stored=-
		if [ $op = backup ]; then
			stored=$(du -sb "$d/repo" | awk '{print $1}')
			full=$stored
		elif [ $op = incremental ]; then
			stored=$(($(du -sb "$d/repo" | awk '{print $1}') - full))
		fi
		record "$n" restic "$op" "$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')" "$(time_cpu "$d/$op.time")" "$(time_rss_mb "$d/$op.time")" "$stored"
	done
	log "verifying the restic restore of the incremental (not timed)"
	diff -r "$d/tree" "$d/restore$d/tree" >/dev/null || die "the restic restore of the incremental differs from the tree: diff -r $d/tree $d/restore$d/tree"
	release_system "$d"
	rm -rf "$d"
}

mb() { awk -v b="$1" 'BEGIN {printf "%.0f", b/1e6}'; }

# table RUN: the side-by-side table of one run: every system, then
# cairn's MB/s over each other's.
table() {
	awk -F'\t' -v run="$1" -v bytes="$TREE_BYTES" -v systems="${SYSTEMS[*]}" -v work="$WORK" -v mainops="$MAIN_OPS" '
	$1 == run { k = $2 "/" $3; sec[k] = $4; cpu[k] = $5; rss[k] = $6; st[k] = $7 }
	END {
		ns = split(systems, sys, " ")
		printf "%-8s %-9s | %8s %7s %6s %5s %5s\n", "op", "system", "s", "MB/s", "CPU s", "cores", "RSS"
		nops = split(mainops, ops, " ")
		for (i = 1; i <= nops; i++) {
			o = ops[i]
			for (j = 1; j <= ns; j++) {
				k = sys[j] "/" o
				printf "%-8s %-9s | %8.2f %7.1f %6.2f %5.2f %5d\n", o, sys[j], sec[k], bytes / 1e6 / sec[k], cpu[k], cpu[k] / sec[k], rss[k]
			}
			for (j = 2; j <= ns; j++) printf "%-8s cairn/%s MB/s: %.2fx, CPU s: %.2fx\n", o, sys[j], sec[sys[j] "/" o] / sec["cairn/" o], cpu["cairn/" o] / cpu[sys[j] "/" o]
		}
		for (j = 1; j <= ns; j++) printf "stored   %-9s | %d MB (%.1f%% of the tree)\n", sys[j], int(st[sys[j] "/backup"] / 1e6), 100 * st[sys[j] "/backup"] / bytes
		# The incremental after CHANGE of the bytes changed, and the
		# restore of its point in time; growth is the stored bytes the
		# incremental added over the bytes changed.
		split("incremental increstore", iops, " ")
		for (i = 1; i <= 2; i++) {
			o = iops[i]
			for (j = 1; j <= ns; j++) {
				k = sys[j] "/" o
				printf "%-8s %-9s | %8.2f %7s %6.2f %5.2f %5d\n", substr(o, 1, 8), sys[j], sec[k], "", cpu[k], cpu[k] / sec[k], rss[k]
			}
			for (j = 2; j <= ns; j++) printf "%-8s %s/cairn wall: %.2fx\n", substr(o, 1, 8), sys[j], sec[sys[j] "/" o] / sec["cairn/" o]
		}
		for (j = 1; j <= ns; j++) {
			f = work "/changed-" run "-" sys[j]; ch = 1
			getline ch < f; close(f)
			printf "growth   %-9s | %.1f MB, %.2fx the %.1f MB changed\n", sys[j], st[sys[j] "/incremental"] / 1e6, st[sys[j] "/incremental"] / ch, ch / 1e6
		}
	}' "$RESULTS"
}

run_system() {
	case $2 in
	cairn) run_cairn "$1" ;;
	baseline) run_cairn "$1" baseline "$BASELINE_BIN" ;;
	restic) run_restic "$1" ;;
	esac
}

AGAINST=
[ -n "$BASELINE" ] && AGAINST="cairn $BASELINE_REV (baseline)"
[ "$RESTIC" = 1 ] && AGAINST="${AGAINST:+$AGAINST and }restic $RESTIC_VERSION"
echo "Cairn $CAIRN_REV vs $AGAINST on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(df -T "$WORK" | awk 'NR==2 {print $2}') ($WORK)"
echo "tree: $TREE: $TREE_FILES files, $(mb "$TREE_BYTES") MB ($(cat "$TREE.done" | sed 's/^gentree: [^:]*: //'))"
echo "each timed step starts with: sync; echo 3 > /proc/sys/vm/drop_caches"
if [ "$RESTORE_FS" = fresh ]; then
	echo "restores go to a new ext4 made for each (loop device with direct I/O, journal, made outside the timing)"
else
	echo "restores go to $WORK's own file system (RESTORE_FS=here)"
fi
if [ "$TREE_FS" = fresh ]; then
	echo "each system backs up its own copy of the tree, on a new ext4 made for it the same way"
else
	echo "each system backs up its own copy of the tree, made in $WORK (TREE_FS=here)"
fi
echo "s = wall seconds, MB/s = tree bytes / s, CPU s = user+sys seconds of every process involved,"
echo "cores = CPU s / s (2 would be both cores busy end to end),"
echo "RSS = peak resident MB (cairn: the dev process, which holds every role, + the CLI; restic: its process)"
[ -n "$BASELINE" ] && echo "baseline: cairn built from $BASELINE_REV, measured as cairn is"
[ -n "$COMPRESSION" ] && echo "cairn's pool compression: $COMPRESSION (the baseline's: its default)"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $(seq 1 "$RUNS"); do
	# Rotating order, so a drift of the machine favours no system.
	order=()
	for i in "${!SYSTEMS[@]}"; do order+=("${SYSTEMS[$(((i + n - 1) % ${#SYSTEMS[@]}))]}"); done
	steal0=$(steal_secs) t0=$(now)
	for sys in "${order[@]}"; do
		log "run $n of $RUNS: $sys (order: ${order[*]})"
		run_system "$n" "$sys"
	done
	echo
	echo "run $n (order: ${order[*]}; load average $(cut -d' ' -f1-3 /proc/loadavg);" \
		"host steal $(echo "$(steal_secs) $steal0 $(now) $t0" | awk '{printf "%.1f s of the cores in %.0f s", $1 - $2, $3 - $4}')):"
	table "$n"
done

if [ "$RUNS" -gt 1 ]; then
	echo
	echo "ranges over $RUNS runs (min-max):"
	awk -F'\t' -v bytes="$TREE_BYTES" -v systems="${SYSTEMS[*]}" -v mainops="$MAIN_OPS" '
	function upd(k, v) { if (!(k in lo) || v < lo[k]) lo[k] = v; if (!(k in hi) || v > hi[k]) hi[k] = v }
	{ k = $2 "/" $3; mbs[$1, k] = bytes / 1e6 / $4; cpu[$1, k] = $5; upd(k " MB/s", mbs[$1, k]); upd(k " CPU s", $5); upd(k " cores", $5 / $4); upd(k " RSS MB", $6); runs[$1] = 1 }
	END {
		ns = split(systems, sys, " ")
		nops = split(mainops, ops, " ")
		for (r in runs) for (i = 1; i <= nops; i++) for (j = 2; j <= ns; j++) {
			upd(ops[i] " cairn/" sys[j] " MB/s", mbs[r, "cairn/" ops[i]] / mbs[r, sys[j] "/" ops[i]])
			upd(ops[i] " cairn/" sys[j] " CPU s", cpu[r, "cairn/" ops[i]] / cpu[r, sys[j] "/" ops[i]])
		}
		for (i = 1; i <= nops; i++) {
			for (m = 1; m <= 4; m++) {
				split("MB/s|CPU s|cores|RSS MB", what, "|")
				for (j = 1; j <= ns; j++) { k = sys[j] "/" ops[i] " " what[m]; printf "  %-28s %8.2f - %-8.2f\n", k, lo[k], hi[k] }
			}
			for (j = 2; j <= ns; j++) for (m = 1; m <= 2; m++) {
				split("MB/s|CPU s", what, "|")
				k = ops[i] " cairn/" sys[j] " " what[m]; printf "  %-28s %8.2f - %-8.2f\n", k, lo[k], hi[k]
			}
		}
	}' "$RESULTS"
fi
echo
echo "raw results: $RESULTS (run, system, op, seconds, cpu seconds, peak RSS MB, stored bytes)"
