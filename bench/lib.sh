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
