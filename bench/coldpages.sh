#!/usr/bin/env bash
# What a page the kernel takes for the page cache costs on this machine,
# from a dropped cache: the system time of reading a file with `cat` and of
# writing 1 GiB into a new ext4 on a loop device (direct I/O, as the
# restores' targets are), each ROUNDS times. On a VM whose balloon reports
# free memory to its host, a page taken from memory the host took back
# costs a fault to the host, and the figures spread with how much it took
# back (bench/README.md, "Volumes' pages given back as a restore passes
# them"). Each round waits WAIT seconds after the drop, the host's time to
# take the freed memory (the kernel reports free pages 2 s after it is
# told of them).
#
#   sudo bench/coldpages.sh                       # the largest e2e volume
#   sudo FILE=/srv/big.img ROUNDS=6 bench/coldpages.sh
#
# Needs root (drop_caches, loop devices), mkfs.ext4 and /usr/bin/time.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
ROUNDS=${ROUNDS:-3}
WAIT=${WAIT:-3}
FILE=${FILE:-}

die() { echo "coldpages: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: each round drops the page cache and mounts a new ext4"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS is a number of rounds, not $ROUNDS"
[[ $WAIT =~ ^[0-9]+$ ]] || die "WAIT is a number of seconds, not $WAIT"
command -v mkfs.ext4 >/dev/null || die "needs mkfs.ext4 (Debian package e2fsprogs)"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (Debian package time)"
if [ -z "$FILE" ]; then
	FILE=$(find "$WORK" -name '*.cvol' -size +100M -printf '%s %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-)
	[ -n "$FILE" ] || die "no volume of 100 MB or more under $WORK: run bench/e2e.sh first, or set FILE"
fi
[ -f "$FILE" ] || die "FILE=$FILE is not a file"

T=$WORK/coldpages
mkdir -p "$T"
cleanup() { release_target "$T/fs" 2>/dev/null || true; }
trap cleanup EXIT
sys_of() { /usr/bin/time -f %S "$@" 2>&1 >/dev/null | tail -1; }
echo "coldpages: $FILE ($(stat -c %s "$FILE") bytes), $ROUNDS rounds, $WAIT s after each drop"
printf 'round\tread sys s\twrite 1 GiB sys s\n'
for n in $(seq "$ROUNDS"); do
	drop_caches
	sleep "$WAIT"
	r=$(sys_of cat "$FILE")
	new_fs "$T/fs" $((3 << 30)) 100000
	drop_caches
	sleep "$WAIT"
	w=$(sys_of dd if=/dev/zero of="$T/fs/one" bs=1M count=1024 status=none)
	release_target "$T/fs"
	printf '%s\t%s\t%s\n' "$n" "$r" "$w"
done
