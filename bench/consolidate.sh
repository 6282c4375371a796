#!/usr/bin/env bash
# A synthetic full against its baseline, side by side in one run: a 1 GiB
# tree backed up full, changed twice (appends, new, deleted and renamed
# files) with an incremental after each, then
#   - synthetic: `cairn backup consolidate` of that chain, on the storage
#     node alone;
#   - baseline: what it replaces, a restore of the same point in time into
#     a directory and a fresh full backup of what was restored.
# Both run against one `cairn dev`, one after the other, RUNS times in
# alternating order, and each reports wall seconds, tree MB/s, and the bytes
# it read and wrote.
#
#   nice bench/consolidate.sh
#   RUNS=3 TREE_SIZE=268435456 nice bench/consolidate.sh
#
# No root needed; as root the page cache is dropped before every timed step.
# See bench/README.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/lib.sh"
WORK=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench-consolidate}
RUNS=${RUNS:-1}
TREE_SIZE=${TREE_SIZE:-1073741824}
SMALL_FILES=${SMALL_FILES:-50000}
CLIENT=bench

die() { echo "consolidate: $*" >&2; exit 1; }
log() { echo "consolidate: $*" >&2; }
command -v jq >/dev/null || die "needs jq"

mkdir -p "$WORK/bin"
log "building cairn from $REPO"
(cd "$REPO" && go build -o "$WORK/bin/cairn" ./cmd/cairn)
CAIRN=$WORK/bin/cairn
REV=$(cd "$REPO" && git rev-parse --short HEAD)

TREE=$WORK/tree-$TREE_SIZE-$SMALL_FILES
if [ ! -f "$TREE.done" ]; then
	rm -rf "$TREE"
	log "generating the tree in $TREE (once)"
	(cd "$REPO" && go run ./bench/gentree -root "$TREE" -size "$TREE_SIZE" -small-files "$SMALL_FILES") >"$TREE.done"
fi

drop_caches() {
	sync
	if [ "$(id -u)" -eq 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
trap stop_dev EXIT

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# change SRC ROUND: about 5% of the tree's bytes, as a day of work does.
change() {
	local src=$1 round=$2 i=0 f
	while IFS= read -r f; do
		i=$((i + 1))
		case $((i % 40)) in
		0) head -c 65536 /dev/urandom >>"$f" ;;            # appended to
		1) rm -f "$f" ;;                                   # deleted
		2) mv "$f" "$f.r$round" ;;                         # renamed
		esac
	done < <(find "$src" -type f -size -64k | sort | head -n 4000)
	mkdir -p "$src/new-$round"
	for i in $(seq 1 200); do head -c 32768 /dev/urandom >"$src/new-$round/f$i"; done
	find "$src" -type f -size +1M | sort | head -n 3 | while IFS= read -r f; do
		head -c $((8 << 20)) /dev/urandom >>"$f"
	done
}

run() {
	local n=$1 d=$WORK/run
	rm -rf "$d" && mkdir -p "$d"
	start_dev "$d" "$CAIRN"
	local src=$d/src
	cp -a "$TREE" "$src"
	log "run $n: full backup and two incrementals of $src"
	"$CAIRN" backup --client "$CLIENT" --path "$src" --level full --wait --json >"$d/full.json"
	change "$src" 1
	"$CAIRN" backup --client "$CLIENT" --path "$src" --wait --json >"$d/incr1.json"
	change "$src" 2
	"$CAIRN" backup --client "$CLIENT" --path "$src" --wait --json >"$d/incr2.json"
	local tree_bytes chain_stored
	tree_bytes=$(find "$src" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s}')
	chain_stored=$(jq -s 'map(.stored_bytes) | add' "$d/full.json" "$d/incr1.json" "$d/incr2.json")
	local incr2 fileset
	incr2=$(jq .backup_id "$d/incr2.json")
	fileset=$("$CAIRN" backup list --client "$CLIENT" --json | jq -r ".[] | select(.id == $incr2) | .file_set")

	local order=(synthetic baseline)
	[ $((n % 2)) -eq 0 ] && order=(baseline synthetic)
	for side in "${order[@]}"; do
		drop_caches
		local t0 t1 read written staged
		case $side in
		synthetic)
			t0=$(now)
			"$CAIRN" backup consolidate --client "$CLIENT" --fileset "$fileset" --pool Default --wait --json >"$d/synth.json"
			t1=$(now)
			local job
			job=$(jq .id "$d/synth.json")
			# What the node read: the job log's note of the records it took
			# from the chain; what it wrote: the session's stored bytes.
			local note
			note=$("$CAIRN" job show "$job" --json | jq -r '.log[].msg' | grep 'bytes of records')
			read=$(echo "$note" | sed -nE 's/.*read ([0-9]+) bytes of records.*/\1/p')
			staged=$(echo "$note" | sed -nE 's/.*chain, ([0-9]+) of them staged.*/\1/p')
			# Large files kept by blocks across the chain are assembled on
			# the node's disk too (the note says how many bytes, when any).
			local assembled
			assembled=$(echo "$note" | sed -nE 's/.*; ([0-9]+) bytes of large files assembled.*/\1/p')
			staged=$((staged + ${assembled:-0}))
			written=$(($(jq .stored_bytes "$d/synth.json") + staged))
			;;
		baseline)
			rm -rf "$d/restore"
			t0=$(now)
			"$CAIRN" restore --client "$CLIENT" --backup "$incr2" --to "$d/restore" --wait --json >"$d/restore.json"
			drop_caches
			"$CAIRN" backup --client "$CLIENT" --path "$d/restore$src" --level full --wait --json >"$d/refull.json"
			t1=$(now)
			# Read: the chain's volumes, then the restored tree; written: the
			# restored tree, then the new full's volumes.
			read=$((chain_stored + tree_bytes))
			written=$((tree_bytes + $(jq .stored_bytes "$d/refull.json")))
			staged=0
			rm -rf "$d/restore"
			;;
		esac
		local s
		s=$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$side" "$s" "$tree_bytes" "$read" "$written" "$staged" >>"$RESULTS"
	done
	stop_dev
}

for n in $(seq 1 "$RUNS"); do run "$n"; done

printf 'synthetic full of a %s-byte tree with two incrementals (cairn %s), %d run(s)\n' "$TREE_SIZE" "$REV" "$RUNS"
printf '%-4s %-10s %8s %8s %14s %14s %14s\n' run method s "MB/s" "bytes read" "bytes written" "of it on tmp"
awk -F'\t' '{printf "%-4s %-10s %8.2f %8.1f %14d %14d %14d\n", $1, $2, $3, $4/$3/1e6, $5, $6, $7}' "$RESULTS"
awk -F'\t' '
	{ mbs = $4/$3/1e6; if (!($2 in lo) || mbs < lo[$2]) lo[$2] = mbs; if (!($2 in hi) || mbs > hi[$2]) hi[$2] = mbs }
	END { for (m in lo) printf "%-10s MB/s %.1f-%.1f\n", m, lo[m], hi[m] }' "$RESULTS" | sort
