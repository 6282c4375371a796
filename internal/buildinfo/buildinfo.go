// Package buildinfo says which build of Cairn is running: the version and
// commit that 'make build' and 'make deb' stamp into the binary at link
// time, or, in a binary built without them (go build, go install), what
// the Go toolchain recorded. Every role reports the same version: the
// servers record it for each storage node and agent, and 'cairn --version'
// prints it.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Set at link time (see the Makefile):
//
//	-ldflags "-X github.com/cairnbackup/cairn/internal/buildinfo.version=1.2.3
//	          -X github.com/cairnbackup/cairn/internal/buildinfo.commit=SHA"
var (
	version string
	commit  string
)

// Devel is the version of a build that carries neither a stamp nor a
// module version: 'go build' with -buildvcs=false, or in a git worktree.
const Devel = "devel"

// Version is the release this binary was built from: the stamp, else the
// module version the toolchain recorded, without its "v" (the tag of 'go
// install ...@vX.Y.Z', or in a checkout a pseudo-version naming the commit,
// 0.0.0-TIME-SHA), else Devel.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return strings.TrimPrefix(v, "v")
		}
	}
	return Devel
}

// Commit is the commit this binary was built from: the stamp, else the
// revision the toolchain recorded (with "-dirty" when the tree had changes;
// none is recorded under -buildvcs=false), else "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
