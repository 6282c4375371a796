#!/usr/bin/env bash
# What a restore's way of making files costs the kernel: files made
# unnamed (O_TMPFILE) and linked into place, as the agent makes them,
# against files made under their names (O_EXCL), each run on a new ext4
# (a loop device with direct I/O, as bench/e2e.sh restores into) from a
# dropped page cache, in alternating order. See bench/README.md.
#
#   sudo bench/unnamed.sh                        # 3 rounds, 50,000 files of 4.4 KB
#   sudo ROUNDS=5 MKFS_OPTS="-O orphan_file" bench/unnamed.sh
#
# Needs root (loop devices, drop_caches) and mkfs.ext4.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
ROUNDS=${ROUNDS:-3}
MKFS_OPTS=${MKFS_OPTS:-}
die() { echo "unnamed: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: each run mounts a new ext4 on a loop device and drops the page cache"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS is a number of rounds, not $ROUNDS"
command -v mkfs.ext4 >/dev/null || die "needs mkfs.ext4 (Debian package e2fsprogs)"
mkdir -p "$WORK"
bin=$WORK/bin/unnamed
(cd "$REPO" && go build -o "$bin" ./bench/unnamed)
img=$WORK/unnamed.img mnt=$WORK/unnamed.mnt loop=
cleanup() {
	mountpoint -q "$mnt" && umount "$mnt"
	[ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
	rm -rf "$img" "$mnt"
}
trap cleanup EXIT
one() { # MODE
	truncate -s 4G "$img"
	# shellcheck disable=SC2086 # MKFS_OPTS is options, split on purpose
	mkfs.ext4 -q -F $MKFS_OPTS "$img"
	mkdir -p "$mnt"
	loop=$(losetup --direct-io=on -f --show "$img")
	mount "$loop" "$mnt"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	"$bin" -mode "$1" "$mnt"
	umount "$mnt"
	losetup -d "$loop"
	loop=
	rm -f "$img"
}
echo "ext4 on a loop device${MKFS_OPTS:+ (mkfs.ext4 $MKFS_OPTS)}, $(nproc) cores, kernel $(uname -r)"
for ((r = 1; r <= ROUNDS; r++)); do
	order=(unnamed named)
	[ $((r % 2)) -eq 0 ] && order=(named unnamed)
	for m in "${order[@]}"; do
		echo -n "round $r: "
		one "$m"
	done
done
