package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
)

func TestWalkIndexOrderAcrossOverlappingRoots(t *testing.T) {
	dir := t.TempDir()
	x := filepath.Join(dir, "x")
	for _, f := range []string{"a/b/c/f", "a/b/f", "a/b.c", "a/b0", "a/ä", "a/B", "a/-", "a.b/z", "a0", "b"} {
		mustWrite(t, filepath.Join(x, f), []byte(f), 0o644)
	}
	// Roots out of order, overlapping, one given twice, one not clean.
	roots := []string{filepath.Join(x, "a0"), filepath.Join(x, "a.b"), filepath.Join(x, "a", "b"), filepath.Join(x, "a") + "/", filepath.Join(x, "a.b"), filepath.Join(x, "b")}
	got := paths(walkAll(t, WalkOptions{Paths: roots}))
	want := slices.Clone(got)
	slices.SortFunc(want, fileindex.Compare)
	want = slices.Compact(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("walk order:\n%s\nwant index order:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Exactly the subtrees of the roots: ancestors are not emitted, and
	// /x/a/b (inside /x/a) once.
	var fromFind []string
	for _, r := range []string{"a", "a.b", "a0", "b"} {
		filepath.Walk(filepath.Join(x, r), func(p string, _ os.FileInfo, err error) error {
			fromFind = append(fromFind, p)
			return err
		})
	}
	slices.SortFunc(fromFind, fileindex.Compare)
	if !reflect.DeepEqual(got, fromFind) {
		t.Fatalf("walked %q\nwant %q", got, fromFind)
	}
	if got[0] != filepath.Join(x, "a") {
		t.Fatalf("first entry %s", got[0])
	}
	// /x/a/b's subtree comes before /x/a/b.c and /x/a.b.
	idx := func(p string) int { return slices.Index(got, filepath.Join(x, p)) }
	if !(idx("a/b/c/f") < idx("a/b.c") && idx("a/b.c") < idx("a.b") && idx("a/b0") < idx("a.b")) {
		t.Fatalf("order of a/b, a/b.c, a.b wrong: %q", got)
	}
}

func TestWalkMissingPath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	err := Walk(context.Background(), WalkOptions{Paths: []string{dir, missing}}, func(*fileindex.Entry) error {
		t.Fatal("entry emitted although a path is missing")
		return nil
	})
	var mp *MissingPathError
	if !errors.As(err, &mp) || mp.Path != missing {
		t.Fatalf("err = %v, want MissingPathError for %s", err, missing)
	}
	if err.Error() != "path "+missing+" does not exist on client" {
		t.Fatalf("message %q", err.Error())
	}
	if err := Walk(context.Background(), WalkOptions{Paths: []string{"relative/path"}}, nil); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("relative path: %v", err)
	}
	if err := Walk(context.Background(), WalkOptions{Paths: []string{dir}, Excludes: []string{"[x"}}, nil); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("bad pattern: %v", err)
	}
}

func TestWalkExcludes(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"keep.txt", "drop.tmp", "cache/big", "sub/cache/x", "sub/keep", "sub/deep/drop.tmp", "named/nested/x"} {
		mustWrite(t, filepath.Join(dir, f), []byte("x"), 0o644)
	}
	got := paths(walkAll(t, WalkOptions{Paths: []string{dir}, Excludes: []string{"*.tmp", "cache", filepath.Join(dir, "named", "nested")}}))
	var rel []string
	for _, p := range got {
		r, _ := filepath.Rel(dir, p)
		rel = append(rel, r)
	}
	want := []string{".", "keep.txt", "named", "sub", "sub/deep", "sub/keep"}
	if !reflect.DeepEqual(rel, want) {
		t.Fatalf("walked %q, want %q", rel, want)
	}
}

