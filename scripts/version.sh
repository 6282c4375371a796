#!/bin/sh
# Prints Cairn's version, from git: the one 'cairn --version' says and the
# Debian package carries, so it must sort as dpkg sorts.
#   on a tag v1.2.3               1.2.3
#   5 commits after it            1.2.3+5.gabcdef012345
#   before any tag                0.0.0+412.gabcdef012345 (412 commits)
#   with uncommitted changes      1.2.3+0.dirty, 1.2.3+5.gabcdef012345.dirty
#   on a tag v2.0.0-rc1           2.0.0~rc1 (before 2.0.0, as dpkg sorts ~)
# CAIRN_VERSION, when set, wins (a release build); outside a git checkout
# without it: 0.0.0+unknown.
set -eu

if [ -n "${CAIRN_VERSION:-}" ]; then
	echo "$CAIRN_VERSION"
	exit 0
fi
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "0.0.0+unknown"
	exit 0
fi
sha=$(git rev-parse --short=12 HEAD)
if d=$(git describe --tags --match 'v[0-9]*' --long --abbrev=12 2>/dev/null); then
	# v1.2.3-5-gabcdef012345
	n=${d%-g*}
	n=${n##*-}
	tag=${d%-*-g*}
	v=$(echo "${tag#v}" | sed 's/-/~/')
	[ "$n" = 0 ] || v="$v+$n.g$sha"
else
	v="0.0.0+$(git rev-list --count HEAD).g$sha"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	case $v in
	*+*) v="$v.dirty" ;;
	*) v="$v+0.dirty" ;;
	esac
fi
echo "$v"
