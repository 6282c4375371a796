package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
)

// damageSegment overwrites, in place in the catalog's file, the encoded
// segment data with a segment of the same length whose header claims 2^30
// entries: what a bad node or a few flipped bits can leave in catalog.db
// (bbolt keeps no checksum of values). A decoder that trusted the count
// allocated for a billion entries and died of out of memory.
func damageSegment(t *testing.T, path string, data []byte) {
	t.Helper()
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(file, data)
	if at < 0 || bytes.Index(file[at+1:], data) >= 0 {
		t.Fatalf("the segment is not in %s exactly once", path)
	}
	bad := []byte("CRNX\x01\x00") // version 1, not compressed
	bad = binary.AppendUvarint(bad, 1<<30)
	for n := 1; ; n++ { // the raw length covers the rest, as a valid segment's does
		rest := len(data) - len(bad) - n
		if len(binary.AppendUvarint(nil, uint64(rest))) == n {
			bad = binary.AppendUvarint(bad, uint64(rest))
			break
		}
	}
	bad = append(bad, bytes.Repeat([]byte{0}, len(data)-len(bad))...)
	copy(file[at:], bad)
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedSegmentInTheFileNamesTheBackup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCatalog{t: t, s: s, clock: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	c.setup()
	entries := []fileindex.Entry{dir("/srv"), file("/srv/a", 1), file("/srv/b", 2)}
	good := c.backup(LevelFull, entries)
	damaged := c.backup(LevelFull, []fileindex.Entry{dir("/srv"), file("/srv/c", 3), file("/srv/d", 4)})
	data, ok, err := s.Segments(damaged)()
	if err != nil || !ok {
		t.Fatalf("segment 0 of backup %d: %v", damaged, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damageSegment(t, path, data)

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := func(what string, err error) {
		t.Helper()
		var de *IndexDamagedError
		if !errors.As(err, &de) || de.Backup != damaged || de.Segment != 0 || !errors.Is(err, fileindex.ErrCorrupt) {
			t.Fatalf("%s: %v, want the index of backup %d damaged", what, err, damaged)
		}
		if msg := "index of backup " + strconv.FormatUint(damaged, 10) + " is damaged"; !strings.Contains(err.Error(), msg) {
			t.Fatalf("%s: %q does not say %q", what, err, msg)
		}
	}
	it, _, err := s.Tree(damaged)
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := it.Next(); ok; _, ok = it.Next() {
	}
	want("Tree", it.Err())
	_, err = s.ListDir(damaged, "/srv")
	want("ListDir", err)
	_, err = s.Lookup(damaged, []string{"/srv/c"})
	want("Lookup", err)
	idx := s.Index(damaged)
	if _, ok := idx.Next(); ok {
		t.Fatal("Index yielded an entry of a damaged segment")
	}
	want("Index", idx.Err())
	from := s.IndexFrom(damaged, "/srv/d")
	for _, ok := from.Next(); ok; _, ok = from.Next() {
	}
	want("IndexFrom", from.Err())

	// The other backup reads as before.
	got, err := s.ListDir(good, "/srv")
	if err != nil || len(got) != 2 || got[1].Path != "/srv/b" {
		t.Fatalf("ListDir of the sound backup: %v, %v", got, err)
	}
}
