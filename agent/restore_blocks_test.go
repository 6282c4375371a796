package agent

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/assemble/assembletest"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/loopfs"
	"github.com/cairnbackup/cairn/internal/poll"
	"github.com/cairnbackup/cairn/media/volume"
)

// TestRestoreAssemblesBlocks: a large file whose version kept a block of
// an earlier session (twice) is assembled whichever comes first, that
// block's read or the entry's, and checked against its digest: a block
// that does not come, or comes wrong, loses the file, named.
func TestRestoreAssemblesBlocks(t *testing.T) {
	f := assembletest.Sample()
	want := f.Content
	block := func(data string) []byte {
		b := volume.AppendBlockStart(nil, &volume.BlockStart{Path: f.Entry.Path, Len: uint64(len(f.Kept)), At: f.At})
		return append(b, f.BlockData([]byte(data))...)
	}
	entry := f.EntryRecords()
	for _, c := range []struct {
		name    string
		frames  [][]byte
		damaged bool
	}{
		{"block first", [][]byte{block("abcd"), entry}, false},
		{"entry first", [][]byte{entry, block("abcd")}, false},
		{"block missing", [][]byte{entry}, true},
		{"block wrong", [][]byte{block("abcX"), entry}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "to")
			r, err := NewRestorer(RestoreOptions{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range c.frames {
				if err := r.Records(f); err != nil {
					t.Fatal(err)
				}
			}
			st, err := r.Finish()
			if err != nil {
				t.Fatal(err)
			}
			got, rerr := os.ReadFile(filepath.Join(root, "db"))
			if c.damaged {
				if st.DamagedCount != 1 || rerr == nil {
					t.Fatalf("stats %+v; file read %v", st, rerr)
				}
				left, _ := os.ReadDir(root)
				if len(left) != 0 {
					t.Fatalf("left behind: %v", left)
				}
				return
			}
			if rerr != nil || string(got) != string(want) || st.Files != 1 || st.DamagedCount != 0 {
				t.Fatalf("restored %q (%v), stats %+v", got, rerr, st)
			}
			if fi, _ := os.Stat(filepath.Join(root, "db")); fi.Mode().Perm() != 0o640 {
				t.Fatalf("mode %v", fi.Mode())
			}
		})
	}
}

// The temporary file a large file is assembled in waits in the target
// directory between the reads of two sessions, when the restore holds as
// many unnamed ones as it may (maxHeld 0 here). Whoever can write there
// may remove it or put something else under its name; the restore then
// writes nothing into what took its place (another user's file would
// hold the content, readable by them), refuses that file and goes on.
func TestRestoreRefusesATemporaryFileReplacedBetweenReads(t *testing.T) {
	f := assembletest.Sample()
	block := append(volume.AppendBlockStart(nil, &volume.BlockStart{Path: f.Entry.Path, Len: uint64(len(f.Kept)), At: f.At}), f.BlockData([]byte("abcd"))...)
	entry := f.EntryRecords()
	for _, order := range []string{"block first", "entry first"} {
		for _, swap := range []struct {
			name string
			do   func(t *testing.T, tmp string)
		}{
			{"another user's file", func(t *testing.T, tmp string) {
				// Often on the inode number the removal freed: the
				// owner tells it from the restore's.
				mustDo(t, os.Remove(tmp))
				mustDo(t, os.WriteFile(tmp, []byte("mine"), 0o644))
				mustDo(t, os.Chown(tmp, 65534, 65534))
			}},
			{"a second name", func(t *testing.T, tmp string) {
				mustDo(t, os.Link(tmp, tmp+".kept"))
			}},
			{"a symlink", func(t *testing.T, tmp string) {
				mustDo(t, os.Remove(tmp))
				mustDo(t, os.Symlink("/etc/passwd", tmp))
			}},
			{"removed", func(t *testing.T, tmp string) { mustDo(t, os.Remove(tmp)) }},
			{"a directory", func(t *testing.T, tmp string) {
				mustDo(t, os.Remove(tmp))
				mustDo(t, os.Mkdir(tmp, 0o755))
			}},
		} {
			t.Run(order+"/"+swap.name, func(t *testing.T) {
				root := filepath.Join(t.TempDir(), "to")
				r, err := NewRestorer(RestoreOptions{Root: root})
				mustDo(t, err)
				r.maxHeld = 0
				first, second := inOrder(order, block, entry)
				mustDo(t, r.Records(first))
				r.wk.settle()
				tmp := waitingTemp(t, root)
				var before os.FileInfo
				swap.do(t, tmp)
				before, _ = os.Lstat(tmp)
				mustDo(t, r.Records(second))
				st, err := r.Finish()
				mustDo(t, err)
				if st.Refused != 1 || st.Files != 0 || st.WarningCount != 1 || !strings.Contains(st.Warnings[0].Err, "temporary file was removed or replaced") {
					t.Fatalf("stats %+v", st)
				}
				if _, err := os.Lstat(filepath.Join(root, "db")); err == nil {
					t.Fatal("the file was named")
				}
				if before != nil {
					after, err := os.Lstat(tmp)
					if err != nil || after.Size() != before.Size() || after.Mode() != before.Mode() {
						t.Fatalf("what took the temporary file's name changed: %v, %v (was %v)", after, err, before)
					}
				}
			})
		}
	}
}

