# Measuring helpers of the benchmarks that run Cairn and restic side by
# side (e2e.sh, s3.sh, consolidate.sh), sourced by them.

CLK_TCK=$(getconf CLK_TCK)
now() { date +%s.%N; }
# cpu_secs PID: user+system seconds the process has used so far.
cpu_secs() { awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12+$13)/t }' "/proc/$1/stat"; }
# steal_secs: the seconds the host gave this virtual machine's cores to
# others so far (all cores summed; 0 on bare metal). A run with much of it
# says more of the host than of what was measured.
steal_secs() { awk -v t="$CLK_TCK" '/^cpu / {printf "%.1f", $9/t}' /proc/stat; }
# hwm_mb PID: the process's peak resident set (VmHWM) in MB.
hwm_mb() { awk '/^VmHWM:/ {printf "%.0f", $2*1024/1e6}' "/proc/$1/status"; }
# reset_hwm PID: start VmHWM afresh, so each step reports its own peak.
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }
# timev FILE KEY: a value from /usr/bin/time -v output.
timev() { awk -F': ' -v k="$2" 'index($0, k) {print $2}' "$1"; }
time_cpu() { echo "$(timev "$1" 'User time (seconds)') $(timev "$1" 'System time (seconds)')" | awk '{printf "%.2f", $1+$2}'; }
time_rss_mb() { timev "$1" 'Maximum resident set size (kbytes)' | awk '{printf "%.0f", $1*1024/1e6}'; }
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
# record RUN SYSTEM OP SECONDS CPU RSS_MB STORED, to $RESULTS.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }
# build_baseline: BASELINE_REV and BASELINE_BIN, the binary of the
# revision BASELINE of $REPO, built out of git once into $WORK/bin.
build_baseline() {
	BASELINE_REV=$(cd "$REPO" && git rev-parse --short "$BASELINE") || die "BASELINE=$BASELINE is not a revision of $REPO"
	BASELINE_BIN=$WORK/bin/cairn-$BASELINE_REV
	[ -x "$BASELINE_BIN" ] && return 0
	log "building cairn $BASELINE_REV (the baseline)"
	local src=$WORK/src-$BASELINE_REV
	rm -rf "$src" && mkdir -p "$src" "$WORK/bin"
	(cd "$REPO" && git archive "$BASELINE_REV") | tar -x -C "$src"
	(cd "$src" && go build -o "$BASELINE_BIN" ./cmd/cairn)
	rm -rf "$src"
}
# release_target DIR: DIR gone, unmounted first if a file system of
# new_fs is mounted there, and its image gone.
release_target() {
	if mountpoint -q "$1"; then umount "$1" || die "umount $1 failed"; fi
	rm -rf "$1" "$1.img"
}
# new_fs DIR BYTES INODES: a new, empty ext4 mounted on DIR, its inode
# tables and journal written now, not by a kernel thread during the timing.
# The loop device reads and writes its image with direct I/O, as a disk of
# its own would: no second copy of every block in the page cache. The image
# is allocated whole first (fallocate), as a disk of its own has its blocks:
# a sparse image had the file system under it allocate blocks during the
# timing, which a disk of its own does not do (bench/README.md, "Loop
# images allocated whole", has what was seen by hand).
new_fs() {
	mkdir -p "$1"
	fallocate -l "$2" "$1.img" 2>/dev/null || truncate -s "$2" "$1.img"
	mkfs.ext4 -q -F -N "$3" -E lazy_itable_init=0,lazy_journal_init=0 "$1.img" ||
		die "mkfs.ext4 of $1.img failed"
	mount -o loop "$1.img" "$1" || die "mount -o loop $1.img $1 failed: are loop devices available? (or set RESTORE_FS=here and TREE_FS=here)"
	losetup --direct-io=on "$(findmnt -n -o SOURCE "$1")" || die "losetup --direct-io=on for $1 failed"
	rmdir "$1/lost+found" # the target must be empty
}
# tree_fs DIR SCALE: new_fs on DIR sized SCALE times the tree's bytes and
# files, and 1 GiB and 100,000 inodes more.
tree_fs() { new_fs "$1" "$((TREE_BYTES * $2 + (1 << 30)))" "$((TREE_FILES * $2 + 100000))"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# make_tree: TREE, the tree bench/gentree makes for TREE_SIZE, SMALL_FILES
# and ONE_FILE, made once and kept (its name says what it holds), and
# TREE_BYTES and TREE_FILES, what it holds.
make_tree() {
	local gentree_args
	TREE=$WORK/tree-$TREE_SIZE-$SMALL_FILES
	gentree_args=(-size "$TREE_SIZE" -small-files "$SMALL_FILES")
	if [ "$ONE_FILE" = 1 ]; then
		TREE=$WORK/tree-$TREE_SIZE-one
		gentree_args=(-size "$TREE_SIZE" -one-file)
	fi
	if [ ! -f "$TREE.done" ]; then
		rm -rf "$TREE"
		log "generating the tree in $TREE (once)"
		(cd "$REPO" && go run ./bench/gentree -root "$TREE" "${gentree_args[@]}") | tee "$TREE.done"
	fi
	TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s}')
	TREE_FILES=$(find "$TREE" -type f | wc -l)
}
# start_dev DIR BIN: `BIN dev` serving client $CLIENT from DIR/data, on
# free ports, its log in DIR/dev.log, until the client is online; DEV_PID
# is its process. CAIRN_NATS and CAIRN_DEV_FILE point the admin commands
# at it. PPROF_ADDR, when set, has it serve net/http/pprof there.
start_dev() {
	local d=$1 bin=$2 nats raft extra=()
	nats=$(free_port)
	raft=$(free_port)
	export CAIRN_NATS=nats://127.0.0.1:$nats
	[ -n "${PPROF_ADDR:-}" ] && extra+=(--pprof-addr "$PPROF_ADDR")
	launch_dev "$d" "$bin" --data "$d/data" --nats-port "$nats" --raft-addr "127.0.0.1:$raft" \
		--metrics-addr "" --client "$CLIENT" "${extra[@]}"
}
# stop_dev: the cairn dev of start_dev or launch_dev, if any, killed and
# waited for; DEV_PID empty again.
DEV_PID=
stop_dev() {
	[ -n "$DEV_PID" ] || return 0
	kill "$DEV_PID" 2>/dev/null || true
	wait "$DEV_PID" 2>/dev/null || true
	DEV_PID=
}
# launch_dev DIR BIN ARGS...: `BIN dev ARGS...` (under DEV_PREFIX, a
# command such as `nice -n 10`, when set), its log in DIR/dev.log, until
# client $CLIENT is online; DEV_PID is its process. The caller exports
# CAIRN_NATS with the port the arguments give it; CAIRN_DEV_FILE points
# the admin commands at its client file.
launch_dev() {
	local d=$1 bin=$2
	shift 2
	# cairn dev's client file (URL and admin seed), which the admin
	# commands read: here rather than in /run/cairn or ~/.config.
	export CAIRN_DEV_FILE=$d/dev-client.json
	${DEV_PREFIX:-} "$bin" dev "$@" >>"$d/dev.log" 2>&1 &
	DEV_PID=$!
	local deadline=$((SECONDS + 60))
	# The client file first: asked before it exists, the command connects
	# with no credentials, and the dev log shows an authentication error.
	until [ -s "$CAIRN_DEV_FILE" ] && "$bin" client list 2>/dev/null | awk -v c="$CLIENT" '$1 == c && $3 == "online" {f=1} END {exit !f}'; do
		kill -0 "$DEV_PID" 2>/dev/null || die "cairn dev exited; see $d/dev.log"
		[ $SECONDS -lt $deadline ] || die "client $CLIENT not online after 60s; see $d/dev.log"
		sleep 0.2
	done
}
