#!/usr/bin/env bash
# Installs the tools Cairn's tests use when they are missing. Tests that need
# a tool fail (they never skip) under CI, so this runs before them.
set -euo pipefail

need_pkgs=()
# command -> Debian package
declare -A tools=(
	[mount]=mount
	[cp]=coreutils
	[/usr/sbin/mtx]=mtx
	# packaging/deb_test.go: units verified, man pages found, libc read
	[systemd-analyze]=systemd
	[man]=man-db
	[objdump]=binutils
	# internal/sshdtest: a real OpenSSH sshd serving the SFTP pool tests
	[/usr/sbin/sshd]=openssh-server
)
for cmd in "${!tools[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("${tools[$cmd]}")
done
# 'go test -race' builds with cgo: a C compiler and the C library's headers
# and start files, which a fresh Debian lacks ("-race requires cgo"). gcc
# only recommends libc6-dev, and recommends are not installed below.
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc)
[ -e /usr/include/stdlib.h ] || need_pkgs+=(libc6-dev)
# integration/appsteps_test.go: a throwaway PostgreSQL cluster (initdb,
# pg_ctl) dumped by a command source; the server's programs are not on
# PATH, so look where Debian puts them.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)

if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "installing: ${need_pkgs[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "need root to install ${need_pkgs[*]}; run: sudo apt-get install -y ${need_pkgs[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# nats-server: the cluster tests (integration/cluster*_test.go) run a real
# 3-node NATS cluster. It is a Go program: installed with the Go toolchain
# into $(go env GOPATH)/bin, where the tests also look for it.
if ! command -v nats-server >/dev/null 2>&1 && ! [ -x "$(go env GOPATH)/bin/nats-server" ]; then
	echo "installing: nats-server (go install)"
	go install github.com/nats-io/nats-server/v2@v2.15.2
fi

# versitygw: the S3 pool tests (internal/s3test) run a real S3 server that
# enforces object lock. A Go program too, but it takes about 3 minutes to
# build cold: it builds in the background, niced, into a staging directory
# and is moved into $(go env GOPATH)/bin whole when done, while the rest of
# make test goes on; the marker file holds the build's process id, and
# internal/s3test waits for the binary while that process lives.
gobin="$(go env GOPATH)/bin"
if ! command -v versitygw >/dev/null 2>&1 && ! [ -x "$gobin/versitygw" ]; then
	marker="$gobin/.versitygw-building"
	if ! { [ -f "$marker" ] && kill -0 "$(cat "$marker")" 2>/dev/null; }; then
		echo "installing: versitygw (go install, in the background)"
		mkdir -p "$gobin"
		stage=$(mktemp -d)
		(
			if GOBIN="$stage" nice go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 >"$stage/build.log" 2>&1; then
				mv "$stage/versitygw" "$gobin/versitygw"
			else
				cat "$stage/build.log" >&2
			fi
			rm -f "$marker"
		) </dev/null &
		echo $! >"$marker"
	fi
fi

# nfpm, which 'make deb' runs with 'go run' (packaging/deb_test.go builds
# the package): fetched and built once here into the Go caches, at the
# version packaging/build-deb.sh names, so the test does not wait for it.
nfpm=$(sed -n 's/^NFPM=//p' "$(dirname "$0")/../packaging/build-deb.sh")
go run "$nfpm" --version >/dev/null