// A pattern with a slash is anchored: at each backup root when it does not
// start with one, at / when it does; one without a slash matches a name at
// any depth; a trailing slash matches directories only; ** matches any
// number of directories.
func TestWalkExcludePatterns(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, f := range []string{
		"a/var/cache/x", "a/srv/var/cache/y", "a/logs/app.log", "a/logs/old/app.log", "a/build", "a/src/build/x.o",
		"a/src/deep/er/build/y.o", "a/src/build.txt", "a/home/u/.cache/z", "a/home/v/.cache", "a/home/u/keep",
		"b/var/cache/x", "b/keep",
	} {
		mustWrite(t, filepath.Join(dir, f), []byte("x"), 0o644)
	}
	walked := func(excludes ...string) []string {
		var out []string
		for _, p := range paths(walkAll(t, WalkOptions{Paths: []string{a, b}, Excludes: excludes})) {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return out
	}
	all := walked()
	left := func(excludes ...string) []string {
		got := walked(excludes...)
		var out []string
		for _, p := range all {
			if !slices.Contains(got, p) {
				out = append(out, p)
			}
		}
		return out
	}
	for _, c := range []struct {
		excludes []string
		out      []string
	}{
		// Relative to each root: a/var/cache and b/var/cache, not a/srv/var/cache.
		{[]string{"var/cache"}, []string{"a/var/cache", "a/var/cache/x", "b/var/cache", "b/var/cache/x"}},
		// Absolute: that path only.
		{[]string{filepath.Join(a, "var", "cache")}, []string{"a/var/cache", "a/var/cache/x"}},
		// A name at any depth.
		{[]string{"app.log"}, []string{"a/logs/app.log", "a/logs/old/app.log"}},
		// Directories only: the directory build, not the file a/build.
		{[]string{"build/"}, []string{"a/src/build", "a/src/build/x.o", "a/src/deep/er/build", "a/src/deep/er/build/y.o"}},
		// ** for any number of directories.
		{[]string{"src/**/*.o"}, []string{"a/src/build/x.o", "a/src/deep/er/build/y.o"}},
		{[]string{"**/logs/**/app.log"}, []string{"a/logs/app.log", "a/logs/old/app.log"}},
		{[]string{"home/*/.cache/"}, []string{"a/home/u/.cache", "a/home/u/.cache/z"}},
	} {
		if got := left(c.excludes...); !reflect.DeepEqual(got, c.out) {
			t.Errorf("excludes %q left out %q, want %q", c.excludes, got, c.out)
		}
	}
	for _, bad := range []string{"", "a//b", "[x", "src/[x/*"} {
		if err := Walk(context.Background(), WalkOptions{Paths: []string{a}, Excludes: []string{bad}}, nil); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// A pattern that left nothing out is a warning: most likely a typo.
func TestSourceWarnsOfExcludesThatMatchNothing(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "var", "cache", "x"), []byte("x"), 0o644)
	_, st := runSource(t, SourceOptions{Walk: WalkOptions{Paths: []string{dir}, Excludes: []string{"var/cache", "var/cahce", "*.tmp"}}})
	var got []string
	for _, w := range st.Warnings {
		got = append(got, w.String())
	}
	if st.WarningCount != 2 || len(got) != 2 || !strings.Contains(got[0], `exclude pattern "var/cahce" left nothing out`) ||
		!strings.Contains(got[1], `"*.tmp"`) {
		t.Fatalf("warnings %q", got)
	}
}

// The walk reads entries with statx, for their attributes; what it makes of
// them is what lstat gives, device numbers included (a read compares them
// with fstat's).
func TestWalkStatxIsLstat(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), []byte("x"), 0o644)
	w, err := newWalker(context.Background(), WalkOptions{Paths: []string{dir}})
	mustDo(t, err)
	for _, p := range []string{"/", "/dev/null", "/proc/self", "/proc", "/sys", dir, filepath.Join(dir, "f"), "/dev"} {
		var want, got unix.Stat_t
		if err := unix.Lstat(p, &want); err != nil {
			continue
		}
		if _, err := w.lstatAt(unix.AT_FDCWD, p, &got); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if got != want {
			t.Errorf("%s: statx gives\n%+v\nlstat\n%+v", p, got, want)
		}
	}
}