// An assembled file is checked (read back whole and hashed) and named on a
// file worker, as every other file is: the stream goes on meanwhile. On
// Record's goroutine the check held up the next entry, so a chain's changed
// large files were read back one after another while the workers waited.
func TestRestoreChecksAnAssembledFileBesideTheStream(t *testing.T) {
	f := assembletest.Sample()
	block, _, later := keptAndNext(f)

	release := make(chan struct{})
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	beforePlace = func(p string) {
		if p == f.Entry.Path {
			<-release
		}
	}
	t.Cleanup(func() { beforePlace = nil })

	root := filepath.Join(t.TempDir(), "to")
	r, err := NewRestorer(RestoreOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Records(block); err != nil {
		t.Fatal(err)
	}
	// The entry's FileEnd completes the file, and the next entry follows.
	errc := make(chan error, 1)
	go func() {
		err := r.Records(f.EntryRecords())
		if err == nil {
			err = r.Records(later)
		}
		errc <- err
	}()
	poll.Until(t, 10*time.Second, func() error {
		if len(errc) == 0 {
			return errors.New("the stream waits for the check of the assembled file")
		}
		return nil
	})
	unblock()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	st, err := r.Finish()
	if err != nil {
		t.Fatal(err)
	}
	got, rerr := os.ReadFile(filepath.Join(root, "db"))
	if rerr != nil || string(got) != string(f.Content) || st.Files != 2 || st.DamagedCount != 0 {
		t.Fatalf("restored %q (%v), stats %+v", got, rerr, st)
	}
}

// A large file waiting for its blocks from later reads keeps its directory
// empty while it is unnamed; another user who may write the parent can
// remove that directory. That entry is lost, saying so (here its blocks
// never come either), and the restore goes on with the others.
func TestRestoreGoesOnWhenAWaitingFilesDirectoryIsRemoved(t *testing.T) {
	eachTempKind(t, func(t *testing.T) {
		f := assembletest.Sample()
		e := f.Entry
		e.Path = "/d/db"
		sum := sha256.Sum256(f.Content)
		first := headerRecord(fileindex.Entry{Path: "/d", Type: fileindex.TypeDir, Mode: 0o755})
		first = volume.AppendFileEnd(first, 0, nil)
		first = append(first, headerRecord(e)...)
		first = volume.AppendDataRecord(first, 4, f.Content[4:8])
		end := volume.AppendFileEndBlocks(nil, volume.EndOK, sum[:], f.List)
		next := fileindex.Entry{Path: "/next", Type: fileindex.TypeFile, Size: 2, Mode: 0o600}
		nextSum := sha256.Sum256([]byte("hi"))
		end = append(end, headerRecord(next)...)
		end = volume.AppendDataRecord(end, 0, []byte("hi"))
		end = volume.AppendFileEnd(end, volume.EndOK, nextSum[:])

		root := filepath.Join(t.TempDir(), "to")
		r, err := NewRestorer(RestoreOptions{Root: root})
		mustDo(t, err)
		mustDo(t, r.Records(first))
		r.wk.settle()
		tmps, _ := filepath.Glob(filepath.Join(root, "d", ".cairn-restore-*"))
		for _, p := range tmps {
			mustDo(t, os.Remove(p))
		}
		mustDo(t, os.Remove(filepath.Join(root, "d")))
		mustDo(t, r.Records(end))
		st, err := r.Finish()
		mustDo(t, err)
		if b, err := os.ReadFile(filepath.Join(root, "next")); err != nil || string(b) != "hi" {
			t.Fatalf("the entry after it: %q, %v", b, err)
		}
		// Unnamed and held, its blocks never came; named, its temporary
		// file is gone and its blocks never came.
		if st.Files != 1 || st.Refused != 0 || st.DamagedCount != 1 || st.Damaged[0].Path != "/d/db" {
			t.Fatalf("stats %+v: want /next restored and /d/db named as not restored", st)
		}
	})
}

// waitingTemp is the one temporary file in dir: a file waiting for its
// blocks.
func waitingTemp(t *testing.T, dir string) string {
	t.Helper()
	tmps, err := filepath.Glob(filepath.Join(dir, ".cairn-restore-*"))
	mustDo(t, err)
	if len(tmps) != 1 {
		t.Fatalf("temporary files %q, want the one waiting for its blocks", tmps)
	}
	return tmps[0]
}

// Files waiting for blocks of later reads wait unnamed, held open, so
// that an agent killed in the middle leaves nothing under a name in the
// target; past the restore's bound on them (maxHeld) the next waits under
// a temporary name. Each is restored whole whichever comes first, its
// entry or its block, and no descriptor is left held at the end, also for
// a file whose block (or entry) never came.
func TestFilesWaitingForBlocksLeaveNoName(t *testing.T) {
	sample := func(path string) (entry, block []byte, want []byte) {
		f := assembletest.Sample()
		f.Entry.Path = path
		block = append(volume.AppendBlockStart(nil, &volume.BlockStart{Path: path, Len: uint64(len(f.Kept)), At: f.At}), f.BlockData([]byte("abcd"))...)
		return f.EntryRecords(), block, f.Content
	}
	for _, order := range []string{"block first", "entry first"} {
		t.Run(order, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "to")
			r, err := NewRestorer(RestoreOptions{Root: root})
			mustDo(t, err)
			if r.maxHeld < 2 {
				t.Fatalf("the restore may hold %d files waiting for blocks", r.maxHeld)
			}
			r.maxHeld = 1
			var firsts, seconds [][]byte
			want := map[string][]byte{}
			for _, name := range []string{"db1", "db2", "gone"} {
				entry, block, content := sample("/" + name)
				first, second := block, entry
				if order == "entry first" {
					first, second = entry, block
				}
				firsts = append(firsts, first)
				if name != "gone" {
					seconds = append(seconds, second)
					want[name] = content
				}
			}
			for _, f := range firsts {
				mustDo(t, r.Records(f))
			}
			r.wk.settle()
			// The first held, the other two named, private.
			tmps, err := filepath.Glob(filepath.Join(root, ".cairn-restore-*"))
			mustDo(t, err)
			if len(tmps) != 2 || r.held != 1 {
				t.Fatalf("with one file held: temporary files %q, %d held", tmps, r.held)
			}
			for _, f := range seconds {
				mustDo(t, r.Records(f))
			}
			st, err := r.Finish()
			mustDo(t, err)
			// Its entry named what it lost; a block alone names nothing.
			lost := order == "entry first"
			if st.Files != 2 || (st.DamagedCount == 1) != lost || (lost && st.Damaged[0].Path != "/gone") {
				t.Fatalf("stats %+v", st)
			}
			if _, err := os.Lstat(filepath.Join(root, "gone")); err == nil {
				t.Fatal("the file whose block never came was named")
			}
			for name, content := range want {
				if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(got) != string(content) {
					t.Fatalf("%s restored %q (%v)", name, got, err)
				}
			}
			if left := filesUnderWay(t, root); len(left) != 0 || r.held != 0 {
				t.Fatalf("after the restore: under way %q, %d held", left, r.held)
			}

			// With room for them all, none has a name while it waits.
			root2 := filepath.Join(t.TempDir(), "to")
			r2, err := NewRestorer(RestoreOptions{Root: root2})
			mustDo(t, err)
			for _, f := range firsts {
				mustDo(t, r2.Records(f))
			}
			r2.wk.settle()
			if ents, _ := os.ReadDir(root2); len(ents) != 0 || r2.held != 3 {
				t.Fatalf("files waiting for their blocks: %v in the target, %d held", ents, r2.held)
			}
			for _, f := range seconds {
				mustDo(t, r2.Records(f))
			}
			if st, err := r2.Finish(); err != nil || st.Files != 2 || r2.held != 0 {
				t.Fatalf("the second restore: %+v, %v, %d held", st, err, r2.held)
			}
		})
	}
}

