#!/usr/bin/env bash
# Issue 5's benchmark, in one run: backups through the storage node to an
# emulated LTO-9 library on the real clock with spooling off and on, side
# by side (MB/s, drive stops per GiB, the drive's rate), then the time and
# the tape bytes of restoring one file as the tape fills (10, 50 and 200
# sessions of 40 MiB, the last filling the cartridge). bench/README.md
# explains the figures.
#
#   bench/tape.sh                      # one run, about 6 minutes
#   RUNS=3 bench/tape.sh               # three runs, for ranges
#   CAIRN_BENCH_TAPE_MB=4096 bench/tape.sh          # bigger backups
#   CAIRN_BENCH_SPOOL_MB=1024 CAIRN_BENCH_TAPE_SESSIONS=400 bench/tape.sh
#   CAIRN_BENCH_TAPE_SESSION_MB=100 bench/tape.sh   # a 20 GiB cartridge
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
echo "== backup to an emulated LTO-9 drive, spooling off and on ($((${CAIRN_BENCH_TAPE_MB:-1024})) MiB a backup)"
go test -run '^$' -bench '^BenchmarkTapeBackup$' -benchtime 1x -count "$RUNS" -timeout 60m ./storagenode | grep -E '^Benchmark'
echo "== one file restored as the tape fills"
go test -run '^$' -bench '^BenchmarkTapeRestoreOneFile$' -benchtime 1x -count "$RUNS" -timeout 60m -v ./storagenode | grep -E 'sessions='
