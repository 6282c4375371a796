#!/usr/bin/env bash
# S3 benchmark: Cairn backing up to an S3 pool against restic 0.14 to an
# s3: repository, both on the same versitygw on loopback, side by side in
# one run. See bench/README.md, "S3".
#
#   bench/s3.sh                          # one run
#   RUNS=3 bench/s3.sh                   # three runs, in alternating order, then the ranges
#   TREE_SIZE=1073741824 SMALL_FILES=50000 bench/s3.sh   # the e2e tree
#   BASELINE=main SKIP_RESTIC=1 RUNS=3 bench/s3.sh   # this checkout against another revision
#
# With BASELINE, Cairn at that revision (built from git archive) runs too,
# in the same runs, on the same store, in rotating order, and a table of
# this checkout against it follows each run's; SKIP_RESTIC=1 leaves restic
# out.
#
# Everything it starts runs under nice: the machine is shared. With
# DROP_CACHES=1 (as root) it drops the page cache before every timed step,
# which slows everyone else on the machine; otherwise both systems read a
# warm cache alike, and the script says so.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
RUNS=${RUNS:-1}
TREE_SIZE=${TREE_SIZE:-268435456}
SMALL_FILES=${SMALL_FILES:-5000}
CLIENT=bench
NICE=(nice -n 10)
AK=cairnbenchaccess
SK=cairnbenchsecret0123456789

die() { echo "s3: $*" >&2; exit 1; }
log() { echo "s3: $*" >&2; }

VGW=$(command -v versitygw || true)
[ -n "$VGW" ] || VGW="$(go env GOPATH)/bin/versitygw"
[ -x "$VGW" ] || die "needs versitygw: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 (scripts/install-test-deps.sh does)"
command -v restic >/dev/null || die "needs restic (Debian: apt-get install restic)"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (Debian: apt-get install time)"
command -v curl >/dev/null || die "needs curl"
RESTIC_VERSION=$(restic version | awk '{print $2}')

mkdir -p "$WORK/bin"
log "building cairn from $REPO"
(cd "$REPO" && go build -o "$WORK/bin/cairn" ./cmd/cairn)
CAIRN_BIN=$WORK/bin/cairn
BASE_BIN=
if [ -n "${BASELINE:-}" ]; then
	BASE_REV=$(cd "$REPO" && git rev-parse --short "$BASELINE") || die "BASELINE=$BASELINE is not a revision"
	log "building cairn $BASE_REV (BASELINE)"
	rm -rf "$WORK/base-src" && mkdir -p "$WORK/base-src"
	(cd "$REPO" && git archive "$BASE_REV") | tar -x -C "$WORK/base-src"
	(cd "$WORK/base-src" && go build -o "$WORK/bin/cairn-base" ./cmd/cairn)
	BASE_BIN=$WORK/bin/cairn-base
fi
CAIRN_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if (cd "$REPO" && ! git diff --quiet HEAD -- . 2>/dev/null); then CAIRN_REV="$CAIRN_REV+dirty"; fi

TREE=$WORK/tree-$TREE_SIZE-$SMALL_FILES
if [ ! -f "$TREE.done" ]; then
	rm -rf "$TREE"
	log "generating the tree in $TREE (once)"
	(cd "$REPO" && go run ./bench/gentree -root "$TREE" -size "$TREE_SIZE" -small-files "$SMALL_FILES") | tee "$TREE.done"
fi
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s}')
TREE_FILES=$(find "$TREE" -type f | wc -l)

RUN=$WORK/s3run
RESULTS=$WORK/s3-results.tsv
: >"$RESULTS"
COLD=no
if [ "${DROP_CACHES:-}" = 1 ]; then
	[ "$(id -u)" -eq 0 ] || die "DROP_CACHES=1 needs root"
	COLD=yes
fi

drop_caches() { sync; [ "$COLD" = yes ] && echo 3 >/proc/sys/vm/drop_caches || true; }

VGW_PID= DEV_PID=
cleanup() {
	for p in $DEV_PID $VGW_PID; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
}
trap cleanup EXIT