// A large file assembled from blocks of several sessions is read back and
// checked once its last block is in, so it is not hashed as it comes as
// well: when its kept blocks came first, it is known to be assembled as its
// entry begins; when its entry comes first, the hole before the entry's own
// blocks says so (contentHash.gap). In a chain restore those holes are most
// of each changed large file, and were hashed as zeros.
func TestRestoreHashesAnAssemblyOnlyOnce(t *testing.T) {
	f := assembletest.Sample()
	block, next, later := keptAndNext(f)

	var mu sync.Mutex
	hashed := map[string]int64{}
	hashing = func(p string, n int64) {
		mu.Lock()
		hashed[p] += n
		mu.Unlock()
	}
	t.Cleanup(func() { hashing = nil })

	for _, order := range []string{"block first", "entry first"} {
		clear(hashed)
		root := filepath.Join(t.TempDir(), "to")
		r, err := NewRestorer(RestoreOptions{Root: root})
		mustDo(t, err)
		first, second := inOrder(order, block, f.EntryRecords())
		for _, b := range [][]byte{first, second, later} {
			mustDo(t, r.Records(b))
		}
		st, err := r.Finish()
		mustDo(t, err)
		got, rerr := os.ReadFile(filepath.Join(root, "db"))
		if rerr != nil || string(got) != string(f.Content) || st.Files != 2 || st.DamagedCount != 0 {
			t.Fatalf("%s: restored %q (%v), stats %+v", order, got, rerr, st)
		}
		mu.Lock()
		if hashed[f.Entry.Path] != 0 || hashed[next.Path] != 2 {
			t.Fatalf("%s: hashed as written: %v; want none of %s and all of %s", order, hashed, f.Entry.Path, next.Path)
		}
		mu.Unlock()
	}
}

