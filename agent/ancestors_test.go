package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

// TestRestoreAncestors: a subtree restored alone comes with the
// directories above it, which the plan marks as ancestors. Missing, they
// are created with their backed-up mode, owner and times, also when their
// entries come after what lies below them (a chain read out of order);
// there already, they are left as they are, a symlink in their place too.
func TestRestoreAncestors(t *testing.T) {
	needRoot(t, "the directories belong to another user")
	root := t.TempDir()
	src := filepath.Join(root, "src")
	ssh := filepath.Join(src, "home", "bob", ".ssh")
	mustWrite(t, filepath.Join(ssh, "authorized_keys"), []byte("ssh-ed25519 AAAA bob\n"), 0o600)
	mustWrite(t, filepath.Join(src, "home", "bob", "not-chosen"), []byte("x"), 0o644)
	for _, d := range []string{filepath.Join(src, "home", "bob"), ssh, filepath.Join(ssh, "authorized_keys")} {
		mustDo(t, os.Lchown(d, 1234, 5678))
	}
	mustDo(t, os.Chmod(filepath.Join(src, "home", "bob"), 0o700))
	mustDo(t, os.Chmod(ssh, 0o700))
	mustDo(t, unix.Setxattr(filepath.Join(src, "home", "bob"), "user.home", []byte("bob's"), 0))
	for _, d := range []string{ssh, filepath.Join(src, "home", "bob"), filepath.Join(src, "home"), src} {
		mustDo(t, unix.UtimesNano(d, []unix.Timespec{{Sec: 1500000000}, {Sec: 1400000000}}))
	}
	stream, _ := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{src}}})
	paths, recs := entryRecords(t, stream)
	ancestors := []string{src, filepath.Join(src, "home"), filepath.Join(src, "home", "bob")}
	var above, chosen []record
	for i, p := range paths {
		switch {
		case fileindex.Within(p, ssh):
			chosen = append(chosen, recs[i]...)
		case slices.Contains(ancestors, p):
			above = append(above, recs[i]...)
		}
	}
	restore := func(dst string, force bool, rs ...[]record) RestoreStats {
		t.Helper()
		r, err := NewRestorer(RestoreOptions{Root: dst, Force: force})
		mustDo(t, err)
		for _, a := range ancestors {
			r.Ancestor(a)
		}
		for _, list := range rs {
			for _, rec := range list {
				mustDo(t, r.Record(rec.t, rec.body))
			}
		}
		st, err := r.Finish()
		mustDo(t, err)
		return st
	}
	meta := func(p string) (mode, uid uint32, mtime int64) {
		t.Helper()
		var st unix.Stat_t
		mustDo(t, unix.Lstat(p, &st))
		return st.Mode & 0o7777, st.Uid, st.Mtim.Nano()
	}

	// Into an empty target, in plan order and with the ancestors last.
	for name, order := range map[string][][]record{"in order": {above, chosen}, "ancestors last": {chosen, above}} {
		dst := filepath.Join(t.TempDir(), "r")
		st := restore(dst, false, order...)
		if st.WarningCount != 0 || st.Refused != 0 {
			t.Fatalf("%s: %+v", name, st)
		}
		for _, p := range append(ancestors, ssh) {
			wm, wu, wt := meta(p)
			if gm, gu, gt := meta(dst + p); gm != wm || gu != wu || gt != wt {
				t.Errorf("%s: %s restored %o uid %d mtime %d, want %o uid %d mtime %d", name, p, gm, gu, gt, wm, wu, wt)
			}
		}
		if v, err := unix.Getxattr(dst+filepath.Join(src, "home", "bob"), "user.home", make([]byte, 64)); err != nil || v != 5 {
			t.Errorf("%s: the ancestor's xattr: %d, %v", name, v, err)
		}
		if exists(dst + filepath.Join(src, "home", "bob", "not-chosen")) {
			t.Errorf("%s: restored what was not chosen", name)
		}
	}

	// Into a live tree: the parents there keep their mode and owner, and
	// get no xattr.
	dst := t.TempDir()
	live := dst + filepath.Join(src, "home", "bob")
	mustDo(t, os.MkdirAll(live, 0o755))
	mustDo(t, os.Chmod(live, 0o751))
	st := restore(dst, true, above, chosen)
	if st.WarningCount != 0 || st.Refused != 0 {
		t.Fatalf("live tree: %+v", st)
	}
	if m, u, _ := meta(live); m != 0o751 || u != 0 {
		t.Fatalf("live tree: the existing parent became %o uid %d", m, u)
	}
	if n, _ := unix.Getxattr(live, "user.home", nil); n > 0 {
		t.Fatal("live tree: the existing parent got the backup's xattr")
	}
	if m, u, _ := meta(dst + ssh); m != 0o700 || u != 1234 {
		t.Fatalf("live tree: the chosen directory is %o uid %d", m, u)
	}

	// A symlink where a parent goes stays, and what lies below is
	// refused, saying why.
	dst = t.TempDir()
	elsewhere := t.TempDir()
	mustDo(t, os.MkdirAll(filepath.Dir(dst+filepath.Join(src, "home")), 0o755))
	mustDo(t, os.Symlink(elsewhere, dst+filepath.Join(src, "home")))
	st = restore(dst, true, above, chosen)
	if fi, err := os.Lstat(dst + filepath.Join(src, "home")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink in a parent's place was replaced: %v %v", fi, err)
	}
	if names, _ := os.ReadDir(elsewhere); len(names) != 0 {
		t.Fatalf("the restore went through the symlink: %v", names)
	}
	if st.Refused == 0 || !strings.Contains(st.Warnings[0].Err, "not a directory") {
		t.Fatalf("below the symlink: %+v", st)
	}
}
