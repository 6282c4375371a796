#!/usr/bin/env bash
# One full backup of each part of the e2e tree (bench/e2e.sh makes it) on
# its own, in one `cairn dev`: where a full backup's time goes.
#
#   bench/parts.sh                        # small, data, logs; page cache dropped (root)
#   WARM=1 bench/parts.sh                 # the page cache kept
#   PREWARM=data bench/parts.sh           # page cache dropped, then the part read back in
#   PREWARM=meta bench/parts.sh           # page cache dropped, then its names and inodes read back
#   CAT=32 bench/parts.sh                 # no backup: the part read by 32 cats at once, the disk's floor
#   RUNDIR=/dev/shm/parts-run bench/parts.sh  # the volumes on a tmpfs, not the tree's disk
#   BIN=/path/to/other/cairn bench/parts.sh   # another build, for a before/after
#
# Prints per part the wall seconds, the CPU seconds of the dev process (of
# the cats with CAT) and the megabytes read from the block devices.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
TREE=${TREE:-$WORK/tree-1073741824-50000}
PARTS=${PARTS:-small data logs}
[ -d "$TREE" ] || { echo "parts: no tree at $TREE: run bench/e2e.sh once, or set TREE" >&2; exit 1; }
if [ -z "${WARM:-}" ] && [ "$(id -u)" -ne 0 ]; then
	echo "parts: run as root to drop the page cache, or set WARM=1" >&2
	exit 1
fi
BIN=${BIN:-}
if [ -z "$BIN" ]; then
	mkdir -p "$WORK/bin"
	(cd "$REPO" && go build -o "$WORK/bin/cairn-parts" ./cmd/cairn)
	BIN=$WORK/bin/cairn-parts
fi
# RUNDIR holds cairn dev's data directory and volumes (e.g. on a tmpfs).
d=${RUNDIR:-$WORK/parts-run}
rm -rf "$d" && mkdir -p "$d"
nats=$(free_port)
raft=$(free_port)
export CAIRN_NATS=nats://127.0.0.1:$nats CAIRN_DEV_FILE=$d/dev-client.json
"$BIN" dev --data "$d/data" --nats-port "$nats" --raft-addr "127.0.0.1:$raft" --metrics-addr "" --client bench >"$d/dev.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))
until "$BIN" client list 2>/dev/null | awk '$1 == "bench" && $3 == "online" {f=1} END {exit !f}'; do
	kill -0 $pid 2>/dev/null || { echo "parts: cairn dev exited; see $d/dev.log" >&2; exit 1; }
	[ $SECONDS -lt $deadline ] || { echo "parts: client not online after 60s; see $d/dev.log" >&2; exit 1; }
	sleep 0.2
done
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$pid/stat"; }
# Kilobytes read from the block devices since boot.
readkb() { awk '$1 == "pgpgin" {print $2}' /proc/vmstat; }
for part in $PARTS; do
	[ -n "${WARM:-}" ] || { sync; echo 3 >/proc/sys/vm/drop_caches; }
	# What the cold backup waits for: the files' content (data) or their
	# names and inodes (meta), read back in before the timing starts.
	case ${PREWARM:-} in
	"") ;;
	data) find "$TREE/$part" -type f -print0 | xargs -0 -n 500 -P 32 cat >/dev/null ;;
	meta) find "$TREE/$part" -printf '%s\n' >/dev/null ;;
	*) echo "parts: PREWARM is data or meta, not $PREWARM" >&2; exit 2 ;;
	esac
	r0=$(readkb)
	if [ -n "${CAT:-}" ]; then
		t0=$(date +%s.%N)
		c=$( { /usr/bin/time -f '%U %S' bash -c 'find "$1" -type f -print0 | xargs -0 -n 500 -P "$2" cat >/dev/null' _ "$TREE/$part" "$CAT"; } 2>&1 | awk '{print $1 + $2}')
		t1=$(date +%s.%N) c0=0 c1=$c
	else
		c0=$(cpu) t0=$(date +%s.%N)
		"$BIN" backup --client bench --path "$TREE/$part" --level full --wait --json >"$d/$part.json"
		t1=$(date +%s.%N) c1=$(cpu)
	fi
	r1=$(readkb)
	echo "$part: wall $(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}') s, cpu $(echo "$c1 $c0" | awk '{printf "%.2f", $1 - $2}') s, read $(( (r1 - r0) / 1024 )) MB"
done
