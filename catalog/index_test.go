package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
)

func paths(entries []TreeEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s@%d", e.Path, e.Backup))
	}
	return out
}

func TestTreeOverChainWithTombstones(t *testing.T) {
	c := newTestCatalog(t)
	c.setup()
	full := c.backup(LevelFull, []fileindex.Entry{
		dir("/srv"), dir("/srv/a"), file("/srv/a/x", 1), file("/srv/a/y", 1), file("/srv/b", 1),
	})
	inc1 := c.backup(LevelIncremental, []fileindex.Entry{
		file("/srv/a/x", 2), deleted("/srv/b"), file("/srv/c", 2),
	})
	inc2 := c.backup(LevelIncremental, []fileindex.Entry{
		deleted("/srv/a/y"), file("/srv/b", 3),
	})

	tree := func(id uint64) []string {
		t.Helper()
		it, chain, err := c.s.Tree(id)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for {
			e, ok := it.Next()
			if !ok {
				break
			}
			out = append(out, fmt.Sprintf("%s@%d", e.Path, chain[it.Layer()].ID))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	s := func(p string, b uint64) string { return fmt.Sprintf("%s@%d", p, b) }
	if got, want := tree(full), []string{s("/srv", full), s("/srv/a", full), s("/srv/a/x", full), s("/srv/a/y", full), s("/srv/b", full)}; !slices.Equal(got, want) {
		t.Errorf("tree at the full:\n got %v\nwant %v", got, want)
	}
	if got, want := tree(inc1), []string{s("/srv", full), s("/srv/a", full), s("/srv/a/x", inc1), s("/srv/a/y", full), s("/srv/c", inc1)}; !slices.Equal(got, want) {
		t.Errorf("tree at incremental 1:\n got %v\nwant %v", got, want)
	}
	want2 := []string{s("/srv", full), s("/srv/a", full), s("/srv/a/x", inc1), s("/srv/b", inc2), s("/srv/c", inc1)}
	if got := tree(inc2); !slices.Equal(got, want2) {
		t.Errorf("tree at incremental 2:\n got %v\nwant %v", got, want2)
	}

	ls, err := c.s.ListDir(inc2, "/srv")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := paths(ls), []string{s("/srv/a", full), s("/srv/b", inc2), s("/srv/c", inc1)}; !slices.Equal(got, want) {
		t.Errorf("ListDir /srv at incremental 2: %v, want %v", got, want)
	}
	ls, _ = c.s.ListDir(inc1, "/srv/a/")
	if got, want := paths(ls), []string{s("/srv/a/x", inc1), s("/srv/a/y", full)}; !slices.Equal(got, want) {
		t.Errorf("ListDir /srv/a at incremental 1: %v, want %v", got, want)
	}
	if ls, _ := c.s.ListDir(inc2, "/"); len(ls) != 1 || ls[0].Path != "/srv" {
		t.Errorf("ListDir / = %v", paths(ls))
	}

	found, err := c.s.Lookup(inc2, []string{"/srv/a/x", "/srv/a/y", "/srv/b", "/srv/nope", "/srv/c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 3 || found["/srv/a/x"].Backup != inc1 || found["/srv/a/x"].Size != 2 || found["/srv/b"].Backup != inc2 || found["/srv/c"].Backup != inc1 {
		t.Fatalf("Lookup at incremental 2: %+v", found)
	}
	if found, _ := c.s.Lookup(inc1, []string{"/srv/b", "/srv/a/y"}); len(found) != 1 || found["/srv/a/y"].Backup != full {
		t.Fatalf("Lookup at incremental 1: %+v", found)
	}
}

// bigTree is a backup's index of dirs×files files below /data, in index
// order, with the fields a real walk fills in.
func bigTree(dirs, files int) []fileindex.Entry {
	out := []fileindex.Entry{dir("/data")}
	for d := 0; d < dirs; d++ {
		dp := fmt.Sprintf("/data/d%03d", d)
		out = append(out, dir(dp))
		for f := 0; f < files; f++ {
			n := d*files + f
			h := sha256.Sum256(binary.AppendUvarint(nil, uint64(n)))
			out = append(out, fileindex.Entry{
				Path: fmt.Sprintf("%s/file-%05d.dat", dp, f), Type: fileindex.TypeFile, Mode: 0o644,
				UID: 1000, GID: 1000, User: "app", Group: "app", Size: int64(n%65536) * 37,
				MTime: 1_760_000_000_000_000_000 + int64(n)*1_000_003, ATime: 1_760_000_000_000_000_000, CTime: 1_760_000_000_000_000_000 + int64(n)*1_000_003,
				Dev: 2049, Inode: uint64(100000 + n), NLink: 1, Hash: h[:],
				Loc: fileindex.Location{Seq: uint64(n / 8), Off: uint64(n) * 40000, InBlock: uint32(n%8) * 4096, EndSeq: uint64(n / 8)},
			})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return fileindex.Compare(out[i].Path, out[j].Path) < 0 })
	return out
}

func TestLookupAndListDirSkipSegments(t *testing.T) {
	c := newTestCatalog(t)
	c.noSync()
	c.setup()
	// 50,051 entries in small segments: many segments, few entries,
	// so that the race detector's run stays short.
	const dirs = 50
	entries := bigTree(dirs, 1000)
	id := c.startBackup(LevelFull, "/data")
	segs := c.writeIndex(id, entries, 8<<10)
	if segs < 500 {
		t.Fatalf("only %d segments; the test wants many", segs)
	}
	b, _ := c.s.Backup(id)
	if b.Entries != int64(len(entries)) || b.Segments != segs {
		t.Fatalf("backup holds %d entries in %d segments, want %d in %d", b.Entries, b.Segments, len(entries), segs)
	}

	c.s.decodes.Store(0)
	want := []string{"/data/d000/file-00000.dat", "/data/d023/file-00456.dat", "/data/d049/file-00999.dat", "/data/d030", "/data"}
	found, err := c.s.Lookup(id, append(slices.Clone(want), "/data/d050", "/data/d023/file-99999.dat", "/elsewhere"))
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(want) {
		t.Fatalf("Lookup found %d paths, want %d", len(found), len(want))
	}
	for _, p := range want {
		e, ok := found[p]
		if !ok || e.Backup != id {
			t.Fatalf("Lookup missed %s", p)
		}
	}
	if e := found["/data/d023/file-00456.dat"]; e.Inode != 100000+23456 || e.Size != int64(23456%65536)*37 {
		t.Fatalf("Lookup returned the wrong entry: %+v", e)
	}
	if n := c.s.decodes.Load(); n > int64(len(want)+2) {
		t.Fatalf("Lookup of %d paths decoded %d of %d segments", len(want)+3, n, segs)
	}
	t.Logf("Lookup of %d paths decoded %d of %d segments", len(want)+3, c.s.decodes.Load(), segs)

	c.s.decodes.Store(0)
	ls, err := c.s.ListDir(id, "/data/d023")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1000 || ls[0].Path != "/data/d023/file-00000.dat" || ls[999].Path != "/data/d023/file-00999.dat" {
		t.Fatalf("ListDir: %d entries", len(ls))
	}
	perDir := (segs + dirs - 1) / dirs
	if n := c.s.decodes.Load(); n > int64(perDir+2) {
		t.Fatalf("ListDir of one directory decoded %d of %d segments (about %d hold it)", n, segs, perDir)
	}
	t.Logf("%d entries in %d segments; ListDir decoded %d", len(entries), segs, c.s.decodes.Load())

	c.s.decodes.Store(0)
	ls, _ = c.s.ListDir(id, "/data")
	if len(ls) != dirs || ls[0].Path != "/data/d000" || ls[0].Type != fileindex.TypeDir {
		t.Fatalf("ListDir /data: %d entries", len(ls))
	}
	if ls, _ := c.s.ListDir(id, "/data/d023/file-00456.dat"); len(ls) != 1 || ls[0].Path != "/data/d023/file-00456.dat" {
		t.Fatalf("ListDir of a file: %v, want the file", paths(ls))
	}

	// The whole tree reads back in order.
	it, _, err := c.s.Tree(id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fileindex.Collect(it)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(entries) || got[777].Path != entries[777].Path || got[len(got)-1].Path != entries[len(entries)-1].Path {
		t.Fatalf("tree: %d entries, want %d", len(got), len(entries))
	}
}

// A reader that resumes mid-tree starts at the chunk that holds its place,
// not at the segments before it, and yields nothing before it.
func TestIndexFromSkipsWhatComesBefore(t *testing.T) {
	c := newTestCatalog(t)
	c.noSync()
	c.setup()
	entries := bigTree(20, 1000)
	id := c.startBackup(LevelFull, "/data")
	c.writeIndex(id, entries, 0)
	for _, from := range []string{"", "/", "/data/d005/file-00500.dat", "/data/d005/file-00500.dat-not-there", "/data/d019/file-00999.dat", "/data/d999"} {
		c.s.decodes.Store(0)
		got, err := fileindex.Collect(c.s.IndexFrom(id, from))
		if err != nil {
			t.Fatal(err)
		}
		i := sort.Search(len(entries), func(i int) bool { return fileindex.Compare(entries[i].Path, from) >= 0 })
		rest := entries[i:]
		if len(got) != len(rest) {
			t.Fatalf("from %q: %d entries, want the %d from there on", from, len(got), len(rest))
		}
		for k := range rest {
			if got[k].Path != rest[k].Path {
				t.Fatalf("from %q: entry %d is %q, want %q", from, k, got[k].Path, rest[k].Path)
			}
		}
		// About 100 entries a chunk.
		if want := len(rest)/80 + 2; c.s.decodes.Load() > int64(want) {
			t.Fatalf("from %q: decoded %d chunks for %d entries", from, c.s.decodes.Load(), len(rest))
		}
	}
}
