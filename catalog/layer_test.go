package catalog

import (
	"math/rand/v2"
	"path"
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// seekChain writes a chain of the benchmark's shape, small, in segments of
// several chunks each, and returns the backups and their indexes.
func seekChain(t *testing.T, c *testCatalog) ([]uint64, [][]fileindex.Entry) {
	t.Helper()
	indexes := scaleIndexes(scaleShape{users: 3, projects: 3, srcs: 6, files: 20, incrementals: 3})
	sc := &scaleCatalog{c: c}
	c.must(&Command{Op: OpRegisterClient, Client: &Client{Name: "host00"}})
	var ids []uint64
	for gen, idx := range indexes {
		segs, _ := segmentsOf(t, idx, 48<<10)
		level := LevelIncremental
		if gen == 0 {
			level = LevelFull
			if len(segs) < 3 {
				t.Fatalf("%d segments; the test wants several", len(segs))
			}
		}
		ids = append(ids, sc.runBackup("host00", level, segs))
	}
	return ids, indexes
}

// Every read that seeks (Tree, ListTree, Lookup, Select) answers what
// reading the whole merged tree answers, at every backup of a chain.
func TestSeekingReadsAreTheMergedTree(t *testing.T) {
	c := newTestCatalog(t)
	c.noSync()
	c.setup()
	ids, indexes := seekChain(t, c)
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 1; n <= len(ids); n++ {
		var layers []fileindex.Iterator
		for _, idx := range indexes[:n] {
			layers = append(layers, fileindex.SliceIterator(idx))
		}
		want, err := fileindex.Collect(fileindex.Merge(layers...))
		if err != nil {
			t.Fatal(err)
		}
		backup := ids[n-1]
		it, chain, err := c.s.Tree(backup)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fileindex.Collect(it)
		if err != nil || !slices.EqualFunc(got, want, sameEntry) {
			t.Fatalf("tree at backup %d: %d entries (%v), want %d", backup, len(got), err, len(want))
		}

		var dirs []string
		for _, e := range want {
			if e.Type == fileindex.TypeDir {
				dirs = append(dirs, e.Path)
			}
		}
		for _, dir := range append(dirs, "/", "/home/u01/p02/s03/f07.dat") {
			var direct, below []fileindex.Entry
			for _, e := range want {
				switch {
				case e.Path == dir && e.Type != fileindex.TypeDir:
					direct = append(direct, e)
				case e.Path != dir && fileindex.Within(e.Path, dir) && path.Dir(e.Path) == dir:
					direct = append(direct, e)
				}
				if fileindex.Within(e.Path, dir) {
					below = append(below, e)
				}
			}
			for _, recursive := range []bool{false, true} {
				wantLs := direct
				if recursive {
					wantLs = below
				}
				after := ""
				if len(wantLs) > 2 && rng.IntN(2) == 0 {
					k := rng.IntN(len(wantLs))
					after, wantLs = wantLs[k].Path, wantLs[k+1:]
				}
				var gotLs []fileindex.Entry
				found, err := c.s.ListTree(chain, dir, after, recursive, func(e *TreeEntry) bool {
					gotLs = append(gotLs, e.Entry)
					return true
				})
				if err != nil || !found || !slices.EqualFunc(gotLs, wantLs, sameEntry) {
					t.Fatalf("ls %s (recursive %v, after %q) at backup %d: found %v, %d entries (%v), want %d",
						dir, recursive, after, backup, found, len(gotLs), err, len(wantLs))
				}
			}
		}
		if found, _ := c.s.ListTree(chain, "/home/u09", "", false, func(*TreeEntry) bool { return true }); found {
			t.Fatal("ls of a directory the tree does not hold found it")
		}

		var ask []string
		for range 40 {
			idx := indexes[rng.IntN(n)] // a tombstone or a later version, some of them
			ask = append(ask, want[rng.IntN(len(want))].Path, idx[rng.IntN(len(idx))].Path)
		}
		ask = append(ask, "/home/u01/p01/s01/zz", "/", "/zzz")
		found, err := c.s.Lookup(backup, ask)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ask {
			k, ok := slices.BinarySearchFunc(want, p, func(e fileindex.Entry, p string) int { return fileindex.Compare(e.Path, p) })
			if got, in := found[p]; in != ok || (ok && !sameEntry(got.Entry, want[k])) {
				t.Fatalf("Lookup %s at backup %d: %v %v, want %v", p, backup, in, got.Path, ok)
			}
		}

		roots := []string{ask[0], "/home/u02/p00"}
		points := []string{"/home", "/home/u01", ask[1], "/nothing"}
		var wantSel []fileindex.Entry
		for _, e := range want {
			if fileindex.WithinAny(roots)(&e) || slices.Contains(points, e.Path) {
				wantSel = append(wantSel, e)
			}
		}
		gotSel, err := fileindex.Collect(fileindex.Select(c.s.TreeOf(chain), roots, points))
		if err != nil || !slices.EqualFunc(gotSel, wantSel, sameEntry) {
			t.Fatalf("select at backup %d: %d entries (%v), want %d", backup, len(gotSel), err, len(wantSel))
		}
	}
}

func sameEntry(a, b fileindex.Entry) bool {
	return a.Path == b.Path && a.Type == b.Type && a.Size == b.Size && a.MTime == b.MTime && a.Loc == b.Loc
}

// A catalog of format 4 stores segments whole: read-only it reads them as
// they are, and opened for writing it is upgraded to chunks that read the
// same, with the resend of a segment still recognised.
func TestFormat4SegmentsUpgradeToChunks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "catalog.db")
	c := openTestCatalog(t, file)
	s := c.s
	c.setup()
	ids, indexes := seekChain(t, c)
	wantTree := dump(t, s)
	// Back to format 4: every segment whole, as that format stored it.
	segs, _ := segmentsOf(t, indexes[0], 48<<10)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, id := range ids {
			b, _ := s.Backup(id)
			var built []fileindex.Segment
			if id == ids[0] {
				built = segs
			} else {
				built, _ = segmentsOf(t, indexes[slices.Index(ids, id)], 48<<10)
			}
			for no := 0; no < b.Segments; no++ {
				k := segKey(id, no)
				if err := tx.Bucket(bSegData).DeleteBucket(k); err != nil {
					return err
				}
				bk, err := tx.Bucket(bSegData).CreateBucket(k)
				if err != nil {
					return err
				}
				if err := bk.Put(segDataKey, built[no].Data); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bMeta).Put(keyFormat, u64(4))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	ro, err := OpenReadOnly(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(t, ro); got != wantTree {
		t.Fatal("a catalog of format 4 reads otherwise read-only")
	}
	if n := wholeSegments(t, ro); n == 0 {
		t.Fatal("the read-only open changed the catalog")
	}
	ro.Close()

	s, err = Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := wholeSegments(t, s); n != 0 {
		t.Fatalf("%d segments still whole after the upgrade", n)
	}
	if got := dump(t, s); got != wantTree {
		t.Fatal("the upgraded catalog reads otherwise")
	}
	var format uint64
	s.view(func(tx *bbolt.Tx) error { format = getU64(tx.Bucket(bMeta), keyFormat); return nil })
	if format != storeFormat {
		t.Fatalf("format %d after the upgrade", format)
	}
	if ok := s.view(func(tx *bbolt.Tx) error {
		if !segDataEqual(tx, segKey(ids[0], 1), segs[1].Data) || segDataEqual(tx, segKey(ids[0], 1), segs[0].Data) {
			t.Fatal("an upgraded segment does not tell its own bytes from another's")
		}
		return nil
	}); ok != nil {
		t.Fatal(ok)
	}
}

func wholeSegments(t *testing.T, s *Store) int {
	n := 0
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bSegData).ForEachBucket(func(k []byte) error {
			if tx.Bucket(bSegData).Bucket(k).Get(segDataKey) != nil {
				n++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