func TestWalkEntryFields(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "file")
	mustWrite(t, f, []byte("hello"), 0o4751)
	mustDo(t, os.Lchown(f, 1234, 5678))
	mustDo(t, unix.Chmod(f, 0o4751)) // chown cleared setuid
	mustDo(t, unix.Setxattr(f, "user.note", []byte("v1"), 0))
	mustDo(t, unix.UtimesNano(f, []unix.Timespec{{Sec: 1600000000, Nsec: 123456789}, {Sec: 1500000000, Nsec: 987654321}}))
	mustDo(t, os.Symlink("../somewhere", filepath.Join(dir, "sl")))
	mustDo(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	mustDo(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	mustDo(t, os.Link(f, filepath.Join(dir, "zlink")))
	mustDo(t, os.Link(f, filepath.Join(dir, "alink")))
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	mustDo(t, err)
	defer l.Close()
	var warned, skipped []string
	es := walkAll(t, WalkOptions{Paths: []string{dir}, Warn: func(p string, err error) {
		warned = append(warned, p+": "+err.Error())
	}, Skipped: func(p string, why Skip) {
		skipped = append(skipped, p+": "+why.String())
	}})
	by := map[string]fileindex.Entry{}
	for _, e := range es {
		by[filepath.Base(e.Path)] = e
	}
	// A socket is left out and said so, without a warning: one in the
	// tree must not make every backup end with warnings.
	if _, ok := by["sock"]; ok || len(warned) != 0 || !slices.Equal(skipped, []string{filepath.Join(dir, "sock") + ": socket"}) {
		t.Fatalf("socket: emitted %v, warnings %q, skipped %q", ok, warned, skipped)
	}
	// alink sorts first, so it is the file and the others link to it.
	a, fe, z := by["alink"], by["file"], by["zlink"]
	if a.Type != fileindex.TypeFile || fe.Type != fileindex.TypeHardlink || fe.Target != a.Path || z.Type != fileindex.TypeHardlink || z.Target != a.Path {
		t.Fatalf("hard links: alink %v, file %v→%s, zlink %v→%s", a.Type, fe.Type, fe.Target, z.Type, z.Target)
	}
	if a.Mode != 0o4751 || a.UID != 1234 || a.GID != 5678 || a.Size != 5 || a.NLink != 3 ||
		a.MTime != 1500000000987654321 || a.ATime != 1600000000123456789 || a.CTime == 0 || a.Inode == 0 || a.Dev == 0 {
		t.Fatalf("file entry %+v", a)
	}
	if len(a.Xattrs) != 1 || a.Xattrs[0].Name != "user.note" || string(a.Xattrs[0].Value) != "v1" {
		t.Fatalf("xattrs %+v", a.Xattrs)
	}
	if s := by["sl"]; s.Type != fileindex.TypeSymlink || s.Target != "../somewhere" {
		t.Fatalf("symlink %+v", s)
	}
	if p := by["fifo"]; p.Type != fileindex.TypeFifo || p.Mode != 0o640 {
		t.Fatalf("fifo %+v", p)
	}
	if n := by["null"]; n.Type != fileindex.TypeCharDev || n.Rdev != unix.Mkdev(1, 3) {
		t.Fatalf("device %+v", n)
	}
	if root := by[filepath.Base(dir)]; root.Type != fileindex.TypeDir || root.User != "root" || root.Group != "root" {
		t.Fatalf("root entry %+v", root)
	}
}

func TestWalkOneFileSystem(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	mustDo(t, os.Mkdir(mnt, 0o755))
	mustWrite(t, filepath.Join(dir, "z"), []byte("z"), 0o644)
	mountTmpfs(t, mnt)
	mustWrite(t, filepath.Join(mnt, "inside"), []byte("x"), 0o644)
	all := paths(walkAll(t, WalkOptions{Paths: []string{dir}}))
	one := paths(walkAll(t, WalkOptions{Paths: []string{dir}, OneFileSystem: true}))
	if !slices.Contains(all, filepath.Join(mnt, "inside")) {
		t.Fatalf("without OneFileSystem: %q", all)
	}
	if want := []string{dir, mnt, filepath.Join(dir, "z")}; !reflect.DeepEqual(one, want) {
		t.Fatalf("with OneFileSystem: %q, want %q", one, want)
	}
}

func TestWalkStopsOnCallbackErrorAndContext(t *testing.T) {
	dir := t.TempDir()
	for i := range 200 {
		mustWrite(t, filepath.Join(dir, "f", string(rune('a'+i%26))+strings.Repeat("x", i/26)), nil, 0o644)
	}
	boom := errors.New("boom")
	n := 0
	err := Walk(context.Background(), WalkOptions{Paths: []string{dir}}, func(*fileindex.Entry) error {
		if n++; n == 5 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n != 5 {
		t.Fatalf("err %v after %d entries", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Walk(ctx, WalkOptions{Paths: []string{dir}}, func(*fileindex.Entry) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled walk: %v", err)
	}
}

// mountTmpfs mounts a small tmpfs on dir until the test ends: another
// filesystem below the walked tree. Mounting needs CAP_SYS_ADMIN (the tests
// run as root); without it the test fails under CAIRN_CI=1, and skips,
// loudly, elsewhere.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("cairn-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		if os.Getenv("CAIRN_CI") != "" {
			t.Fatalf("this test mounts a tmpfs, which needs root (CAP_SYS_ADMIN): %v", err)
		}
		t.Skipf("SKIPPED: this test mounts a tmpfs, which needs root (it fails instead under CAIRN_CI=1): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func walkAll(t testing.TB, opts WalkOptions) []fileindex.Entry {
	t.Helper()
	var out []fileindex.Entry
	err := Walk(context.Background(), opts, func(e *fileindex.Entry) error {
		out = append(out, *e)
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	return out
}

func paths(es []fileindex.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Path)
	}
	return out
}

func mustWrite(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	// os.Chmod would drop setuid, setgid and sticky given as raw bits.
	if err := unix.Chmod(p, uint32(mode)); err != nil {
		t.Fatal(err)
	}
}

func mustDo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func blocksOf(t testing.TB, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	mustDo(t, unix.Lstat(p, &st))
	return st.Blocks
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, os.ErrNotExist)
}

// TestWalkSizes: the count's walk (a full backup's progress) finds the same
// entries as the backup's, types and sizes and hard links alike, and reads
// none of what it would throw away: attributes, link targets, owner names.
func TestWalkSizes(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "d", "file")
	mustWrite(t, f, []byte("hello"), 0o644)
	mustDo(t, unix.Setxattr(f, "user.note", []byte("v1"), 0))
	mustDo(t, os.Link(f, filepath.Join(dir, "link")))
	mustDo(t, os.Symlink("../somewhere", filepath.Join(dir, "sl")))
	mustWrite(t, filepath.Join(dir, "d", "e", "big"), make([]byte, 70000), 0o600)
	mustWrite(t, filepath.Join(dir, "skip", "x"), []byte("x"), 0o600)
	opts := WalkOptions{Paths: []string{dir}, Excludes: []string{"skip"}}
	want := walkAll(t, opts)
	var got []fileindex.Entry
	mustDo(t, walkSizes(context.Background(), opts, func(e *fileindex.Entry) error {
		got = append(got, *e)
		return nil
	}))
	if len(got) != len(want) {
		t.Fatalf("walkSizes found %d entries, Walk %d", len(got), len(want))
	}
	for i, e := range got {
		w := want[i]
		if e.Path != w.Path || e.Type != w.Type || e.Size != w.Size || e.Target != "" && e.Target != w.Target {
			t.Errorf("walkSizes %s %v %d, Walk %s %v %d", e.Path, e.Type, e.Size, w.Path, w.Type, w.Size)
		}
		if e.Xattrs != nil || e.User != "" || e.Group != "" || e.Type == fileindex.TypeSymlink && e.Target != "" {
			t.Errorf("walkSizes read what it throws away: %+v", e)
		}
	}
}

// A walked entry's xattrs are read by its name in the directory the walk
// holds, with listxattrat or, on kernels without it, through the
// directory's /proc magic link: its full path may be longer than PATH_MAX.
func TestWalkReadsXattrsBeyondPathMax(t *testing.T) {
	forXattrCalls(t, func(t *testing.T) {
		root := t.TempDir()
		dirfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		mustDo(t, err)
		deep := root
		for i := range 30 { // 30 × 200 bytes: past PATH_MAX (4096)
			name := fmt.Sprintf("%02d%s", i, strings.Repeat("d", 198))
			mustDo(t, unix.Mkdirat(dirfd, name, 0o755))
			next, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			mustDo(t, err)
			unix.Close(dirfd)
			dirfd, deep = next, deep+"/"+name
		}
		fd, err := unix.Openat(dirfd, "file", unix.O_CREAT|unix.O_WRONLY, 0o644)
		mustDo(t, err)
		mustDo(t, unix.Fsetxattr(fd, "user.deep", []byte("v1"), 0))
		unix.Close(fd)
		unix.Close(dirfd)
		var warned []string
		es := walkAll(t, WalkOptions{Paths: []string{root}, Warn: func(p string, err error) {
			warned = append(warned, err.Error())
		}})
		if len(warned) != 0 {
			t.Fatalf("warnings: %q", warned)
		}
		last := es[len(es)-1]
		if last.Path != deep+"/file" || len(last.Xattrs) != 1 || string(last.Xattrs[0].Value) != "v1" {
			t.Fatalf("deepest entry (path of %d bytes): %d xattrs %+v", len(last.Path), len(last.Xattrs), last.Xattrs)
		}
	})
}

// forXattrCalls runs test with the xattr calls of this kernel
// (listxattrat, getxattrat) and with the /proc fallback of older ones.
func forXattrCalls(t *testing.T, test func(*testing.T)) {
	t.Run("xattrat", func(t *testing.T) {
		test(t)
		if xattrAtMissing.Load() {
			t.Log("this kernel (before 6.13, or a seccomp filter) refuses listxattrat/getxattrat: only the fallback ran")
		}
	})
	t.Run("proc-fallback", func(t *testing.T) {
		was := xattrAtMissing.Load()
		xattrAtMissing.Store(true)
		t.Cleanup(func() { xattrAtMissing.Store(was) })
		test(t)
	})
}

// A directory swapped for a symlink once the walk holds it open leads the
// xattr reads of its entries nowhere else: a user who owns a directory in
// the tree cannot make the backup (run as root) read another file's
// attributes, trusted.* and security.* ones included, under their file's
// name.
func TestWalkXattrsFollowNoSwappedDirectory(t *testing.T) {
	needRoot(t, "only root sets trusted.* attributes, and only root's reads of them matter")
	forXattrCalls(t, func(t *testing.T) {
		root := t.TempDir()
		mustWrite(t, filepath.Join(root, "tree", "u", "f"), []byte("mine"), 0o644)
		mustDo(t, unix.Setxattr(filepath.Join(root, "tree", "u", "f"), "user.who", []byte("user"), 0))
		mustWrite(t, filepath.Join(root, "secret", "f"), []byte("root's"), 0o600)
		mustDo(t, unix.Setxattr(filepath.Join(root, "secret", "f"), "trusted.who", []byte("root"), 0))
		u := filepath.Join(root, "tree", "u")
		es := walkAllVisiting(t, WalkOptions{Paths: []string{filepath.Join(root, "tree")}}, func(e *fileindex.Entry) {
			if e.Path == u { // the walk holds u open: swap it now
				mustDo(t, os.Rename(u, u+".moved"))
				mustDo(t, os.Symlink(filepath.Join(root, "secret"), u))
			}
		})
		for _, e := range es {
			if e.Path != u+"/f" {
				continue
			}
			if len(e.Xattrs) != 1 || e.Xattrs[0].Name != "user.who" || string(e.Xattrs[0].Value) != "user" {
				t.Fatalf("%s has the xattrs %+v: read through the swapped directory", e.Path, e.Xattrs)
			}
			return
		}
		t.Fatalf("no entry %s/f in %q", u, paths(es))
	})
}

func walkAllVisiting(t testing.TB, opts WalkOptions, visit func(*fileindex.Entry)) []fileindex.Entry {
	t.Helper()
	var out []fileindex.Entry
	err := Walk(context.Background(), opts, func(e *fileindex.Entry) error {
		visit(e)
		out = append(out, *e)
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	return out
}

// The *xattrat calls stop for good when the kernel lacks them, or when a
// seccomp filter refuses them (EPERM) and the older call works; an EPERM
// both calls give is the file's, and the newer calls go on.
func TestXattrAtRefusals(t *testing.T) {
	was := xattrAtMissing.Load()
	t.Cleanup(func() { xattrAtMissing.Store(was) })
	for _, c := range []struct {
		at, fallback error
		stop         bool
	}{
		{unix.ENOSYS, nil, true},
		{unix.ENOSYS, unix.EPERM, true},
		{unix.EPERM, nil, true},
		{unix.EPERM, unix.ENODATA, true},
		{unix.EPERM, unix.EPERM, false},
	} {
		xattrAtMissing.Store(false)
		if !xattrAtRefused(c.at) {
			t.Fatalf("%v is not taken for a refusal of the call", c.at)
		}
		noteXattrAtRefused(c.at, c.fallback)
		if xattrAtMissing.Load() != c.stop {
			t.Fatalf("%v then %v: the *xattrat calls stop %v, want %v", c.at, c.fallback, xattrAtMissing.Load(), c.stop)
		}
	}
	if xattrAtRefused(unix.ENOENT) || xattrAtRefused(nil) {
		t.Fatal("ENOENT or success taken for a refusal of the call")
	}
}