// A file hashed whole whose records leave a hole (as a backup before the
// sparse digest sent a file with holes) is read back to be checked: it
// restores, and a content that does not match its digest loses it.
func TestRestoreReadsBackAFileWithAHole(t *testing.T) {
	content := append(make([]byte, 70000), []byte("tail")...)
	for _, c := range []struct {
		name    string
		sum     [32]byte
		damaged bool
	}{
		{"right", sha256.Sum256(content), false},
		{"wrong", sha256.Sum256([]byte("other")), true},
	} {
		e := fileindex.Entry{Path: "/sparse", Type: fileindex.TypeFile, Size: int64(len(content)), Mode: 0o644}
		b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &e))
		b = volume.AppendDataRecord(b, 70000, []byte("tail"))
		b = volume.AppendFileEnd(b, volume.EndOK, c.sum[:])
		root := filepath.Join(t.TempDir(), "to")
		r, err := NewRestorer(RestoreOptions{Root: root})
		mustDo(t, err)
		mustDo(t, r.Records(b))
		st, err := r.Finish()
		mustDo(t, err)
		got, rerr := os.ReadFile(filepath.Join(root, "sparse"))
		if c.damaged {
			if st.DamagedCount != 1 || rerr == nil {
				t.Fatalf("%s: stats %+v, file read %v", c.name, st, rerr)
			}
			continue
		}
		if rerr != nil || !bytes.Equal(got, content) || st.Files != 1 || st.DamagedCount != 0 {
			t.Fatalf("%s: %d bytes (%v), stats %+v", c.name, len(got), rerr, st)
		}
	}
}

