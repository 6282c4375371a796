#!/usr/bin/env bash
# SFTP benchmark: Cairn backing up to and restoring from an SFTP pool, and
# restic 0.14 with an sftp: repository, on one real sshd on loopback, side
# by side in each run. See bench/README.md ("SFTP").
#
#   bench/sftp.sh                        # one run
#   RUNS=3 bench/sftp.sh                 # three runs (alternating which goes first), then the ranges
#   STREAMS=4 bench/sftp.sh              # the Cairn pool with four streams
#   TREE_SIZE=1073741824 SMALL_FILES=20000 bench/sftp.sh
#
# Needs root (to drop the page cache before each timed step), sshd and ssh
# (openssh-server, openssh-client) and restic (installed when missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
RUNS=${RUNS:-1}
TREE_SIZE=${TREE_SIZE:-268435456}
SMALL_FILES=${SMALL_FILES:-5000}
STREAMS=${STREAMS:-1}

die() { echo "sftp bench: $*" >&2; exit 1; }
log() { echo "sftp bench: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root: every timed step starts from a dropped page cache"
[ -x /usr/sbin/sshd ] && command -v ssh >/dev/null || die "needs OpenSSH's sshd and ssh (Debian: openssh-server openssh-client)"
if ! command -v restic >/dev/null 2>&1; then
	log "installing restic (Debian package)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends restic >/dev/null
fi
RESTIC_VERSION=$(restic version | awk '{print $2}')

mkdir -p "$WORK"
TREE=$WORK/tree-$TREE_SIZE-$SMALL_FILES
if [ ! -f "$TREE.done" ]; then
	rm -rf "$TREE"
	log "generating the tree in $TREE (once)"
	(cd "$REPO" && go run ./bench/gentree -root "$TREE" -size "$TREE_SIZE" -small-files "$SMALL_FILES") | tee "$TREE.done"
fi
RESULTS=$WORK/sftp-results.tsv
: >"$RESULTS"
(cd "$REPO" && go test -c -o "$WORK/integration.test" ./integration)

for run in $(seq 1 "$RUNS"); do
	order=cairn,restic
	[ $((run % 2)) -eq 0 ] && order=restic,cairn
	log "run $run of $RUNS ($order)"
	(cd "$REPO/integration" && CAIRN_BENCH_SFTP_TREE=$TREE CAIRN_BENCH_SFTP_OUT=$RESULTS CAIRN_BENCH_SFTP_RUN=$run \
		CAIRN_BENCH_SFTP_ORDER=$order CAIRN_BENCH_SFTP_STREAMS=$STREAMS \
		nice "$WORK/integration.test" -test.run '^TestBenchSFTPAgainstRestic$' -test.count=1 -test.timeout 60m >"$WORK/sftp-run-$run.log" 2>&1) ||
		{ tail -40 "$WORK/sftp-run-$run.log" >&2; die "run $run failed; its log: $WORK/sftp-run-$run.log"; }
done

TREE_MB=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s/1e6}')
echo "SFTP on loopback: cairn $(cd "$REPO" && git rev-parse --short HEAD) (streams $STREAMS) against restic $RESTIC_VERSION; tree $TREE_MB MB, $(find "$TREE" -type f | wc -l) files; $RUNS run(s); $(nproc) cores"
printf '%-8s %-8s %16s %16s %18s\n' system op seconds "MB/s" "peak RSS (MB)"
awk -F'\t' '
	{ k = $2 "\t" $3; if (!(k in n)) { keys[++m] = k; smin[k] = smax[k] = $4; rmin[k] = rmax[k] = $5; mmin[k] = mmax[k] = $6 }
	  n[k]++
	  if ($4 < smin[k]) smin[k] = $4; if ($4 > smax[k]) smax[k] = $4
	  if ($5 < rmin[k]) rmin[k] = $5; if ($5 > rmax[k]) rmax[k] = $5
	  if ($6 < mmin[k]) mmin[k] = $6; if ($6 > mmax[k]) mmax[k] = $6 }
	END { for (i = 1; i <= m; i++) { k = keys[i]; split(k, f, "\t")
		printf "%-8s %-8s %16s %16s %18s\n", f[1], f[2], smin[k] "-" smax[k], rmin[k] "-" rmax[k], mmin[k] "-" mmax[k] } }' "$RESULTS"
