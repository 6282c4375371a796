#!/usr/bin/env bash
# fuzz.sh runs every fuzz target in the tree (every func Fuzz* that
# `go test -list` finds), one after another, each for FUZZTIME, and prints
# per target the executions and whether it found a failure. It exits
# non-zero when any target found one; the failing input is then in the
# package's testdata/fuzz/<Target>/, where it stays as a regression test.
#
#   scripts/fuzz.sh [package ...]            default ./...
#   FUZZTIME=5m FUZZPARALLEL=1 scripts/fuzz.sh
#   FUZZSAVE=1 FUZZTIME=5m scripts/fuzz.sh   and keep what the runs found
#
# FUZZSAVE=1 copies each target's generated corpus (the new inputs go
# found, kept in its build cache) into the package's testdata/fuzz/<Target>/,
# to be committed: later runs, and the plain unit tests, start from there.
#
# One target at a time with -parallel 1 by default: the machines are small
# and shared, and a fuzzer takes every core it is given. FUZZMINIMIZETIME
# bounds the minimizing of each new input (go's default, 60s, would eat a
# short run).
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-3s}
FUZZPARALLEL=${FUZZPARALLEL:-1}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-10s}
FUZZSAVE=${FUZZSAVE:-}
LOGDIR=${FUZZLOGDIR:-$(mktemp -d)}
mkdir -p "$LOGDIR" || { echo "fuzz.sh: cannot make the log directory $LOGDIR" >&2; exit 2; }
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)

# Only packages whose tests mention a fuzz target are compiled for -list.
mapfile -t testpkgs < <($GO list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' "${pkgs[@]}" |
	while read -r path dir files; do
		for f in $files; do
			if grep -q '^func Fuzz' "$dir/$f"; then
				echo "$path $dir"
				break
			fi
		done
	done)
cache="$($GO env GOCACHE)/fuzz"

failed=0
results=()
for entry in "${testpkgs[@]}"; do
	[ -n "$entry" ] || continue
	pkg=${entry%% *}
	dir=${entry#* }
	# -list compiles the package's tests; only Fuzz* names are wanted.
	mapfile -t targets < <($GO test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz')
	for t in "${targets[@]}"; do
		[ -n "$t" ] || continue
		log="$LOGDIR/$(echo "$pkg" | tr / _).$t.log"
		start=$(date +%s)
		$GO test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" -parallel "$FUZZPARALLEL" "$pkg" >"$log" 2>&1
		rc=$?
		# Go's fuzzer may end a run that found nothing with "context
		# deadline exceeded" when -fuzztime runs out while a worker is busy
		# (a loaded machine): no input is written, so there is nothing to
		# report. It runs once more; a real finding writes its input.
		if [ $rc -ne 0 ] && ! grep -q 'Failing input written to' "$log" && grep -q 'context deadline exceeded' "$log"; then
			echo "fuzz: $pkg $t: the fuzzer's deadline ran out with no finding; running it again" >&2
			$GO test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" -parallel "$FUZZPARALLEL" "$pkg" >"$log" 2>&1
			rc=$?
		fi
		secs=$(($(date +%s) - start))
		# The last progress line: "fuzz: elapsed: 3s, execs: 12345 (4115/sec), new interesting: 2 (total: 30)".
		last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1)
		execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
		newc=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
		total=$(sed -nE 's/.*\(total: ([0-9]+)\).*/\1/p' <<<"$last")
		if [ $rc -eq 0 ]; then
			found="none"
		else
			failed=1
			input=$(sed -nE 's/.*(testdata\/fuzz\/[^ ]+).*/\1/p' "$log" | head -n 1)
			found="FOUND ${input:-(see $log)}"
			echo "---- $pkg $t failed:" >&2
			tail -n 40 "$log" >&2
		fi
		if [ -n "$FUZZSAVE" ] && [ -d "$cache/$pkg/$t" ]; then
			mkdir -p "$dir/testdata/fuzz/$t"
			cp -n "$cache/$pkg/$t"/* "$dir/testdata/fuzz/$t/" 2>/dev/null || true
		fi
		# A run whose time ran out while it still replayed the committed
		# corpus (the "baseline coverage" every fuzz run starts with) made
		# no new inputs: it says how far it got, not "execs 0". The plain
		# `go test` of the package runs every committed input anyway.
		base=$(grep -E 'gathering baseline coverage: [0-9]+/[0-9]+' "$log" | tail -n 1 | sed -nE 's/.*coverage: ([0-9]+\/[0-9]+).*/\1/p')
		if [ -z "$last" ] && [ -n "$base" ]; then
			line=$(printf '%-48s %-30s corpus replayed %s, no time left to mutate  %4ss  %s' "$pkg" "$t" "$base" "$secs" "$found")
		else
			line=$(printf '%-48s %-30s execs %10s  new %5s  corpus %6s  %4ss  %s' "$pkg" "$t" "${execs:-0}" "${newc:-0}" "${total:-0}" "$secs" "$found")
		fi
		echo "$line"
		results+=("$line")
	done
done

echo
echo "fuzz summary (FUZZTIME=$FUZZTIME, -parallel $FUZZPARALLEL, $(go version | cut -d' ' -f3), logs in $LOGDIR):"
printf '%s\n' "${results[@]}"
exit $failed
