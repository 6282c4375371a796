package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/poll"
)

func changesOf(t *testing.T, opts WalkOptions, base []fileindex.Entry) map[string]Change {
	t.Helper()
	got := map[string]Change{}
	var order []string
	err := Changes(context.Background(), opts, fileindex.SliceIterator(base), func(e *fileindex.Entry, c Change) error {
		if c == ChangeDeleted && (e.Type != fileindex.TypeDeleted || e.Size != 0 || e.MTime != 0) {
			t.Fatalf("tombstone %+v", e)
		}
		if _, dup := got[e.Path]; dup {
			t.Fatalf("%s reported twice", e.Path)
		}
		got[e.Path] = c
		order = append(order, e.Path)
		return nil
	})
	if err != nil {
		t.Fatalf("changes: %v", err)
	}
	if !sort.SliceIsSorted(order, func(i, j int) bool { return fileindex.Compare(order[i], order[j]) < 0 }) {
		t.Fatalf("changes out of index order: %q", order)
	}
	return got
}

func TestChanges(t *testing.T) {
	dir := t.TempDir()
	r := filepath.Join(dir, "r")
	for _, f := range []string{"same", "edit", "gone", "old/a", "old/b/c", "typechange", "cache/x", "meta"} {
		mustWrite(t, filepath.Join(r, f), []byte("v1 "+f), 0o644)
	}
	mustWrite(t, filepath.Join(dir, "outside"), []byte("x"), 0o644)
	opts := WalkOptions{Paths: []string{r}}
	base := walkAll(t, opts)
	// The base also holds paths the walk never looks at: outside the
	// backup's paths, and (as from an older config) excluded.
	base = append([]fileindex.Entry{{Path: dir, Type: fileindex.TypeDir}}, base...)
	base = append(base, fileindex.Entry{Path: filepath.Join(dir, "zz-outside"), Type: fileindex.TypeFile})
	if got := changesOf(t, opts, base); len(got) != len(base)-2 {
		t.Fatalf("nothing changed, yet %v", got)
	} else {
		for p, c := range got {
			if c != ChangeUnchanged {
				t.Fatalf("nothing changed, yet %s is %s", p, c)
			}
		}
	}

	waitPastCTime(t, dir, base) // on a coarse clock, edits could keep the base's ctime
	mustWrite(t, filepath.Join(r, "edit"), []byte("v2, longer"), 0o644)
	mustDo(t, os.Remove(filepath.Join(r, "gone")))
	mustDo(t, os.RemoveAll(filepath.Join(r, "old")))
	mustDo(t, os.Remove(filepath.Join(r, "typechange")))
	mustWrite(t, filepath.Join(r, "typechange", "inside"), []byte("now a dir"), 0o644)
	mustWrite(t, filepath.Join(r, "new"), []byte("new"), 0o644)
	mustDo(t, os.Chmod(filepath.Join(r, "meta"), 0o600))
	mustDo(t, os.Remove(filepath.Join(r, "cache", "x")))

	got := changesOf(t, WalkOptions{Paths: []string{r}, Excludes: []string{"cache"}}, base)
	p := func(s string) string { return filepath.Join(r, s) }
	want := map[string]Change{
		r:                      ChangeModified, // its entries changed
		p("edit"):              ChangeModified,
		p("gone"):              ChangeDeleted,
		p("meta"):              ChangeModified, // mode
		p("new"):               ChangeNew,
		p("old"):               ChangeDeleted,
		p("old/a"):             ChangeDeleted,
		p("old/b"):             ChangeDeleted,
		p("old/b/c"):           ChangeDeleted,
		p("same"):              ChangeUnchanged,
		p("typechange"):        ChangeModified,
		p("typechange/inside"): ChangeNew,
		// cache and cache/x are excluded now: not walked, not deleted.
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got %v\nwant %v", got, want)
	}
}