# The S3 server, fresh for the whole run: one bucket with object lock for
# Cairn, one plain bucket for restic (which does not lock).
rm -rf "$RUN" && mkdir -p "$RUN/s3root" "$RUN/s3versions"
S3PORT=$(free_port)
ENDPOINT=http://127.0.0.1:$S3PORT
"${NICE[@]}" "$VGW" --port "127.0.0.1:$S3PORT" --access "$AK" --secret "$SK" posix --versioning-dir "$RUN/s3versions" "$RUN/s3root" >"$RUN/versitygw.log" 2>&1 &
VGW_PID=$!
deadline=$((SECONDS + 30))
until curl -s -o /dev/null "$ENDPOINT/"; do
	kill -0 "$VGW_PID" 2>/dev/null || die "versitygw exited; see $RUN/versitygw.log"
	[ $SECONDS -lt $deadline ] || die "versitygw not answering after 30s"
	sleep 0.2
done
s3curl() { curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" "$@"; }
mkbucket() { # NAME [lock]
	local h=()
	[ "${2:-}" = lock ] && h=(-H "x-amz-bucket-object-lock-enabled: true")
	s3curl -X PUT "${h[@]}" "$ENDPOINT/$1" >/dev/null || die "could not make bucket $1"
}
CREDS=$RUN/s3-credentials.json
printf '{"access_key": "%s", "secret_key": "%s"}\n' "$AK" "$SK" >"$CREDS"
chmod 600 "$CREDS"

run_cairn() { # RUN [SYSTEM BINARY]
	local n=$1 sys=${2:-cairn} bin=${3:-$CAIRN_BIN}
	local d=$RUN/$sys-$1
	rm -rf "$d" && mkdir -p "$d/restore"
	mkbucket "$sys-$n" lock
	local nats raft
	nats=$(free_port)
	raft=$(free_port)
	export CAIRN_NATS=nats://127.0.0.1:$nats
	cat >"$d/dev.json" <<JSON
{
	"data": "$d/data",
	"nats_port": $nats,
	"raft_addr": "127.0.0.1:$raft",
	"client": "$CLIENT",
	"metrics_addr": "",
	"s3_pools": [{"name": "Vault", "endpoint": "$ENDPOINT", "bucket": "$sys-$n", "region": "us-east-1",
		"credentials_file": "$CREDS", "lock_mode": "compliance", "default_lock": "1h"}]
}
JSON
	DEV_PREFIX="${NICE[*]}" launch_dev "$d" "$bin" --config "$d/dev.json"
	local op t0 t1 c0 c1 hwm cpu rss stored
	for op in backup restore; do
		drop_caches
		reset_hwm "$DEV_PID"
		c0=$(cpu_secs "$DEV_PID")
		t0=$(now)
		if [ $op = backup ]; then
			/usr/bin/time -v -o "$d/cli-$op.time" "$bin" backup --client "$CLIENT" --path "$TREE" --level full --pool Vault --wait --json >"$d/$op.json" ||
				die "$sys backup failed: $(cat "$d/$op.json")"
		else
			/usr/bin/time -v -o "$d/cli-$op.time" "$bin" restore --client "$CLIENT" --to "$d/restore" --wait --json >"$d/$op.json" ||
				die "$sys restore failed: $(cat "$d/$op.json")"
		fi
		t1=$(now)
		c1=$(cpu_secs "$DEV_PID")
		hwm=$(hwm_mb "$DEV_PID")
		cpu=$(echo "$c0 $c1 $(time_cpu "$d/cli-$op.time")" | awk '{printf "%.2f", $2-$1+$3}')
		rss=$(echo "$hwm $(time_rss_mb "$d/cli-$op.time")" | awk '{printf "%.0f", $1+$2}')
		stored=-
		[ $op = backup ] && stored=$(du -sb "$RUN/s3root/$sys-$n" | awk '{print $1}')
		record "$n" "$sys" "$op" "$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')" "$cpu" "$rss" "$stored"
		grep -q '"state": *"success"' "$d/$op.json" || die "$sys $op did not succeed: $(cat "$d/$op.json")"
	done
	kill "$DEV_PID"
	wait "$DEV_PID" 2>/dev/null || true
	DEV_PID=
	log "verifying the cairn restore (not timed)"
	diff -r "$TREE" "$d/restore$TREE" >/dev/null || die "the cairn restore differs from the tree: diff -r $TREE $d/restore$TREE"
	rm -rf "$d/restore"
}

run_restic() {
	local n=$1 d=$RUN/restic-$1
	rm -rf "$d" && mkdir -p "$d/restore"
	mkbucket "restic-$n"
	export RESTIC_PASSWORD=cairn-bench RESTIC_REPOSITORY=s3:$ENDPOINT/restic-$n RESTIC_CACHE_DIR=$d/cache
	export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_DEFAULT_REGION=us-east-1
	"${NICE[@]}" restic init --repository-version 2 >/dev/null
	local op t0 t1 stored
	for op in backup restore; do
		drop_caches
		t0=$(now)
		if [ $op = backup ]; then
			/usr/bin/time -v -o "$d/$op.time" "${NICE[@]}" restic backup --quiet "$TREE" >"$d/$op.out" 2>&1 ||
				die "restic backup failed: $(cat "$d/$op.out")"
		else
			/usr/bin/time -v -o "$d/$op.time" "${NICE[@]}" restic restore latest --target "$d/restore" >"$d/$op.out" 2>&1 ||
				die "restic restore failed: $(cat "$d/$op.out")"
		fi
		t1=$(now)
		stored=-
		[ $op = backup ] && stored=$(du -sb "$RUN/s3root/restic-$n" | awk '{print $1}')
		record "$n" restic "$op" "$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')" "$(time_cpu "$d/$op.time")" "$(time_rss_mb "$d/$op.time")" "$stored"
	done
	unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
	log "verifying the restic restore (not timed)"
	diff -r "$TREE" "$d/restore$TREE" >/dev/null || die "the restic restore differs from the tree: diff -r $TREE $d/restore$TREE"
	rm -rf "$d"
}

# base_table RUN: this checkout against BASELINE.
base_table() {
	awk -F'\t' -v run="$1" -v bytes="$TREE_BYTES" -v rev="$BASE_REV" '
	$1 == run { k = $2 "/" $3; sec[k] = $4; cpu[k] = $5; rss[k] = $6 }
	END {
		printf "%-8s | %-26s | %-26s | %s\n", "", "cairn (this checkout)", "cairn " rev " (BASELINE)", "this/baseline"
		printf "%-8s | %8s %7s %4s %5s | %8s %7s %4s %5s | %s\n", "op", "s", "MB/s", "CPU", "RSS", "s", "MB/s", "CPU", "RSS", "MB/s, CPU"
		split("backup restore", ops, " ")
		for (i = 1; i <= 2; i++) {
			o = ops[i]; c = "cairn/" o; r = "base/" o
			cm = bytes / 1e6 / sec[c]; rm = bytes / 1e6 / sec[r]
			printf "%-8s | %8.2f %7.1f %4.1f %5d | %8.2f %7.1f %4.1f %5d | %.2fx, %.2fx\n", o, sec[c], cm, cpu[c], rss[c], sec[r], rm, cpu[r], rss[r], cm / rm, cpu[c] / cpu[r]
		}
	}' "$RESULTS"
}

table() {
	awk -F'\t' -v run="$1" -v bytes="$TREE_BYTES" '
	$1 == run { k = $2 "/" $3; sec[k] = $4; cpu[k] = $5; rss[k] = $6; st[k] = $7 }
	END {
		printf "%-8s | %-26s | %-26s | %s\n", "", "cairn (S3 pool)", "restic (s3: repository)", "cairn/restic"
		printf "%-8s | %8s %7s %4s %5s | %8s %7s %4s %5s | %s\n", "op", "s", "MB/s", "CPU", "RSS", "s", "MB/s", "CPU", "RSS", "MB/s ratio"
		split("backup restore", ops, " ")
		for (i = 1; i <= 2; i++) {
			o = ops[i]; c = "cairn/" o; r = "restic/" o
			cm = bytes / 1e6 / sec[c]; rm = bytes / 1e6 / sec[r]
			printf "%-8s | %8.2f %7.1f %4.1f %5d | %8.2f %7.1f %4.1f %5d | %.2fx\n", o, sec[c], cm, cpu[c], rss[c], sec[r], rm, cpu[r], rss[r], cm / rm
		}
		printf "stored   | %s MB in the bucket        | %s MB in the bucket\n", int(st["cairn/backup"]/1e6), int(st["restic/backup"]/1e6)
	}' "$RESULTS"
}

others=
[ -z "$BASE_BIN" ] || others="Cairn $BASE_REV (BASELINE: the same pool)"
[ "${SKIP_RESTIC:-}" = 1 ] || others="${others:+$others and }restic $RESTIC_VERSION (s3: repository)"
echo "Cairn $CAIRN_REV (S3 pool, object lock compliance) vs $others, on versitygw $("$VGW" --version 2>/dev/null | head -1 | awk '{print $NF}') on 127.0.0.1"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), buckets on $(df -T "$RUN" | awk 'NR==2 {print $2}') ($RUN); everything under nice -n 10"
echo "tree: $TREE: $TREE_FILES files, $(awk -v b="$TREE_BYTES" 'BEGIN {printf "%.0f", b/1e6}') MB"
if [ "$COLD" = yes ]; then echo "each timed step starts with: sync; echo 3 > /proc/sys/vm/drop_caches"; else echo "the page cache is not dropped (warm for both; DROP_CACHES=1 as root drops it)"; fi
echo "s = wall seconds, MB/s = tree bytes / s, CPU = user+sys seconds (cairn: the dev process + the CLI; restic: its process; not versitygw's),"
echo "RSS = peak resident MB (cairn: the dev process, which holds every role, + the CLI; restic: its process)"
for n in $(seq 1 "$RUNS"); do
	systems=(cairn)
	[ -n "$BASE_BIN" ] && systems+=(base)
	[ "${SKIP_RESTIC:-}" = 1 ] || systems+=(restic)
	# Rotate the order, run by run: whoever goes first meets a fresher store.
	k=$(((n - 1) % ${#systems[@]}))
	order=("${systems[@]:k}" "${systems[@]:0:k}")
	log "run $n of $RUNS: ${order[*]}"
	for sys in "${order[@]}"; do
		case $sys in
		cairn) run_cairn "$n" ;;
		base) run_cairn "$n" base "$BASE_BIN" ;;
		restic) run_restic "$n" ;;
		esac
	done
	echo
	echo "run $n:"
	[ "${SKIP_RESTIC:-}" = 1 ] || table "$n"
	[ -z "$BASE_BIN" ] || base_table "$n"
