#!/bin/sh
# Builds the Debian package of Cairn: the binary stamped with its version,
# a man page per command and the bash completion generated from it, then the
# .deb with nfpm (run through the Go toolchain, which caches its build).
# 'make deb' runs it from the repository's root. Environment:
#   BIN    the binary to build (bin/cairn)
#   DIST   where the .deb goes (dist)
#   CAIRN_VERSION, CAIRN_COMMIT   default: scripts/version.sh, git rev-parse HEAD
set -eu

GO=${GO:-go}
BIN=${BIN:-bin/cairn}
DIST=${DIST:-dist}
VERSION=$(./scripts/version.sh)
COMMIT=${CAIRN_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
arch=$($GO env GOARCH)

# The pages and the package carry the commit's time, not the build's, so
# that one commit builds the same package.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

pkg=github.com/cairnbackup/cairn/internal/buildinfo
mkdir -p "$(dirname "$BIN")" "$DIST"
# cgo on: the agent names files' owners through the C library's NSS, so
# LDAP and other directory users are named, not only /etc/passwd's.
CGO_ENABLED=1 $GO build -ldflags "-s -w -X $pkg.version=$VERSION -X $pkg.commit=$COMMIT" -o "$BIN" ./cmd/cairn

# dist holds the package just built, so that 'dpkg -i dist/cairn_*.deb'
# installs that one.
rm -f "$DIST"/cairn_*.deb

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
# A clean environment, so that no CAIRN_NATS* of the build host ends up as
# a default in the pages ('cairn man' takes care of its name).
env -i PATH="$PATH" SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$BIN" man --dir "$gen/man"
gzip -9n "$gen"/man/*.1
mkdir -p "$gen/completion"
env -i PATH="$PATH" "$BIN" completion bash >"$gen/completion/cairn"

# The C library the binary links: the newest symbol version it uses is the
# oldest libc6 it runs with.
glibc=$(objdump -T "$BIN" | sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -uV | tail -n 1)
libc_depends="libc6${glibc:+ (>= $glibc)}"

CAIRN_VERSION=$VERSION CAIRN_ARCH=$arch CAIRN_BIN=$BIN CAIRN_GEN=$gen CAIRN_LIBC_DEPENDS=$libc_depends \
	$GO run $NFPM package --config packaging/nfpm.yaml --packager deb --target "$DIST/cairn_${VERSION}_$arch.deb"
echo "$DIST/cairn_${VERSION}_$arch.deb"
