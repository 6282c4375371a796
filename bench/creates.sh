#!/usr/bin/env bash
# What creating files costs on a file system right after as many were
# deleted there, against creating them fresh: why bench/e2e.sh restores
# into a new file system (RESTORE_FS). See bench/README.md.
#
#   sudo bench/creates.sh                         # 100,000 empty files in the work directory
#   sudo FILES=50000 WAIT=200 bench/creates.sh    # and a wait between the delete and the creates
#
# Needs root (it drops the page cache).
set -euo pipefail
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
FILES=${FILES:-100000}
WAIT=${WAIT:-0}
[ "$(id -u)" -eq 0 ] || { echo "creates: run as root, to drop the page cache" >&2; exit 1; }
d=$WORK/creates
rm -rf "$d" && mkdir -p "$d"
trap 'rm -rf "$d"' EXIT
# create DIR: FILES empty files in directories of 1,000, from a dropped
# page cache; prints the wall seconds.
create() {
	sync; echo 3 >/proc/sys/vm/drop_caches
	local t0 t1 i
	t0=$(date +%s.%N)
	for ((i = 0; i < FILES / 1000; i++)); do
		mkdir -p "$1/d$i"
		(cd "$1/d$i" && seq -f 'f%.0f' 1 1000 | xargs touch)
	done
	t1=$(date +%s.%N)
	echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}'
}
echo "file system: $(df -T "$WORK" | awk 'NR==2 {print $2}') ($WORK); $FILES empty files each time"
echo "fresh: $(create "$d/a") s"
rm -rf "$d/a"; sync
[ "$WAIT" -eq 0 ] || sleep "$WAIT"
echo "right after deleting as many$([ "$WAIT" -eq 0 ] || echo " and waiting $WAIT s"): $(create "$d/b") s"