// A large file that waits for its blocks under a name (the restore holds
// as many unnamed ones as it may, or the file system makes none) cannot
// wait in an append-only directory of a forced target: the name could be
// neither renamed into place nor removed. It is refused, saying why and
// what to do, whichever comes first, and nothing is left there.
func TestAssemblyRefusedInAnAppendOnlyDirectory(t *testing.T) {
	f := assembletest.Sample()
	block := append(volume.AppendBlockStart(nil, &volume.BlockStart{Path: f.Entry.Path, Len: uint64(len(f.Kept)), At: f.At}), f.BlockData(f.Kept)...)
	entry := f.EntryRecords()
	fs := loopfs.Ext4(t, 64<<20)
	for _, order := range []string{"block first", "entry first"} {
		eachTempKind(t, func(t *testing.T) {
			root := filepath.Join(fs, strings.ReplaceAll(order, " ", "-")+fmt.Sprint(preferUnnamedFiles))
			mustDo(t, os.Mkdir(root, 0o755))
			chattr(t, root, fileindex.FlagAppend) // the file system goes with the test
			r, err := NewRestorer(RestoreOptions{Root: root, Force: true})
			mustDo(t, err)
			r.maxHeld = 0
			first, second := inOrder(order, block, entry)
			mustDo(t, r.Records(first))
			mustDo(t, r.Records(second))
			st, err := r.Finish()
			mustDo(t, err)
			if st.Refused == 0 || st.Files != 0 {
				t.Fatalf("%s: stats %+v", order, st)
			}
			for _, w := range st.Warnings {
				if w.Path == f.Entry.Path && !strings.Contains(w.Err, "append only (chattr +a)") {
					t.Fatalf("%s: warning %+v does not say why or what to do", order, w)
				}
			}
			if left, _ := os.ReadDir(root); len(left) != 0 {
				t.Fatalf("%s: left in the append-only directory: %v", order, left)
			}
		})
	}
}

// keptAndNext are the read of f's kept block, and the records of a small
// file /next that follows f in the stream.
func keptAndNext(f assembletest.File) (block []byte, next fileindex.Entry, later []byte) {
	block = volume.AppendBlockStart(nil, &volume.BlockStart{Path: f.Entry.Path, Len: uint64(len(f.Kept)), At: f.At})
	block = append(block, f.BlockData(f.Kept)...)
	next = fileindex.Entry{Path: "/next", Type: fileindex.TypeFile, Size: 2, Mode: 0o600}
	nextSum := sha256.Sum256([]byte("hi"))
	later = volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &next))
	later = volume.AppendDataRecord(later, 0, []byte("hi"))
	later = volume.AppendFileEnd(later, volume.EndOK, nextSum[:])
	return block, next, later
}

// inOrder gives a kept block's read and its file's entry in the order
// named: "block first" or "entry first".
func inOrder(order string, block, entry []byte) (first, second []byte) {
	if order == "entry first" {
		return entry, block
	}
	return block, entry
}