done
if [ "$RUNS" -gt 1 ]; then
	echo
	echo "ranges over $RUNS runs (min-max):"
	awk -F'\t' -v bytes="$TREE_BYTES" '
	function upd(k, v) { if (!(k in lo) || v < lo[k]) lo[k] = v; if (!(k in hi) || v > hi[k]) hi[k] = v }
	{ k = $2 "/" $3; mbs[$1, k] = bytes / 1e6 / $4; upd(k " MB/s", mbs[$1, k]); upd(k " CPU s", $5); upd(k " RSS MB", $6); runs[$1] = 1 }
	END {
		split("backup restore", ops, " ")
		for (r in runs) for (i = 1; i <= 2; i++) {
			if (("restic/" ops[i] " MB/s") in lo) upd(ops[i] " ratio", mbs[r, "cairn/" ops[i]] / mbs[r, "restic/" ops[i]])
			if (("base/" ops[i] " MB/s") in lo) upd(ops[i] " this/baseline", mbs[r, "cairn/" ops[i]] / mbs[r, "base/" ops[i]])
		}
		n = split("cairn/backup MB/s|base/backup MB/s|restic/backup MB/s|backup ratio|backup this/baseline|cairn/restore MB/s|base/restore MB/s|restic/restore MB/s|restore ratio|restore this/baseline|cairn/backup CPU s|base/backup CPU s|cairn/restore CPU s|base/restore CPU s|cairn/backup RSS MB|base/backup RSS MB|restic/backup RSS MB|cairn/restore RSS MB|base/restore RSS MB|restic/restore RSS MB", keys, "|")
		for (i = 1; i <= n; i++) if (keys[i] in lo) printf "  %-24s %8.2f - %-8.2f\n", keys[i], lo[keys[i]], hi[keys[i]]
	}' "$RESULTS"
fi
echo
echo "raw results: $RESULTS (run, system, op, seconds, cpu seconds, peak RSS MB, stored bytes)"