// The walk ends before the base does: what the base holds past the last
// walked path (files and a whole tree that sort after it) is gone, and each
// gets its tombstone; a base path past the walk that is out of scope does not.
func TestChangesTombstonesTheBaseAfterTheWalk(t *testing.T) {
	dir := t.TempDir()
	r := filepath.Join(dir, "r")
	for _, f := range []string{"a", "m", "y/1", "z/deep/f", "zz"} {
		mustWrite(t, filepath.Join(r, f), []byte(f), 0o644)
	}
	opts := WalkOptions{Paths: []string{r}}
	base := walkAll(t, opts)
	base = append(base, fileindex.Entry{Path: filepath.Join(dir, "s-outside"), Type: fileindex.TypeFile})
	for _, f := range []string{"m", "y", "z", "zz"} {
		mustDo(t, os.RemoveAll(filepath.Join(r, f)))
	}
	got := changesOf(t, opts, base)
	p := func(s string) string { return filepath.Join(r, s) }
	want := map[string]Change{
		r:             ChangeModified, // its entries went
		p("a"):        ChangeUnchanged,
		p("m"):        ChangeDeleted,
		p("y"):        ChangeDeleted,
		p("y/1"):      ChangeDeleted,
		p("z"):        ChangeDeleted,
		p("z/deep"):   ChangeDeleted,
		p("z/deep/f"): ChangeDeleted,
		p("zz"):       ChangeDeleted,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got %v\nwant %v", got, want)
	}

	// A walk that finds nothing at all below the root still ends with
	// the whole base's tail.
	mustDo(t, os.Remove(p("a")))
	got = changesOf(t, opts, base)
	if len(got) != len(want) || got[p("a")] != ChangeDeleted || got[p("zz")] != ChangeDeleted {
		t.Fatalf("emptied root: %v", got)
	}
}

// waitPastCTime waits until a file changed now in dir gets a ctime later
// than every ctime in base, so that a change made next cannot keep the
// base's ctime on a filesystem whose clock ticks coarsely.
func waitPastCTime(t *testing.T, dir string, base []fileindex.Entry) {
	t.Helper()
	var last int64
	for _, e := range base {
		last = max(last, e.CTime)
	}
	probe := filepath.Join(dir, ".ctime-probe")
	poll.Until(t, 5*time.Second, func() error {
		mustWrite(t, probe, nil, 0o644)
		var st unix.Stat_t
		mustDo(t, unix.Lstat(probe, &st))
		if ct := st.Ctim.Nano(); ct <= last {
			return fmt.Errorf("the filesystem's clock is still at %d, the base's newest ctime is %d", ct, last)
		}
		return nil
	})
	mustDo(t, os.Remove(probe))
}

func TestChangedFields(t *testing.T) {
	base := fileindex.Entry{Path: "/a", Type: fileindex.TypeFile, Size: 1, MTime: 2, CTime: 3, Mode: 0o644, UID: 1, GID: 1, Inode: 9}
	if Changed(&base, &base) {
		t.Fatal("equal entries changed")
	}
	atime := base
	atime.ATime, atime.User, atime.NLink = 77, "someone", 3
	if Changed(&atime, &base) {
		t.Fatal("atime, names or link count alone make a change")
	}
	for _, mod := range []func(e *fileindex.Entry){
		func(e *fileindex.Entry) { e.Type = fileindex.TypeDir },
		func(e *fileindex.Entry) { e.Size++ },
		func(e *fileindex.Entry) { e.MTime++ },
		func(e *fileindex.Entry) { e.CTime++ },
		func(e *fileindex.Entry) { e.Mode = 0o4644 },
		func(e *fileindex.Entry) { e.UID++ },
		func(e *fileindex.Entry) { e.GID++ },
		func(e *fileindex.Entry) { e.Inode++ },
		func(e *fileindex.Entry) { e.Type, e.Target = fileindex.TypeHardlink, "/other" },
	} {
		e := base
		mod(&e)
		if !Changed(&e, &base) {
			t.Fatalf("%+v not changed from %+v", e, base)
		}
	}
}

func TestChangesRefusesBaseOutOfOrder(t *testing.T) {
	dir := t.TempDir()
	base := []fileindex.Entry{{Path: dir + "/b", Type: fileindex.TypeFile}, {Path: dir + "/a", Type: fileindex.TypeFile}}
	err := Changes(context.Background(), WalkOptions{Paths: []string{dir}}, fileindex.SliceIterator(base), func(*fileindex.Entry, Change) error { return nil })
	var oe *fileindex.OrderError
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v, want an OrderError", err)
	}
}

func TestChangesWithoutBaseIsFull(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), nil, 0o644)
	n := 0
	err := Changes(context.Background(), WalkOptions{Paths: []string{dir}}, nil, func(e *fileindex.Entry, c Change) error {
		if c != ChangeNew {
			t.Fatalf("%s: %s", e.Path, c)
		}
		n++
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("err %v, %d entries", err, n)
	}
}

// What the walk does not enter (another filesystem's mount point here, an
// unreadable directory alike) is not taken for deleted.
func TestChangesKeepsWhatTheWalkPruned(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	mustDo(t, os.Mkdir(mnt, 0o755))
	mountTmpfs(t, mnt)
	mustWrite(t, filepath.Join(mnt, "inside"), []byte("x"), 0o644)
	base := walkAll(t, WalkOptions{Paths: []string{dir}})
	got := changesOf(t, WalkOptions{Paths: []string{dir}, OneFileSystem: true}, base)
	if want := map[string]Change{dir: ChangeUnchanged, mnt: ChangeUnchanged}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
